"""The local twin behaves as the cloud stack does where the router can tell:

- S3 notifications of a versioned inbox carry ``versionId`` (and ``sequencer``) as S3's do, so an object
  overwritten before it was routed is routed version by version instead of staying in the inbox;
- a failed message comes back after template.yaml's visibility timeout on the twin's scaled clock, and the
  dead-letter queue takes it after the template's ``maxReceiveCount`` receives, not after a fixed delay.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any
from urllib.parse import quote_plus

import pytest

from breedfilter.template import StackTemplate
from breedfilter.twin import local_aws
from breedfilter.twin.local_aws import inbox_queue_settings, s3_notifications_like_s3
from breedfilter.twin.local_twin import LocalTwin
from breedfilter.twin.predictor import ModelFailure
from breedfilter.twin.sqs_poller import SqsEventSource, twin_time_scale
from breedfilter.twin.stand_in_model import ColourModel
from tests.images import image_bytes

KEY = "uploads/my dog +1 Ünï 狗.jpg"  # a space, a plus, unicode: moto percent-encodes it (quote_plus)


def queued_records(harness: Any) -> list[dict[str, Any]]:
    """Every S3 record waiting in the inbox queue, in the order S3 sent them (the messages are left alone)."""
    records = []
    for _ in range(5):
        messages = harness.sqs.receive_message(
            QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages", [])
        records += [r for m in messages for r in json.loads(m["Body"])["Records"]]
    return sorted(records, key=lambda r: int(r["s3"]["object"]["sequencer"], 16))


# -- notifications ------------------------------------------------------------------------------------------


def test_versioned_inbox_notifications_name_each_version_as_s3_does(harness):
    puts = [harness.put(KEY, image_bytes(colour)) for colour in ("red", "blue")]  # an overwrite
    records = queued_records(harness)
    assert len(records) == 2
    versions = harness.s3.list_object_versions(Bucket=harness.inbox, Prefix="uploads/")["Versions"]
    by_id = {v["VersionId"]: v for v in versions}
    for put, record in zip(puts, records, strict=True):
        obj = record["s3"]["object"]
        assert obj["versionId"] == put["VersionId"] and obj["versionId"] in by_id
        assert obj["eTag"] == by_id[obj["versionId"]]["ETag"].strip('"') == put["ETag"].strip('"')
        assert obj["key"] == quote_plus(KEY)  # moto's encoding, untouched
        assert obj["size"] == by_id[obj["versionId"]]["Size"]
        assert len(obj["sequencer"]) == 18 and int(obj["sequencer"], 16) > 0
        assert record["eventName"] == "ObjectCreated:Put"
    assert records[0]["s3"]["object"]["versionId"] != records[1]["s3"]["object"]["versionId"]
    assert int(records[0]["s3"]["object"]["sequencer"], 16) < int(records[1]["s3"]["object"]["sequencer"], 16)


def test_unversioned_inbox_notifications_have_no_version_id(make_harness):
    harness = make_harness(versioned_inbox=False)
    harness.put(KEY, image_bytes("red"))
    (record,) = queued_records(harness)
    assert "versionId" not in record["s3"]["object"]  # as S3: the router takes the ETag path
    assert set(record["s3"]["object"]) == {"key", "size", "eTag", "sequencer"}


def test_the_patch_nests_and_gives_moto_its_own_builder_back():
    from moto.s3 import notifications

    before = notifications._get_s3_event
    with s3_notifications_like_s3():
        patched = notifications._get_s3_event
        assert getattr(patched, "breedfilter_patch", False)
        with s3_notifications_like_s3():
            assert notifications._get_s3_event is patched  # not wrapped twice
        assert notifications._get_s3_event is patched
    assert notifications._get_s3_event is before


def test_a_moto_without_the_event_builder_is_a_clear_error(monkeypatch):
    from moto.s3 import notifications

    monkeypatch.setattr(local_aws, "_patch_users", 0)
    monkeypatch.delattr(notifications, "_get_s3_event")
    with pytest.raises(RuntimeError, match="_get_s3_event"):
        local_aws.install_s3_notification_patch()


def test_an_overwritten_photo_is_routed_version_by_version_on_the_twin():
    """Both versions are routed and the inbox ends empty (before: the older one stayed, 50 of 50 times)."""
    with LocalTwin(ColourModel(), time_scale=0) as twin:
        s3 = twin.client("s3")
        puts = [s3.put_object(Bucket=twin.names.inbox_bucket, Key=KEY, Body=image_bytes(c)) for c in ("red", "blue")]
        report = twin.drain(max_seconds=60)
        snapshot = twin.snapshot()
        versions = s3.list_object_versions(Bucket=twin.names.inbox_bucket)
    assert report.failed == 0
    assert snapshot.inbox == [] and versions.get("Versions", []) == [] and snapshot.queue_depth == 0
    assert snapshot.dlq_depth == 0
    by_version = {item["source_version_id"]: item for item in snapshot.items}
    assert set(by_version) == {put["VersionId"] for put in puts}  # one item per version
    assert [by_version[p["VersionId"]]["top_label"] for p in puts] == ["red", "blue"]
    # sorted key names of a reused key are the router's business: only that each item's copy exists
    assert {item["destination_key"] for item in snapshot.items} <= set(snapshot.sorted)


# -- the scaled clock ---------------------------------------------------------------------------------------


class Outage:
    """The colour model behind an endpoint that answers 503 until ``up_at`` (time.monotonic), or, with
    ``failures``, to its first ``failures`` calls (an outage measured in receives: no race with a slow start)."""

    def __init__(self, failures: int | None = None) -> None:
        self.model = ColourModel()
        self.up_at = float("inf")
        self.failures = failures

    @property
    def identity(self) -> dict[str, str]:
        return self.model.identity

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
        if self.failures is not None:
            self.failures -= 1
            if self.failures >= 0:
                raise ModelFailure("endpoint down", status=503)
        elif time.monotonic() < self.up_at:
            raise ModelFailure("endpoint down", status=503)
        return self.model(body, content_type)


def record_receives(twin: LocalTwin) -> list[tuple[float, int]]:
    """Wrap the twin's handler: (when, ApproximateReceiveCount) for each S3 record it is given."""
    assert twin.source is not None
    seen: list[tuple[float, int]] = []
    handler = twin.source.handler

    def recording(event: dict[str, Any], context: Any) -> Any:
        for record in event["Records"]:
            seen.append((time.monotonic(), int(record["attributes"]["ApproximateReceiveCount"])))
        return handler(event, context)

    twin.source.handler = recording
    return seen


