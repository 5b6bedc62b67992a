"""events/*.json: each sample event parses to exactly the S3 objects it names (routing.events).

Every file in events/ needs an entry in EXPECTED: a list with one group per SQS record (a direct S3 event is
one group), each group the objects that record names, or PoisonMessage when the record cannot be read.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from routing.events import (
    PoisonMessage,
    SourceObject,
    is_direct_s3_event,
    is_folder_marker,
    is_sqs_event,
    parse_notification,
    parse_s3_records,
    parse_sqs_body,
)
from tests.sample_events import notifications

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
BUCKET = "breedfilter-inbox-123456789012-us-east-1"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:breedfilter-inbox"


class Expected(NamedTuple):
    key: str  # decoded
    version_id: str | None
    etag: str | None
    size: int
    event_time: str


EXPECTED: dict[str, Any] = {
    "sqs-s3-put.json": [
        [
            Expected(
                "dogs/beagle.jpg",
                "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH",
                "0a8f3c2d9e7b41f6a5c3d2e1f0b9a887",
                48213,
                "2025-11-21T14:03:27.512Z",
            )
        ]
    ],
    "sqs-s3-multi-record.json": [
        [
            Expected(
                "beagle.jpg",
                "kJ8aB3xQ.Wm2pL6nR0tV9yZ4cF7hG1sD",
                "7d1e5c0b4a39f2e8d6c7b5a4f3e2d1c0",
                31877,
                "2025-11-21T14:05:01.004Z",
            ),
            Expected(
                "dogs/pug.png",
                "Tq2WvX9mK4_rP8sL1nB6yH3dF0gJ7cZe",
                "c4ca4238a0b923820dcc509a6f75849b",
                102400,
                "2025-11-21T14:05:01.118Z",
            ),
            Expected(
                "dogs/hounds/2025/11/basset.webp",
                "N5pR2tY8wQ1eU4iO7aS0dG3jL6zX9vCb",
                "a87ff679a2f3e71d9181a67b7542122c",
                20480,
                "2025-11-21T14:05:01.240Z",
            ),
        ]
    ],
    "sqs-s3-batch.json": [
        [
            Expected(
                "dogs/corgi.jpg",
                "Ab3Cd5Ef7Gh9Ij1Kl3Mn5Op7Qr9St1Uv",
                "e4da3b7fbbce2345d7772b0674a318d5",
                54321,
                "2025-11-21T14:10:12.300Z",
            )
        ],
        [
            Expected(
                "dogs/husky.png",
                "Wx2Yz4Ab6Cd8Ef0Gh2Ij4Kl6Mn8Op0Qr",
                "1679091c5a880faf6fb5e6087eb1b2dc-2",
                5767168,
                "2025-11-21T14:10:13.871Z",
            )
        ],
        [
            Expected(
                "dogs/poodle.webp",
                "St3Uv5Wx7Yz9Ab1Cd3Ef5Gh7Ij9Kl1Mn",
                "8f14e45fceea167a5a36dedd4bea2543",
                18944,
                "2025-11-21T14:10:14.025Z",
            )
        ],
    ],
    "sqs-s3-encoded-keys.json": [
        [
            Expected(
                "uploads/my dog photo.jpg",
                "Ee1Ff2Gg3Hh4Ii5Jj6Kk7Ll8Mm9Nn0Oo",
                "b6d767d2f8ed5d21a44b0e5886680cb9",
                41002,
                "2025-11-21T14:20:00.101Z",
            )
        ],
        [
            Expected(
                "uploads/c++ & friends+1.png",
                "Pp1Qq2Rr3Ss4Tt5Uu6Vv7Ww8Xx9Yy0Zz",
                "37693cfc748049e45d87b8c7d8b9aacd",
                23456,
                "2025-11-21T14:20:00.202Z",
            )
        ],
        [
            Expected(
                "hunde/Müller's Dackel.jpg",
                "aA1bB2cC3dD4eE5fF6gG7hH8iI9jJ0kK",
                "1ff1de774005f8da13f42943881c655f",
                30303,
                "2025-11-21T14:20:00.303Z",
            )
        ],
        [
            Expected(
                "狗/柴犬.webp",
                "lL1mM2nN3oO4pP5qQ6rR7sS8tT9uU0vV",
                "8e296a067a37563370ded05f5a3bf3ec",
                15872,
                "2025-11-21T14:20:00.404Z",
            )
        ],
        [
            Expected(
                "emoji/\N{DOG FACE} good boy.png",
                "wW1xX2yY3zZ4aA5bB6cC7dD8eE9fF0gG",
                "4e732ced3463d06de0ca9a15b6153677",
                27648,
                "2025-11-21T14:20:00.505Z",
            )
        ],
        [
            Expected(
                "2025/11/21/camera-01/batch (3)/IMG_0042=final.jpeg",
                "hH1iI2jJ3kK4lL5mM6nN7oO8pP9qQ0rR",
                "02e74f10e0327ad868d138f2b4fdd6f0",
                61440,
                "2025-11-21T14:20:00.606Z",
            )
        ],
    ],
    "sqs-s3-test-event.json": [[]],
    "sqs-s3-unversioned.json": [
        [
            Expected(
                "uploads/labrador.png",
                None,
                "45c48cce2e2d7fbdea1afc51c7c6ad26",
                66012,
                "2025-11-21T14:30:45.777Z",
            )
        ]
    ],
    "sqs-sns-wrapped.json": [
        [
            Expected(
                "dogs/shiba-inu.jpg",
                "Gh4Ij6Kl8Mn0Op2Qr4St6Uv8Wx0Yz2Ab",
                "d3d9446802a44259755d38e6d163e820",
                40960,
                "2025-11-21T14:40:08.640Z",
            )
        ]
    ],
    "sqs-poison.json": [PoisonMessage],
    "s3-direct-put.json": [
        [
            Expected(
                "dogs/dachshund.jpg",
                "Cd5Ef7Gh9Ij1Kl3Mn5Op7Qr9St1Uv3Wx",
                "6512bd43d9caa6e02c990b0a82652dca",
                37120,
                "2025-11-21T14:50:19.333Z",
            )
        ]
    ],
}

DIRECT_S3_FILES = {"s3-direct-put.json"}


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def s3_record(key: str = "dogs/beagle.jpg", **object_fields: Any) -> dict[str, Any]:
    """The S3 record of events/s3-direct-put.json, with another key and object fields."""
    record = copy.deepcopy(load("s3-direct-put.json")["Records"][0])
    record["s3"]["object"]["key"] = key
    record["s3"]["object"].update(object_fields)
    return record


# -- every file, against its expectation ------------------------------------------------------------------


def test_every_event_file_has_an_expectation() -> None:
    on_disk = {path.name for path in EVENTS_DIR.glob("*.json")} - {"env.json"}  # sam local invoke --env-vars
    assert on_disk, "events/ holds no sample events"
    assert on_disk == set(EXPECTED), (
        f"files without an expectation: {sorted(on_disk - set(EXPECTED))}; "
        f"expectations without a file: {sorted(set(EXPECTED) - on_disk)}"
    )


def test_readme_lists_every_event_file() -> None:
    readme = (EVENTS_DIR / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert f"`{name}`" in readme
        assert f"sam local invoke RouterFunction -e events/{name}" in readme


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_event_file_names_exactly_the_expected_objects(name: str) -> None:
    event = load(name)
    expected_groups = EXPECTED[name]
    if name in DIRECT_S3_FILES:
        assert not is_sqs_event(event)
        assert is_direct_s3_event(event)
        groups = [parse_s3_records(event["Records"])]
        assert parse_notification(event) == groups[0]
    else:
        assert is_sqs_event(event)
        assert not is_direct_s3_event(event)
        assert len(event["Records"]) == len(expected_groups)
        groups = []
        for record, expected in zip(event["Records"], expected_groups, strict=True):
            if expected is PoisonMessage:
                with pytest.raises(PoisonMessage):
                    parse_sqs_body(record["body"])
                groups.append(PoisonMessage)
            else:
                groups.append(parse_sqs_body(record["body"]))

    assert len(groups) == len(expected_groups)
    for got, expected in zip(groups, expected_groups, strict=True):
        if expected is PoisonMessage:
            assert got is PoisonMessage
            continue
        assert got == [SourceObject(BUCKET, *e) for e in expected]
        for source, e in zip(got, expected, strict=True):
            revision = f"v:{e.version_id}" if e.version_id else f"e:{e.etag}"
            assert source.revision == revision
            assert source.source_id == f"s3://{BUCKET}/{e.key}#{revision}"
            assert asdict(source.idempotency_data()) == {"bucket": BUCKET, "key": e.key, "revision": revision}
            assert '"' not in (source.etag or "")


def test_source_ids_spelled_out() -> None:
    (put,) = parse_sqs_body(load("sqs-s3-put.json")["Records"][0]["body"])
    assert put.source_id == (
        "s3://breedfilter-inbox-123456789012-us-east-1/dogs/beagle.jpg#v:3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrH"
    )
    (unversioned,) = parse_sqs_body(load("sqs-s3-unversioned.json")["Records"][0]["body"])
    assert unversioned.version_id is None
    assert unversioned.source_id == (
        "s3://breedfilter-inbox-123456789012-us-east-1/uploads/labrador.png#e:45c48cce2e2d7fbdea1afc51c7c6ad26"
    )


def test_encoded_keys_arrive_encoded_and_decode_to_spaces_plus_and_unicode() -> None:
    raw_keys = [
        json.loads(record["body"])["Records"][0]["s3"]["object"]["key"]
        for record in load("sqs-s3-encoded-keys.json")["Records"]
    ]
    assert all(key.isascii() and " " not in key for key in raw_keys)
    assert "uploads/my+dog+photo.jpg" in raw_keys
    assert "uploads/c%2B%2B+%26+friends%2B1.png" in raw_keys
    assert "hunde/M%C3%BCller%27s+Dackel.jpg" in raw_keys
    decoded = [parse_sqs_body(record["body"])[0].key for record in load("sqs-s3-encoded-keys.json")["Records"]]
    assert "uploads/c++ & friends+1.png" in decoded
    assert "hunde/M\u00fcller's Dackel.jpg" in decoded
    assert "\u72d7/\u67f4\u72ac.webp" in decoded
    assert "emoji/\U0001f436 good boy.png" in decoded


# -- the files are shaped as AWS sends them ---------------------------------------------------------------


def all_s3_records() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, record)
        for name in sorted(EXPECTED)
        for notification in notifications(load(name))
        for record in notification.get("Records", [])
    ]


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - DIRECT_S3_FILES))
def test_sqs_records_are_aws_shaped(name: str) -> None:
    for record in load(name)["Records"]:
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == QUEUE_ARN
        assert record["awsRegion"] == "us-east-1"
        assert record["messageAttributes"] == {}
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
        assert set(record["attributes"]) >= {
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
        }
        assert record["attributes"]["SentTimestamp"].isdigit()
        assert int(record["attributes"]["ApproximateReceiveCount"]) >= 1
        assert record["messageId"] and record["receiptHandle"]


def test_s3_records_are_aws_shaped() -> None:
    records = all_s3_records()
    expected_count = sum(len(group) for groups in EXPECTED.values() for group in groups if group is not PoisonMessage)
    assert len(records) == expected_count
    for name, record in records:
        assert record["eventVersion"] == "2.1", name
        assert record["eventSource"] == "aws:s3"
        assert record["awsRegion"] == "us-east-1"
        assert record["eventName"].startswith("ObjectCreated:")
        assert record["eventTime"].endswith("Z")
        assert {"userIdentity", "requestParameters", "responseElements"} <= set(record)
        s3 = record["s3"]
        assert s3["s3SchemaVersion"] == "1.0"
        assert s3["configurationId"]
        assert s3["bucket"]["name"] == BUCKET
        assert s3["bucket"]["arn"] == f"arn:aws:s3:::{BUCKET}"
        assert "principalId" in s3["bucket"]["ownerIdentity"]
        obj = s3["object"]
        assert obj["key"].isascii() and " " not in obj["key"]
        assert {"key", "size", "eTag", "sequencer"} <= set(obj)
        assert ("versionId" in obj) == (name != "sqs-s3-unversioned.json")


def test_test_event_and_sns_envelope_shapes() -> None:
    body = json.loads(load("sqs-s3-test-event.json")["Records"][0]["body"])
    assert set(body) == {"Service", "Event", "Time", "Bucket", "RequestId", "HostId"}
    assert body["Event"] == "s3:TestEvent"
    assert body["Bucket"] == BUCKET
    envelope = json.loads(load("sqs-sns-wrapped.json")["Records"][0]["body"])
    assert envelope["Type"] == "Notification"
    assert isinstance(envelope["Message"], str)
    assert envelope["TopicArn"].startswith("arn:aws:sns:us-east-1:123456789012:")


# -- parsing rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "uploaded dogs/beagle.jpg, please classify",
        "",
        "{not json",
        "[]",
        "null",
        '"a string"',
        "42",
    ],
)
def test_unreadable_body_is_poison(body: str) -> None:
    with pytest.raises(PoisonMessage):
        parse_sqs_body(body)


@pytest.mark.parametrize(
    "payload",
    [{}, {"Message": "hello"}, {"Records": "not a list"}, {"Records": None}, {"records": []}],
)
def test_json_without_records_is_poison(payload: dict[str, Any]) -> None:
    with pytest.raises(PoisonMessage):
        parse_notification(payload)
    with pytest.raises(PoisonMessage):
        parse_sqs_body(json.dumps(payload))


def test_sns_envelope_with_unreadable_message_is_poison() -> None:
    envelope = json.loads(load("sqs-sns-wrapped.json")["Records"][0]["body"])
    envelope["Message"] = "not json"
    with pytest.raises(PoisonMessage):
        parse_notification(envelope)


def test_sns_wrapped_test_event_names_nothing() -> None:
    test_event = load("sqs-s3-test-event.json")["Records"][0]["body"]
    assert parse_notification({"Type": "Notification", "Message": test_event}) == []


def test_empty_records_list_names_nothing() -> None:
    assert parse_sqs_body('{"Records": []}') == []


@pytest.mark.parametrize(
    "event_name", ["ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated", "ObjectRestore:Completed", ""]
)
def test_records_other_than_object_created_are_skipped(event_name: str) -> None:
    removed = s3_record("dogs/gone.jpg")
    removed["eventName"] = event_name
    kept = s3_record("dogs/kept.jpg")
    assert parse_s3_records([removed]) == []
    assert [s.key for s in parse_s3_records([removed, kept, removed])] == ["dogs/kept.jpg"]
    assert [s.key for s in parse_sqs_body(json.dumps({"Records": [removed, kept]}))] == ["dogs/kept.jpg"]


def test_non_s3_record_is_poison() -> None:
    record = s3_record()
    record["eventSource"] = "aws:sqs"
    with pytest.raises(PoisonMessage):
        parse_s3_records([record])


@pytest.mark.parametrize("remove", ["key", "bucket"])
def test_s3_record_without_bucket_or_key_is_poison(remove: str) -> None:
    record = s3_record()
    if remove == "key":
        del record["s3"]["object"]["key"]
    else:
        del record["s3"]["bucket"]
    with pytest.raises(PoisonMessage):
        parse_s3_records([record])


def test_quoted_etag_is_stripped_and_lowercase_etag_field_is_read() -> None:
    quoted = s3_record(eTag='"0123456789abcdef0123456789abcdef"', versionId=None)
    (source,) = parse_s3_records([quoted])
    assert source.etag == "0123456789abcdef0123456789abcdef"
    assert source.version_id is None
    assert source.revision == "e:0123456789abcdef0123456789abcdef"
    lowercase = s3_record()
    del lowercase["s3"]["object"]["eTag"]
    del lowercase["s3"]["object"]["versionId"]
    lowercase["s3"]["object"]["etag"] = "fedcba9876543210fedcba9876543210"
    (source,) = parse_s3_records([lowercase])
    assert source.etag == "fedcba9876543210fedcba9876543210"


def test_empty_version_id_is_no_version() -> None:
    (source,) = parse_s3_records([s3_record(versionId="", eTag="abc123")])
    assert source.version_id is None
    assert source.revision == "e:abc123"


def test_revision_prefers_version_id_over_etag() -> None:
    both = SourceObject(BUCKET, "k.jpg", version_id="ver-1", etag="etag-1")
    assert both.revision == "v:ver-1"
    assert both.source_id == f"s3://{BUCKET}/k.jpg#v:ver-1"
    assert SourceObject(BUCKET, "k.jpg", etag="etag-1").revision == "e:etag-1"
    # Same key, different bytes: two sources.
    assert (
        SourceObject(BUCKET, "k.jpg", etag="etag-1").source_id != SourceObject(BUCKET, "k.jpg", etag="etag-2").source_id
    )


@pytest.mark.parametrize(("version_id", "etag"), [(None, None), ("", ""), (None, ""), ("", None)])
def test_revision_without_version_or_etag_is_poison(version_id: str | None, etag: str | None) -> None:
    source = SourceObject(BUCKET, "k.jpg", version_id=version_id, etag=etag)
    with pytest.raises(PoisonMessage):
        _ = source.revision
    with pytest.raises(PoisonMessage):
        _ = source.source_id


def test_event_without_version_or_etag_parses_but_has_no_identity() -> None:
    record = s3_record()
    del record["s3"]["object"]["eTag"]
    del record["s3"]["object"]["versionId"]
    (source,) = parse_s3_records([record])
    with pytest.raises(PoisonMessage):
        source.idempotency_data()


@pytest.mark.parametrize(
    ("key", "size", "marker"),
    [
        ("dogs/", 0, True),
        ("dogs/hounds/", 0, True),
        ("dogs/", None, True),
        ("dogs/", 12, False),
        ("dogs/beagle.jpg", 0, False),
        ("dogs/beagle.jpg", 48213, False),
        ("dogs", 0, False),
    ],
)
def test_is_folder_marker(key: str, size: int | None, marker: bool) -> None:
    assert is_folder_marker(SourceObject(BUCKET, key, etag="e", size=size)) is marker


def test_folder_marker_from_an_event() -> None:
    (source,) = parse_s3_records([s3_record("dogs%2Fhounds/", size=0)])
    assert source.key == "dogs/hounds/"
    assert is_folder_marker(source)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": []},
        {"Records": [{"eventSource": "aws:sqs"}, {"eventSource": "aws:s3"}]},
    ],
)
def test_mixed_or_empty_events_are_neither_sqs_nor_s3(event: dict[str, Any]) -> None:
    assert not is_sqs_event(event)
    assert not is_direct_s3_event(event)
