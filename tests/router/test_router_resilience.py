"""At-least-once delivery, crashes and a misbehaving endpoint: every image still ends in exactly one place,
with one results item and an empty inbox; what cannot be routed stays in the inbox and its message in the DLQ.
"""

from __future__ import annotations

import json
import time

import pytest

from breedfilter.twin.lambda_runtime import LambdaContext
from routing.endpoint import EndpointClient
from routing.pipeline import Router
from routing.results import ResultsTable
from routing.settings import ConfigError
from tests.images import image_bytes
from tests.support import crash_once


def assert_converged(harness, key, label):
    assert harness.keys(harness.sorted) == [f"{label}/{key}"]
    assert len(harness.items()) == 1 and harness.item_for(key)["label"] == label
    assert harness.keys(harness.inbox) == [] and harness.inbox_versions() == []
    assert harness.queue_depth() == 0 and harness.queue_depth(harness.stack.dlq_url) == 0


@pytest.mark.parametrize(
    ("owner", "step"),
    [(Router, "copy"), (ResultsTable, "put_once"), (Router, "delete_inbox")],
    ids=["after-decision-before-copy", "after-copy-before-record", "after-record-before-delete"],
)
def test_crash_between_steps_then_redelivery_converges(harness, monkeypatch, owner, step):
    crashed = crash_once(monkeypatch, owner, step)
    harness.put("dog.jpg", image_bytes("red"))
    report = harness.drain()
    assert crashed == [step]
    assert report.failed == 1 and report.succeeded == 1  # failed once, redelivered, then done
    assert_converged(harness, "dog.jpg", "red")
    assert len(harness.model.calls) == 1  # the decision was cached: the redelivery did not ask again