FAST_FAILURE = {"ENDPOINT_MAX_ATTEMPTS": "1", "ENDPOINT_TIMEOUT_SECONDS": "2"}  # one call per receive
SCALE = 0.002  # 390 s -> 0.78 s


def test_the_twin_reads_the_queue_settings_from_the_template():
    settings = inbox_queue_settings(StackTemplate.load())
    with LocalTwin(ColourModel(), time_scale=SCALE) as twin:
        assert twin.stack is not None and twin.source is not None
        assert (twin.stack.visibility_timeout, twin.stack.max_receive_count) == (
            settings["visibility_timeout"],
            settings["max_receive_count"],
        )
        attributes = twin.client("sqs").get_queue_attributes(QueueUrl=twin.stack.queue_url, AttributeNames=["All"])
        assert attributes["Attributes"]["VisibilityTimeout"] == str(settings["visibility_timeout"])
        assert json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == settings["max_receive_count"]
        assert twin.source.visibility_timeout == settings["visibility_timeout"]
        assert twin.source.retry_after_seconds == pytest.approx(settings["visibility_timeout"] * SCALE)


def test_a_long_outage_sends_the_message_to_the_dlq_after_max_receive_count_scaled_timeouts():
    endpoint = Outage()
    with LocalTwin(endpoint, time_scale=SCALE, router_overrides=FAST_FAILURE) as twin:
        assert twin.stack is not None and twin.source is not None
        receives = record_receives(twin)
        twin.start_polling(wait_seconds=1)  # live, as `breedfilter local up` routes
        twin.drop("uploads/dog.jpg", image_bytes("red"))
        window = twin.stack.max_receive_count * twin.source.retry_after_seconds
        deadline = time.monotonic() + window + 20
        while twin.snapshot().dlq_depth == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        twin.stop_polling()
        snapshot = twin.snapshot()
        retry_after = twin.source.retry_after_seconds
        max_receives = twin.stack.max_receive_count
    assert snapshot.dlq_depth == 1 and quote_plus("uploads/dog.jpg") in snapshot.dlq_bodies[0]
    assert snapshot.inbox == ["uploads/dog.jpg"] and snapshot.items == [] and snapshot.queue_depth == 0
    assert [count for _, count in receives] == list(range(1, max_receives + 1))  # exactly maxReceiveCount
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(receives)]
    for gap in gaps:  # never back before one scaled visibility timeout (how much later depends on the machine)
        assert gap >= retry_after - 0.05, (gaps, retry_after)


