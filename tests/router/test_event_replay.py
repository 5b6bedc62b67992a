"""Every sample event in events/ replayed through lambda_handler on the local twin: the objects each names are
uploaded first (the event's versionId/eTag rewritten to the uploaded ones), then the event is invoked as-is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breedfilter.twin.local_aws import StackNames
from routing.events import parse_notification
from tests.images import image_bytes
from tests.sample_events import map_notifications, notifications

EVENTS = Path(__file__).resolve().parents[2] / "events"
INBOX = "breedfilter-inbox-123456789012-us-east-1"
SAMPLES = sorted(p for p in EVENTS.glob("*.json") if p.name != "env.json")  # env.json: sam's --env-vars


def rewrite(event: dict, uploaded: dict[str, dict]) -> dict:
    """Point the event's versionId/eTag at what was actually uploaded under each key."""

    def fix(notification: dict) -> dict:
        for record in notification.get("Records", []):
            sources = parse_notification({"Records": [record]})
            if not sources:
                continue
            put = uploaded[sources[0].key]
            obj = record["s3"]["object"]
            obj["eTag"] = put["ETag"].strip('"')
            if "versionId" in obj:
                obj["versionId"] = put["VersionId"]
        return notification

    return map_notifications(event, fix)


@pytest.mark.parametrize("path", [p for p in SAMPLES if p.name != "sqs-poison.json"], ids=lambda p: p.name)
def test_sample_event_routes_through_the_handler(make_harness, path):
    event = json.loads(path.read_text())
    harness = make_harness(names=StackNames(inbox_bucket=INBOX))
    keys = [s.key for n in notifications(event) if n.get("Records") for s in parse_notification(n)]
    uploaded = {key: harness.put(key, image_bytes("blue")) for key in keys}
    result = harness.invoke(rewrite(event, uploaded))

    assert result.get("batchItemFailures", []) == []
    assert harness.keys(harness.sorted) == sorted(f"blue/{key}" for key in keys)
    assert sorted(item["source_key"] for item in harness.items()) == sorted(keys)
    assert harness.keys(harness.inbox) == []


def test_poison_sample_fails_its_batch_and_routes_nothing(make_harness):
    harness = make_harness(names=StackNames(inbox_bucket=INBOX))
    event = json.loads((EVENTS / "sqs-poison.json").read_text())
    result = harness.invoke(event)  # its only record failed: reported as failed, not raised
    assert result == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
    assert harness.items() == [] and harness.keys(harness.sorted) == []
