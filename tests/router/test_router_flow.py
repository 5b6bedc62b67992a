"""The router end to end on moto's server and a real local endpoint: upload -> S3 notification -> SQS ->
the poller (Lambda's event source mapping) -> lambda_handler -> sorted bucket + results item + empty inbox.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal

import pytest
from PIL import features

from breedfilter.twin.stand_in_model import ColourModel
from tests.images import HEIC_HEADER, TEXT_AS_JPG, image_bytes, truncated_jpeg


def test_confident_images_are_sorted_under_their_label(harness):
    for colour in ("red", "green", "blue"):
        harness.put(f"{colour}.jpg", image_bytes(colour))
    report = harness.drain()
    assert report.failed == 0 and report.succeeded == 3
    assert harness.keys(harness.sorted) == ["blue/blue.jpg", "green/green.jpg", "red/red.jpg"]
    assert harness.keys(harness.inbox) == []
    assert harness.inbox_versions() == []  # the routed version itself is deleted, not hidden by a marker
    item = harness.item_for("red.jpg")
    assert item["status"] == "SORTED" and item["label"] == "red"
    assert item["confidence"] > 0.6
    assert item["top_k"][0]["label"] == "red" and len(item["top_k"]) == 3
    assert item["destination_bucket"] == harness.sorted and item["destination_key"] == "red/red.jpg"
    assert item["model_name"] == "stand-in-colour" and item["format"] == "jpeg"
    assert item["source_version_id"] and item["source_etag"]
    for field in ("decided_at", "recorded_at", "uploaded_at", "endpoint_latency_ms", "pipeline_latency_ms"):
        assert field in item, field


def test_sorted_copy_carries_the_decision_in_metadata(harness):
    harness.put("deep/a/b/c/pic.png", image_bytes("green", "PNG"), ContentType="image/png")
    harness.drain()
    head = harness.s3.head_object(Bucket=harness.sorted, Key="green/deep/a/b/c/pic.png")
    meta = head["Metadata"]
    assert meta["breedfilter-status"] == "SORTED"
    assert meta["breedfilter-label"] == "green"
    assert meta["breedfilter-source-key"] == "deep/a/b/c/pic.png"
    assert float(meta["breedfilter-confidence"]) > 0.6
    assert head["ContentType"] == "image/png"


def test_unsure_prediction_goes_to_review_with_top_k(harness):
    harness.put("purple.png", image_bytes("purple", "PNG"))  # torn between red and blue: about 0.5 each
    harness.drain()
    assert harness.keys(harness.sorted) == ["review/purple.png"]
    item = harness.item_for("purple.png")
    assert item["status"] == "REVIEW" and "label" not in item  # not listed under any label
    assert item["reason"] == "below_threshold" and item["top_label"] in ("red", "blue")
    assert item["known"] is True and item["threshold"] == Decimal("0.6") and item["threshold_source"] == "model"
    assert item["detail"].endswith("< threshold 0.6 (the model's own)")
    assert len(item["top_k"]) == 3


def test_image_of_none_of_the_labels_goes_to_review_as_unknown_label(harness):
    assert os.environ["CONFIDENCE_THRESHOLD"] == "model"  # template.yaml's default, as the local twin passes it
    harness.put("cat/grey.jpg", image_bytes("grey"))  # no colour: the stand-in model answers known=false
    report = harness.drain()
    assert report.failed == 0
    assert harness.keys(harness.sorted) == ["review/cat/grey.jpg"]
    assert harness.keys(harness.inbox) == []
    item = harness.item_for("cat/grey.jpg")
    assert item["status"] == "REVIEW" and "label" not in item
    assert item["reason"] == "unknown_label"
    assert item["detail"] == "not any of the model's labels (the model answered known=false, unknown score 1)"
    assert item["known"] is False and item["unknown_score"] == Decimal("1")
    assert item["threshold"] == Decimal("0.6") and item["threshold_source"] == "model"
    assert item["top_label"] in ("red", "green", "blue") and len(item["top_k"]) == 3  # the top guess is kept
    meta = harness.s3.head_object(Bucket=harness.sorted, Key="review/cat/grey.jpg")["Metadata"]
    assert meta["breedfilter-status"] == "REVIEW" and meta["breedfilter-reason"] == "unknown_label"
    assert meta["breedfilter-known"] == "false" and meta["breedfilter-unknown-score"] == "1.0"
    assert meta["breedfilter-threshold"] == "0.6" and meta["breedfilter-threshold-source"] == "model"
    by_status = harness.dynamodb.query(
        TableName=harness.stack.names.results_table,
        IndexName="by-status",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "REVIEW"}},
    )["Items"]
    assert [(i["source_key"]["S"], i["reason"]["S"]) for i in by_status] == [("cat/grey.jpg", "unknown_label")]


def test_the_models_own_threshold_decides_by_default(harness, monkeypatch):
    monkeypatch.setattr(harness.model, "model", ColourModel(threshold=0.95))  # a strict model
    harness.put("rose.png", image_bytes("rose", "PNG"))  # mostly red: about 0.87
    harness.drain()
    item = harness.item_for("rose.png")
    assert item["status"] == "REVIEW" and item["reason"] == "below_threshold"
    assert item["threshold"] == Decimal("0.95") and item["threshold_source"] == "model"


def test_a_confidence_threshold_number_overrides_the_models(make_harness, monkeypatch):
    harness = make_harness(env={"CONFIDENCE_THRESHOLD": "0.5"})
    monkeypatch.setattr(harness.model, "model", ColourModel(threshold=0.95))
    harness.put("rose.png", image_bytes("rose", "PNG"))
    harness.put("grey.jpg", image_bytes("grey"))  # unknown stays unknown whatever the threshold
    harness.drain()
    assert harness.keys(harness.sorted) == ["red/rose.png", "review/grey.jpg"]
    item = harness.item_for("rose.png")
    assert item["status"] == "SORTED" and item["label"] == "red"
    assert item["threshold"] == Decimal("0.5") and item["threshold_source"] == "setting"
    assert harness.item_for("grey.jpg")["reason"] == "unknown_label"


def test_an_endpoint_without_the_open_set_fields_sorts_on_the_fallback_threshold(harness, monkeypatch):
    monkeypatch.setattr(harness.model, "model", ColourModel(open_set=False))  # answers as old artifacts did
    harness.put("red.jpg", image_bytes("red"))
    harness.put("grey.jpg", image_bytes("grey"))  # old models cannot tell: a known image below 0.6
    harness.drain()
    assert harness.keys(harness.sorted) == ["red/red.jpg", "review/grey.jpg"]
    red = harness.item_for("red.jpg")
    assert red["status"] == "SORTED" and red["known"] is True and "unknown_score" not in red
    assert red["threshold"] == Decimal("0.6") and red["threshold_source"] == "default"
    assert "no threshold" in red["detail"]
    grey = harness.item_for("grey.jpg")
    assert grey["reason"] == "below_threshold" and grey["threshold_source"] == "default"
    assert "no threshold" in grey["detail"]


@pytest.mark.parametrize(
    ("key", "body", "reason", "calls_endpoint"),
    [
        ("notes.jpg", TEXT_AS_JPG, "not_an_image", False),
        ("empty.jpg", b"", "empty", False),
        ("phone.heic", HEIC_HEADER, "unsupported_format", False),
        ("cut.jpg", truncated_jpeg(), "model_rejected", True),
    ],
    ids=["text-named-jpg", "empty", "heic", "truncated-jpeg"],
)
def test_bad_input_is_rejected_with_its_reason(harness, key, body, reason, calls_endpoint):
    harness.put(key, body)
    report = harness.drain()
    assert report.failed == 0
    assert harness.keys(harness.sorted) == [f"rejected/{key}"]
    assert harness.keys(harness.inbox) == []
    item = harness.item_for(key)
    assert item["status"] == "REJECTED" and item["reason"] == reason and item["detail"]
    assert bool(harness.model.calls) == calls_endpoint


def test_oversized_object_is_rejected_without_calling_the_endpoint_when_pointers_are_off(make_harness):
    harness = make_harness(env={"MAX_IMAGE_BYTES": "2000", "MAX_POINTER_IMAGE_BYTES": "0"})
    big = image_bytes("red", "PNG", size=(400, 400), mode="RGB")
    big += b"\x00" * max(0, 2001 - len(big))
    harness.put("big.png", big)
    harness.drain()
    item = harness.item_for("big.png")
    assert item["status"] == "REJECTED" and item["reason"] == "too_large"
    assert "MAX_IMAGE_BYTES=2000" in item["detail"]
    assert harness.model.calls == []
    assert harness.keys(harness.sorted) == ["rejected/big.png"]


def test_an_image_over_the_body_limit_is_classified_by_s3_pointer(make_harness):
    harness = make_harness(env={"MAX_IMAGE_BYTES": "2000", "MAX_POINTER_IMAGE_BYTES": "500000"})
    big = image_bytes("red", "PNG", size=(400, 400), mode="RGB")
    big += b"\x00" * max(0, 2001 - len(big))  # trailing bytes after IEND: still a PNG
    harness.put("phone photo.png", big)
    harness.drain()
    item = harness.item_for("phone photo.png")
    assert item["status"] == "SORTED" and item["label"] == "red"
    assert item["size_bytes"] == len(big) and item["format"] == "png"
    assert harness.model.calls == ["application/json"]  # one pointer, never the body
    assert harness.keys(harness.sorted) == ["red/phone photo.png"]
    assert harness.keys(harness.inbox) == []


def test_an_image_over_the_pointer_limit_is_rejected_without_calling_the_endpoint(make_harness):
    harness = make_harness(env={"MAX_IMAGE_BYTES": "2000", "MAX_POINTER_IMAGE_BYTES": "3000"})
    big = image_bytes("red", "PNG", size=(400, 400), mode="RGB")
    big += b"\x00" * max(0, 3001 - len(big))
    harness.put("huge.png", big)
    harness.drain()
    item = harness.item_for("huge.png")
    assert item["status"] == "REJECTED" and item["reason"] == "too_large"
    assert f"{len(big)} bytes exceeds MAX_POINTER_IMAGE_BYTES=3000" == item["detail"]
    assert harness.model.calls == []


@pytest.mark.parametrize(
    "key",
    [
        "my dog.jpg",
        "plus+sign.jpg",
        "ünïcødé/狗 🐕.jpg",
        "a/b/c/d/e/f/g/deep.jpg",
        "odd%20literal.jpg",
        "x?y&z=1#h.jpg",
    ],
)
def test_keys_are_decoded_and_kept_below_the_prefix(harness, key):
    harness.put(key, image_bytes("blue"))
    report = harness.drain()
    assert report.failed == 0
    assert harness.keys(harness.sorted) == [f"blue/{key}"]
    assert harness.item_for(key)["source_key"] == key
    assert harness.keys(harness.inbox) == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "JPEG2000", "AVIF"])
def test_every_supported_format_reaches_the_model(harness, fmt):
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    harness.put(f"pic.{fmt.lower()}", image_bytes("green", fmt))
    harness.drain()
    item = harness.item_for(f"pic.{fmt.lower()}")
    assert item["status"] == "SORTED" and item["label"] == "green"
    if fmt in ("JPEG2000", "AVIF"):  # formats without an image/* type the endpoint takes
        assert item["format"] == fmt.lower() and harness.model.calls == ["application/x-image"]


def test_one_failing_record_does_not_fail_the_batch(harness):
    harness.put("a.jpg", image_bytes("red"))
    harness.put("b.jpg", image_bytes("blue"))
    harness.send_body("this is not json")  # a poison message in the same batch
    messages = harness.sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 3
    event = {"Records": [harness.source._record(m) for m in messages]}
    response = harness.invoke(event)
    poison = next(m["MessageId"] for m in messages if m["Body"] == "this is not json")
    assert response == {"batchItemFailures": [{"itemIdentifier": poison}]}
    assert harness.keys(harness.sorted) == ["blue/b.jpg", "red/a.jpg"]


def test_a_batch_in_which_every_record_fails_lists_every_message(harness):
    """Not a function error (Powertools' default raises BatchProcessingError): each message is reported failed,
    so each returns to the queue on its own and reaches the DLQ after MaxReceiveCount receives."""
    harness.send_body("this is not json")
    harness.send_body({"not": "an s3 event"})
    messages = harness.sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 2
    response = harness.invoke({"Records": [harness.source._record(m) for m in messages]})
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        m["MessageId"] for m in messages
    )


def missing_bucket_event(bucket: str, *, with_version: bool) -> dict:
    obj = {"key": "dog.jpg", "size": 1234, "eTag": "0123456789abcdef0123456789abcdef"}
    if with_version:
        obj["versionId"] = "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-01-01T00:00:00.000Z",
                "s3": {"bucket": {"name": bucket}, "object": obj},
            }
        ]
    }


@pytest.mark.parametrize("with_version", [True, False], ids=["versionId", "etag-only"])
def test_an_event_naming_a_bucket_that_does_not_exist_fails_loudly(harness, monkeypatch, request, with_version):
    """Not dropped as a deleted object would be: the record fails with an error naming the bucket, and the
    message ends in the dead-letter queue; the other records of the batch are routed."""
    import io

    import app

    stream = io.StringIO()
    monkeypatch.setattr(app.logger.registered_handler, "stream", stream)
    missing = "breedfilter-no-such-bucket"
    harness.put("ok.jpg", image_bytes("red"))
    harness.send_body(missing_bucket_event(missing, with_version=with_version))
    messages = harness.sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 2
    response = harness.invoke({"Records": [harness.source._record(m) for m in messages]})
    lost = next(m["MessageId"] for m in messages if missing in m["Body"])
    assert response == {"batchItemFailures": [{"itemIdentifier": lost}]}
    assert harness.keys(harness.sorted) == ["red/ok.jpg"]
    errors = [json.loads(line) for line in stream.getvalue().splitlines() if '"level":"ERROR"' in line]
    assert [e["bucket"] for e in errors] == [missing]
    assert missing in errors[0]["message"] and "does not exist" in errors[0]["message"]
    for message in messages:
        harness.sqs.change_message_visibility(
            QueueUrl=harness.stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    harness.drain()
    dead = harness.sqs.receive_message(QueueUrl=harness.stack.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(dead) == 1 and missing in dead[0]["Body"]
    assert [item["source_key"] for item in harness.items()] == ["ok.jpg"]


def test_a_direct_s3_event_naming_a_missing_bucket_raises(harness):
    from routing.pipeline import BucketMissing

    with pytest.raises(BucketMissing, match="breedfilter-no-such-bucket"):
        harness.invoke(missing_bucket_event("breedfilter-no-such-bucket", with_version=False))


def test_poison_message_ends_in_the_dead_letter_queue(harness):
    harness.send_body({"not": "an s3 event"})
    harness.put("ok.jpg", image_bytes("red"))
    harness.drain()
    assert harness.queue_depth() == 0
    dead = harness.sqs.receive_message(QueueUrl=harness.stack.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"]) for m in dead] == [{"not": "an s3 event"}]
    assert harness.keys(harness.sorted) == ["red/ok.jpg"]


def test_one_message_with_several_s3_records(harness):
    for name, colour in (("one.jpg", "red"), ("two.jpg", "green")):
        harness.put(name, image_bytes(colour))
    received = [harness.receive_one() for _ in range(2)]
    for message in received:  # replace the two notifications by one message carrying both records
        harness.sqs.delete_message(QueueUrl=harness.stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    notifications = [json.loads(m["Body"]) for m in received]
    merged = {"Records": [r for n in notifications for r in n["Records"]]}
    harness.send_body(merged)
    report = harness.drain()
    assert report.succeeded == 1
    assert harness.keys(harness.sorted) == ["green/two.jpg", "red/one.jpg"]


def test_s3_test_event_is_acknowledged_and_ignored(harness):
    harness.send_body({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": harness.inbox})
    report = harness.drain()
    assert report.succeeded == 1 and report.failed == 0
    assert harness.items() == []


def test_folder_marker_is_left_alone(harness):
    harness.put("holiday/", b"")
    report = harness.drain()
    assert report.failed == 0
    assert harness.keys(harness.inbox) == ["holiday/"]
    assert harness.items() == [] and harness.keys(harness.sorted) == []


def test_direct_s3_event_is_routed(harness):
    harness.put("direct.jpg", image_bytes("red"))
    notification = json.loads(harness.receive_one()["Body"])
    result = harness.invoke(notification)
    assert result == {"outcomes": ["routed"]}
    assert harness.keys(harness.sorted) == ["red/direct.jpg"]


def test_unversioned_inbox_routes_and_deletes_by_etag(make_harness):
    harness = make_harness(versioned_inbox=False)
    harness.put("plain.jpg", image_bytes("green"))
    harness.drain()
    assert harness.keys(harness.sorted) == ["green/plain.jpg"]
    assert harness.keys(harness.inbox) == []
    assert harness.item_for("plain.jpg")["source_etag"]


def test_overwritten_key_routes_only_the_newest_bytes(make_harness):
    harness = make_harness(versioned_inbox=False)
    harness.put("same.jpg", image_bytes("red"))
    harness.put("same.jpg", image_bytes("blue"))  # overwritten before the router ran
    report = harness.drain()
    assert report.failed == 0
    assert harness.keys(harness.sorted) == ["blue/same.jpg"]
    assert [i["label"] for i in harness.items()] == ["blue"]
    assert harness.keys(harness.inbox) == []