def test_crash_after_delete_before_ack_is_a_harmless_redelivery(harness):
    harness.put("dog.jpg", image_bytes("blue"))
    message = harness.receive_one()  # delivered, processed, but never acknowledged
    event = {"Records": [harness.source._record(message)]}
    assert harness.invoke(event) == {"batchItemFailures": []}
    harness.sqs.change_message_visibility(
        QueueUrl=harness.stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    report = harness.drain()  # the redelivery
    assert report.succeeded == 1 and report.failed == 0
    assert_converged(harness, "dog.jpg", "blue")
    assert len(harness.model.calls) == 1


def test_duplicate_notifications_do_no_double_work(harness):
    harness.put("dup.jpg", image_bytes("green"))
    original = harness.receive_one()
    harness.send_body(original["Body"])
    harness.send_body(original["Body"])
    harness.sqs.change_message_visibility(  # the original is delivered too: three notifications, one object
        QueueUrl=harness.stack.queue_url, ReceiptHandle=original["ReceiptHandle"], VisibilityTimeout=0
    )
    report = harness.drain()
    assert report.failed == 0 and report.succeeded == 3
    assert_converged(harness, "dup.jpg", "green")
    assert len(harness.model.calls) == 1


def test_killed_mid_decision_resumes_once_the_invocation_would_have_ended(harness, monkeypatch):
    """A Lambda killed while the endpoint call runs leaves an INPROGRESS idempotency record. It expires with
    the invocation's remaining time (register_lambda_context), so the redelivery routes the image."""

    class Killed(BaseException):  # not an Exception: nothing in the handler gets to clean up
        pass

    original = EndpointClient.classify

    def killed(self, *args, **kwargs):
        raise Killed()

    monkeypatch.setattr(EndpointClient, "classify", killed)
    harness.put("slow.jpg", image_bytes("red"))
    message = harness.receive_one()
    event = {"Records": [harness.source._record(message)]}
    window = 4.0  # the killed invocation's timeout: its INPROGRESS record expires with it (wide: a busy machine)
    with pytest.raises(Killed):
        harness.handler(event, LambdaContext(timeout_seconds=window))
    monkeypatch.setattr(EndpointClient, "classify", original)

    # Still in progress: the record fails, and is reported as failed (the whole batch failed: no exception).
    message_id = event["Records"][0]["messageId"]
    assert harness.handler(event, LambdaContext(timeout_seconds=window)) == {
        "batchItemFailures": [{"itemIdentifier": message_id}]
    }
    time.sleep(window + 0.2)
    assert harness.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert harness.keys(harness.sorted) == ["red/slow.jpg"]


def test_throttled_endpoint_is_retried_within_the_call(harness):
    harness.model.script("throttle", "throttle")
    harness.put("busy.jpg", image_bytes("green"))
    report = harness.drain()
    assert report.failed == 0 and report.succeeded == 1
    assert len(harness.model.calls) == 3  # two throttled attempts, botocore's retries, then success
    assert_converged(harness, "busy.jpg", "green")


def test_endpoint_5xx_returns_the_message_then_succeeds(harness):
    harness.model.script("fail")
    harness.put("flaky.jpg", image_bytes("blue"))
    report = harness.drain()
    assert report.failed == 1 and report.succeeded == 1
    assert_converged(harness, "flaky.jpg", "blue")


def test_endpoint_timeout_returns_the_message_then_succeeds(make_harness):
    harness = make_harness(env={"ENDPOINT_TIMEOUT_SECONDS": "0.5", "ENDPOINT_MAX_ATTEMPTS": "1"})
    harness.model.script(("sleep", 1.5))
    harness.put("slow.jpg", image_bytes("red"))
    report = harness.drain()
    assert report.failed == 1 and report.succeeded == 1
    assert_converged(harness, "slow.jpg", "red")


def test_endpoint_that_never_recovers_leaves_image_in_inbox_and_message_in_dlq(harness):
    harness.model.script(*["fail"] * 10)
    harness.put("stuck.jpg", image_bytes("red"))
    report = harness.drain()
    assert report.failed == harness.stack.max_receive_count and report.succeeded == 0
    assert harness.keys(harness.inbox) == ["stuck.jpg"]  # nothing lost
    assert harness.items() == [] and harness.keys(harness.sorted) == []
    dead = harness.sqs.receive_message(QueueUrl=harness.stack.dlq_url).get("Messages", [])
    assert len(dead) == 1 and "stuck.jpg" in dead[0]["Body"]


def test_endpoint_4xx_is_a_rejection_not_a_retry(harness):
    harness.model.script("reject")
    harness.put("odd.jpg", image_bytes("red"))
    report = harness.drain()
    assert report.failed == 0
    item = harness.item_for("odd.jpg")
    assert item["status"] == "REJECTED" and item["reason"] == "model_rejected"
    assert item["detail"] == "scripted rejection"
    assert harness.keys(harness.sorted) == ["rejected/odd.jpg"]


def test_unknown_endpoint_is_retried_and_never_loses_the_image(make_harness):
    harness = make_harness(env={"ENDPOINT_NAME": "no-such-endpoint"})
    harness.put("dog.jpg", image_bytes("red"))
    harness.drain()
    assert harness.keys(harness.inbox) == ["dog.jpg"] and harness.items() == []
    assert harness.queue_depth(harness.stack.dlq_url) == 1


def test_missing_configuration_fails_the_whole_batch_loudly(harness, monkeypatch):
    harness.put("dog.jpg", image_bytes("red"))
    monkeypatch.delenv("SORTED_BUCKET")
    event = {"Records": [harness.source._record(harness.receive_one())]}
    with pytest.raises(ConfigError, match="SORTED_BUCKET"):
        harness.invoke(event)
    assert harness.keys(harness.inbox) == ["dog.jpg"]


def test_metrics_are_emitted_per_status_and_label(harness, capsys):
    harness.put("m.jpg", image_bytes("blue"))
    harness.put("n.jpg", b"not an image")
    harness.drain()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    routed = [b for b in blobs if "ImagesRouted" in b]
    assert {(b["status"], b["label"]) for b in routed} == {("SORTED", "blue"), ("REJECTED", "not_an_image")}
    assert any("EndpointLatency" in b for b in blobs)


def test_endpoint_attempts_are_capped_at_endpoint_max_attempts(harness):
    harness.model.script("throttle", "throttle", "throttle")  # ENDPOINT_MAX_ATTEMPTS=3 in the harness
    harness.put("busy.jpg", image_bytes("red"))
    first = harness.source.poll_once()
    assert first.failed == 1
    assert len(harness.model.calls) == 3  # three attempts in all, the first included
    harness.drain()
    assert_converged(harness, "busy.jpg", "red")


def test_records_that_could_outlast_the_invocation_return_to_the_queue(make_harness):
    """With 5 s left and a worst case of 3 x (1 s + 1 s) + 2 s = 8 s per image, only the batch's first record
    runs; the others fail fast (no Lambda timeout of the whole batch) and are routed on redelivery."""
    harness = make_harness(env={"ENDPOINT_TIMEOUT_SECONDS": "1", "ENDPOINT_MAX_ATTEMPTS": "3"})
    for colour in ("red", "green", "blue"):
        harness.put(f"{colour}.jpg", image_bytes(colour))
    messages = harness.sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 3
    event = {"Records": [harness.source._record(m) for m in messages]}
    response = harness.handler(event, LambdaContext(timeout_seconds=5.0))
    assert len(response["batchItemFailures"]) == 2
    assert len(harness.items()) == 1
    for message in messages:
        harness.sqs.change_message_visibility(
            QueueUrl=harness.stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    harness.drain()  # the poller's invocations have the template's 60 s
    assert harness.keys(harness.sorted) == ["blue/blue.jpg", "green/green.jpg", "red/red.jpg"]


def test_logs_are_json_with_the_message_as_correlation_id(harness, monkeypatch, request):
    import io

    import app

    # The Logger keeps the stream and level it was created with (whichever test imported app first).
    stream = io.StringIO()
    monkeypatch.setattr(app.logger.registered_handler, "stream", stream)
    level = app.logger.log_level
    app.logger.setLevel("INFO")
    request.addfinalizer(lambda: app.logger.setLevel(level))
    harness.put("logged.jpg", image_bytes("green"))
    message = harness.receive_one()
    harness.invoke({"Records": [harness.source._record(message)]})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    routed = [line for line in lines if line["message"] == "routed"]
    assert len(routed) == 1
    assert routed[0]["correlation_id"] == message["MessageId"]
    assert routed[0]["source"].startswith(f"s3://{harness.inbox}/logged.jpg#")
    assert routed[0]["destination"] == f"s3://{harness.sorted}/green/logged.jpg"
    assert routed[0]["function_request_id"]  # Lambda context injected
