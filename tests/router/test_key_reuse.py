"""A key reused for several uploads: every object version keeps its own sorted copy, item and bytes.

Cameras restart at ``IMG_0001.jpg``; phones re-upload the same photo. Each upload is its own source: the first
revision routed keeps the readable ``<label>/<key>``, later ones ``<label>/<dir>/<stem>~<rev><ext>``. Events are
built here, with or without ``versionId`` (real S3 sends it for a versioned bucket; moto's own notifications
lack it), and handed to the handler in the order a test chooses, duplicates included.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import quote_plus

import pytest

from routing import decision as decisions
from routing import pipeline
from routing.events import SourceObject
from routing.pipeline import Router
from routing.results import ResultsTable
from tests.images import image_bytes
from tests.support import crash_once

KEY = "camera/IMG_0001.jpg"
# Three different photos the stand-in model sorts under one label, so their names collide.
PHOTOS = [image_bytes("red", size=(48 + 2 * i, 40)) for i in range(3)]


def notification(harness, key: str, put: dict[str, Any], size: int, *, with_version: bool) -> dict[str, Any]:
    """The S3 notification of one upload, as S3 writes it (keys URL-encoded, ETag unquoted)."""
    obj: dict[str, Any] = {"key": quote_plus(key), "size": size, "eTag": put["ETag"].strip('"'), "sequencer": "0A"}
    if with_version:
        obj["versionId"] = put["VersionId"]
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": harness.inbox}, "object": obj},
            }
        ]
    }


class Uploads:
    """Puts to the inbox; ``deliver(i)`` hands upload i's notification to the handler as one SQS message."""

    def __init__(self, harness, *, with_version: bool):
        self.harness = harness
        self.with_version = with_version
        self.bodies: list[bytes] = []
        self.events: list[dict[str, Any]] = []
        self.version_ids: list[str | None] = []
        self._messages = itertools.count()

    def put(self, body: bytes, key: str = KEY) -> int:
        put = self.harness.put(key, body)
        self.bodies.append(body)
        self.version_ids.append(put.get("VersionId"))
        self.events.append(notification(self.harness, key, put, len(body), with_version=self.with_version))
        return len(self.bodies) - 1

    def deliver(self, index: int) -> dict[str, Any]:
        record = {
            "messageId": f"message-{next(self._messages)}",
            "receiptHandle": "handle",
            "body": json.dumps(self.events[index]),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:inbox",
            "awsRegion": "us-east-1",
        }
        return self.harness.invoke({"Records": [record]})

    def deliver_all(self, order: list[int]) -> None:
        for index in order:
            assert self.deliver(index) == {"batchItemFailures": []}

    def source(self, index: int, key: str = KEY) -> SourceObject:
        event_object = self.events[index]["Records"][0]["s3"]["object"]
        return SourceObject(
            bucket=self.harness.inbox, key=key, version_id=event_object.get("versionId"), etag=event_object["eTag"]
        )


def sorted_bytes(harness, key: str) -> bytes:
    return harness.s3.get_object(Bucket=harness.sorted, Key=key)["Body"].read()


def assert_one_copy_per_source(harness, uploads: Uploads, sources: list[int], key: str = KEY) -> None:
    """Each source (upload index) has exactly one item and one sorted copy holding its bytes; nothing else is in
    the sorted bucket, and the inbox holds no version and no delete marker."""
    items = harness.items()
    assert len(items) == len(sources), [i["pk"] for i in items]
    by_pk = {item["pk"]: item for item in items}
    copies = []
    for index in sources:
        source = uploads.source(index, key)
        item = by_pk[source.source_id]
        assert item["source_key"] == key
        if uploads.with_version:
            assert item["source_version_id"] == uploads.version_ids[index]
        destination = item["destination_key"]
        assert sorted_bytes(harness, destination) == uploads.bodies[index]
        meta = harness.s3.head_object(Bucket=harness.sorted, Key=destination)["Metadata"]
        assert meta["breedfilter-source-revision"] == source.revision
        assert meta["breedfilter-source-bucket"] == harness.inbox
        assert meta.get("breedfilter-source-version-id") == item.get("source_version_id")
        copies.append(destination)
    assert sorted(copies) == harness.keys(harness.sorted)  # one copy each, no stray ones
    readable = f"red/{key}"
    assert readable in copies  # the first revision routed keeps the readable name
    for index in sources:
        source = uploads.source(index, key)
        if by_pk[source.source_id]["destination_key"] != readable:
            assert by_pk[source.source_id]["destination_key"] == decisions.destination_key(
                "red", key, revision=source.revision
            )
    assert harness.inbox_versions() == []