def test_an_outage_shorter_than_the_window_is_ridden_out_and_the_dlq_stays_empty():
    endpoint = Outage(failures=2)  # down for the first two receives, back for the third
    with LocalTwin(endpoint, time_scale=SCALE, router_overrides=FAST_FAILURE) as twin:
        assert twin.source is not None and twin.stack is not None
        receives = record_receives(twin)
        retry_after = twin.source.retry_after_seconds
        twin.drop("uploads/dog.jpg", image_bytes("red"))
        report = twin.drain(max_seconds=30)
        snapshot = twin.snapshot()
    assert [count for _, count in receives] == [1, 2, 3]
    assert report.failed == 2 and report.succeeded == 1
    assert snapshot.dlq_depth == 0 and snapshot.inbox == [] and snapshot.queue_depth == 0
    assert [(item["source_key"], item["status"], item["label"]) for item in snapshot.items] == [
        ("uploads/dog.jpg", "SORTED", "red")
    ]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(receives)]
    assert all(gap >= retry_after - 0.05 for gap in gaps), (gaps, retry_after)  # never back early


def test_a_failed_message_comes_back_even_if_nobody_releases_it(local_aws):
    """SQS takes whole seconds: the poller also sets the scaled remainder, rounded up, on the queue."""
    local_aws.reset()
    stack = local_aws.provision(max_receive_count=3)
    sqs = local_aws.client("sqs")
    source = SqsEventSource(sqs, stack.queue_url, lambda event, context: 1 / 0, time_scale=1 / 390)  # 1 s
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{}")
    assert source.poll_once().failed == 1
    assert source.next_release_in() == pytest.approx(1.0, abs=0.2)
    source._releases.clear()  # the poller forgets it (it stopped, say)
    assert sqs.receive_message(QueueUrl=stack.queue_url).get("Messages", []) == []
    time.sleep(1.2)
    (again,) = sqs.receive_message(QueueUrl=stack.queue_url, AttributeNames=["All"])["Messages"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


@pytest.mark.parametrize(
    ("value", "environment", "expected"),
    [(None, None, 0.01), (None, "0.5", 0.5), (0.2, "0.5", 0.2), (0, None, 0.0), ("1", None, 1.0)],
)
def test_the_time_scale_comes_from_the_argument_then_the_environment(monkeypatch, value, environment, expected):
    if environment is None:
        monkeypatch.delenv("BREEDFILTER_TWIN_TIME_SCALE", raising=False)
    else:
        monkeypatch.setenv("BREEDFILTER_TWIN_TIME_SCALE", environment)
    assert twin_time_scale(value) == expected


@pytest.mark.parametrize("bad", ["fast", "-1", "2", "nan"])
def test_a_bad_time_scale_is_refused(bad):
    with pytest.raises(ValueError, match=r"time scale|TIME_SCALE"):
        twin_time_scale(bad)


def test_live_polling_stops_promptly_while_a_release_is_pending():
    endpoint = Outage()
    with LocalTwin(endpoint, time_scale=0.05, router_overrides=FAST_FAILURE) as twin:  # 19.5 s
        receives = record_receives(twin)
        twin.start_polling(wait_seconds=1)
        twin.drop("uploads/dog.jpg", image_bytes("red"))
        while not receives:
            time.sleep(0.05)
        started = time.monotonic()
        stopper = threading.Thread(target=twin.stop_polling)
        stopper.start()
        stopper.join(timeout=10)
        assert not stopper.is_alive()
        assert time.monotonic() - started < twin.source.retry_after_seconds  # did not wait for the release
