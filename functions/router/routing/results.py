"""The DynamoDB results table: one item per source object revision, written once (conditional put).

Keys and indexes (declared in template.yaml): ``pk`` = the source id; GSI ``by-label`` (label, decided_at)
answers "all images of label X, newest first" (only SORTED items carry ``label``); GSI ``by-status``
(status, decided_at) answers "what needs review".

    python -m routing.results TABLE SOURCE_ID     # from functions/router: prints one item
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from decimal import Decimal
from typing import Any

import boto3
from botocore.exceptions import ClientError

from routing.decision import Decision, now_iso
from routing.events import SourceObject

BY_LABEL_INDEX = "by-label"
BY_STATUS_INDEX = "by-status"


def build_item(
    source: SourceObject,
    decision: Decision,
    *,
    version_id: str | None,
    destination_bucket: str,
    destination_key: str,
) -> dict[str, Any]:
    """The results item. ``version_id`` is the inbox version routed (the event may lack it)."""
    recorded_at = now_iso()
    item: dict[str, Any] = {
        "pk": source.source_id,
        "source_bucket": source.bucket,
        "source_key": source.key,
        "source_version_id": version_id or source.version_id,
        "source_etag": source.etag,
        "uploaded_at": source.event_time,
        **{k: v for k, v in decision.fields().items() if k != "prefix"},
        "destination_bucket": destination_bucket,
        "destination_key": destination_key,
        "recorded_at": recorded_at,
    }
    if source.event_time:
        item["pipeline_latency_ms"] = _ms_between(source.event_time, recorded_at)
    return _to_dynamo(item)


class ResultsTable:
    def __init__(self, table_name: str, resource: Any = None):
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)

    def get(self, source_id: str) -> dict[str, Any] | None:
        return self.table.get_item(Key={"pk": source_id}, ConsistentRead=True).get("Item")

    def put_once(self, item: dict[str, Any]) -> bool:
        """Write the item unless one exists for this source; False when it already did."""
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True


def _to_dynamo(item: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values and turn floats into Decimals, as DynamoDB wants them."""
    clean = {k: v for k, v in item.items() if v is not None and v != ""}
    return json.loads(json.dumps(clean), parse_float=Decimal)


def _ms_between(start_iso: str, end_iso: str) -> int | None:
    try:
        start = datetime.fromisoformat(start_iso.replace("Z", "+00:00"))
        end = datetime.fromisoformat(end_iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


if __name__ == "__main__":
    found = ResultsTable(sys.argv[1]).get(sys.argv[2])
    print(json.dumps(found, indent=2, default=str) if found else "no item")