@pytest.mark.parametrize("with_version", [True, False], ids=["versionId", "etag-only"])
@pytest.mark.parametrize("count", [2, 3])
def test_key_reused_spaced_keeps_every_photo(harness, with_version, count):
    uploads = Uploads(harness, with_version=with_version)
    for photo in PHOTOS[:count]:
        index = uploads.put(photo)
        uploads.deliver_all([index])  # routed before the next upload
        assert harness.inbox_versions() == []
    assert_one_copy_per_source(harness, uploads, list(range(count)))
    names = harness.keys(harness.sorted)
    assert "red/camera/IMG_0001.jpg" in names
    assert all(n == "red/camera/IMG_0001.jpg" or n.startswith("red/camera/IMG_0001~") for n in names)


ORDERS = {
    "in-order": [0, 1, 2],
    "reversed": [2, 1, 0],
    "middle-first-with-duplicates": [1, 1, 2, 0, 2, 1],
    "oldest-last-duplicated": [2, 0, 1, 0],
}


@pytest.mark.parametrize("with_version", [True, False], ids=["versionId", "etag-only"])
@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
def test_key_reused_three_times_before_routing_keeps_every_photo(harness, with_version, order):
    uploads = Uploads(harness, with_version=with_version)
    for photo in PHOTOS:
        uploads.put(photo)  # all three uploaded before the router sees any notification
    uploads.deliver_all(order)
    assert_one_copy_per_source(harness, uploads, [0, 1, 2])
    assert len(harness.model.calls) == 3  # duplicates found the item: one endpoint call per photo


@pytest.mark.parametrize("order", [[0, 1], [1, 0], [1, 0, 1]], ids=["in-order", "reversed", "with-duplicate"])
def test_key_reused_twice_before_routing_keeps_both_photos(harness, order):
    uploads = Uploads(harness, with_version=False)
    uploads.put(PHOTOS[0])
    uploads.put(PHOTOS[1])
    uploads.deliver_all(order)
    assert_one_copy_per_source(harness, uploads, [0, 1])


def test_identical_bytes_reuploaded_after_routing_with_version_ids_get_their_own_copy(harness):
    uploads = Uploads(harness, with_version=True)
    uploads.deliver_all([uploads.put(PHOTOS[0])])
    uploads.deliver_all([uploads.put(PHOTOS[0])])  # the same photo again: a new version, a new source
    assert_one_copy_per_source(harness, uploads, [0, 1])


def test_identical_bytes_reuploaded_after_routing_without_version_id_is_one_source(harness):
    """Without a version id the source is its bytes (ETag): the re-upload is the routed source again. The
    duplicate deletes it, the version the event names, and not the (already deleted) routed one."""
    uploads = Uploads(harness, with_version=False)
    uploads.deliver_all([uploads.put(PHOTOS[0])])
    uploads.put(PHOTOS[0])
    assert len(harness.inbox_versions()) == 1
    uploads.deliver_all([1, 1])
    assert harness.inbox_versions() == []  # nothing stuck in the inbox
    assert_one_copy_per_source(harness, uploads, [0])
    assert len(harness.model.calls) == 1


def test_identical_bytes_between_other_bytes_without_version_id(harness):
    """v0 and v2 hold the same photo, v1 another: deleting the copies of v0's bytes never touches v1, which
    becomes the key's current object again and is routed by its own event."""
    uploads = Uploads(harness, with_version=False)
    for photo in (PHOTOS[0], PHOTOS[1], PHOTOS[0]):
        uploads.put(photo)
    uploads.deliver(0)
    versions = harness.inbox_versions()
    assert [v["VersionId"] for v in versions] == [uploads.version_ids[1]]  # v0 and v2 deleted, v1 kept
    assert harness.s3.get_object(Bucket=harness.inbox, Key=KEY)["Body"].read() == PHOTOS[1]
    uploads.deliver_all([2, 1, 0])
    assert_one_copy_per_source(harness, uploads, [0, 1])


@pytest.mark.parametrize("with_version", [True, False], ids=["versionId", "etag-only"])
def test_key_reused_on_other_labels_keeps_readable_names(harness, with_version):
    uploads = Uploads(harness, with_version=with_version)
    uploads.put(image_bytes("red"))
    uploads.put(image_bytes("blue"))
    uploads.deliver_all([1, 0])
    assert harness.keys(harness.sorted) == ["blue/camera/IMG_0001.jpg", "red/camera/IMG_0001.jpg"]
    assert harness.inbox_versions() == []


def test_unversioned_inbox_key_reused_spaced_keeps_both_photos(make_harness):
    harness = make_harness(versioned_inbox=False)
    uploads = Uploads(harness, with_version=False)
    for photo in PHOTOS[:2]:
        uploads.deliver_all([uploads.put(photo)])
    assert_one_copy_per_source(harness, uploads, [0, 1])


def test_unversioned_overwrite_before_routing_routes_only_the_newest(make_harness):
    harness = make_harness(versioned_inbox=False)
    uploads = Uploads(harness, with_version=False)
    uploads.put(PHOTOS[0])
    uploads.put(PHOTOS[1])  # overwrites: the first photo is gone before the router runs
    uploads.deliver_all([0, 1, 0])
    assert [i["pk"] for i in harness.items()] == [uploads.source(1).source_id]
    assert sorted_bytes(harness, "red/camera/IMG_0001.jpg") == PHOTOS[1]
    assert harness.keys(harness.inbox) == []


# -- crashes with a reused key ------------------------------------------------------------------------


@pytest.mark.parametrize("with_version", [True, False], ids=["versionId", "etag-only"])
@pytest.mark.parametrize(
    ("owner", "step"),
    [(Router, "copy"), (Router, "copy_owner"), (ResultsTable, "put_once"), (Router, "delete_inbox")],
    ids=["before-copy", "after-412-before-head", "after-copy-before-record", "after-record-before-delete"],
)
def test_second_revision_crashing_anywhere_converges(harness, monkeypatch, with_version, owner, step):
    uploads = Uploads(harness, with_version=with_version)
    uploads.deliver_all([uploads.put(PHOTOS[0])])
    index = uploads.put(PHOTOS[1])
    crashed = crash_once(monkeypatch, owner, step)
    response = uploads.deliver(index)
    assert crashed == [step] and len(response["batchItemFailures"]) == 1
    uploads.deliver_all([index, index])  # the redelivery, and a duplicate
    assert_one_copy_per_source(harness, uploads, [0, 1])


@pytest.mark.parametrize("with_version", [True, False], ids=["versionId", "etag-only"])
def test_crash_after_claiming_the_readable_name_keeps_it_across_another_revision(harness, monkeypatch, with_version):
    """The first revision copies to the readable name and dies before recording; the second finds that copy
    (another source's) and takes its revision name; the first's redelivery recognises its own copy."""
    uploads = Uploads(harness, with_version=with_version)
    uploads.put(PHOTOS[0])
    uploads.put(PHOTOS[1])
    crash_once(monkeypatch, ResultsTable, "put_once")
    assert len(uploads.deliver(0)["batchItemFailures"]) == 1
    assert harness.keys(harness.sorted) == ["red/camera/IMG_0001.jpg"] and harness.items() == []
    uploads.deliver_all([1, 0])
    assert_one_copy_per_source(harness, uploads, [0, 1])
    first = next(i for i in harness.items() if i["pk"] == uploads.source(0).source_id)
    assert first["destination_key"] == "red/camera/IMG_0001.jpg"


def test_objects_too_big_for_one_copy_take_the_head_checked_path(harness, monkeypatch):
    """Over CopyObject's 5 GiB limit (always rejected, never read) the copy is a multipart one: not conditional,
    so the name is HEAD-checked first. Simulated with a tiny limit."""
    monkeypatch.setattr(pipeline, "SINGLE_COPY_LIMIT", 10)
    uploads = Uploads(harness, with_version=True)
    for photo in PHOTOS[:2]:
        uploads.deliver_all([uploads.put(photo)])
    uploads.deliver_all([0, 1])
    assert_one_copy_per_source(harness, uploads, [0, 1])


def test_a_name_crafted_to_collide_fails_loudly_instead_of_overwriting(harness):
    uploads = Uploads(harness, with_version=True)
    uploads.put(PHOTOS[0])
    second = uploads.put(PHOTOS[1])
    squatted = decisions.destination_key("red", KEY, revision=uploads.source(second).revision)
    harness.s3.put_object(Bucket=harness.sorted, Key=squatted, Body=b"someone else's")
    uploads.deliver_all([0])
    assert len(uploads.deliver(second)["batchItemFailures"]) == 1  # fails, retried, then the DLQ: never lost
    assert sorted_bytes(harness, squatted) == b"someone else's"
    assert [v["VersionId"] for v in harness.inbox_versions()] == [uploads.version_ids[second]]


def test_the_test_s3_honours_conditional_copies_as_s3_does(moto_s3):
    """moto 5.2.5 ignores them; breedfilter.twin.moto_s3_conditions (installed by conftest and LocalAws) does not."""
    from botocore.exceptions import ClientError

    moto_s3.create_bucket(Bucket="conditions")
    first = moto_s3.put_object(Bucket="conditions", Key="a", Body=b"a")
    moto_s3.put_object(Bucket="conditions", Key="b", Body=b"b")
    with pytest.raises(ClientError) as refused:
        moto_s3.copy_object(
            CopySource={"Bucket": "conditions", "Key": "a"}, Bucket="conditions", Key="b", IfNoneMatch="*"
        )
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    moto_s3.put_object(Bucket="conditions", Key="a", Body=b"a2")  # the source changes
    with pytest.raises(ClientError, match="PreconditionFailed"):
        moto_s3.copy_object(
            CopySource={"Bucket": "conditions", "Key": "a"},
            Bucket="conditions",
            Key="c",
            CopySourceIfMatch=first["ETag"],
        )
    moto_s3.copy_object(CopySource={"Bucket": "conditions", "Key": "a"}, Bucket="conditions", Key="c", IfNoneMatch="*")
    assert moto_s3.get_object(Bucket="conditions", Key="b")["Body"].read() == b"b"
