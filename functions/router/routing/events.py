"""Turn the events the router receives into the S3 objects they name.

Handles an S3 notification (possibly several records) carried in an SQS body, the same wrapped in an
SNS envelope (S3 -> SNS -> SQS fan-out), S3's ``s3:TestEvent``, and a direct S3 -> Lambda event.
Keys arrive URL-encoded: real S3 writes spaces as ``+``, moto percent-encodes; ``unquote_plus`` reads both.

    python -m routing.events < events/sqs-s3-put.json      # from functions/router: prints the objects
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus


class PoisonMessage(ValueError):
    """A message the router cannot read. It is failed (never dropped) so SQS moves it to the DLQ."""


@dataclass(frozen=True)
class SourceRevision:
    """One revision of one inbox object: what the router's idempotency key is made of (Powertools hashes its
    fields, so duplicate notifications of a revision share one decision)."""

    bucket: str
    key: str
    revision: str


@dataclass(frozen=True)
class SourceObject:
    """One object in the inbox, as named by an S3 event.

    Its identity (idempotency key, results item key) is the bucket, the key and the version id, or the
    ETag where the bucket is not versioned: two uploads of different bytes under one key are two sources.
    """

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: str | None = None

    @property
    def revision(self) -> str:
        if self.version_id:
            return f"v:{self.version_id}"
        if self.etag:
            return f"e:{self.etag}"
        raise PoisonMessage(f"s3://{self.bucket}/{self.key}: the event carries neither versionId nor eTag")

    @property
    def source_id(self) -> str:
        return f"s3://{self.bucket}/{self.key}#{self.revision}"

    def idempotency_data(self) -> SourceRevision:
        return SourceRevision(self.bucket, self.key, self.revision)


def strip_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def is_folder_marker(source: SourceObject) -> bool:
    """The zero-byte ``prefix/`` objects the S3 console creates for folders: not images, left alone."""
    return source.key.endswith("/") and (source.size or 0) == 0


def parse_s3_records(records: list[dict[str, Any]]) -> list[SourceObject]:
    sources = []
    for record in records:
        if record.get("eventSource") != "aws:s3":
            raise PoisonMessage(f"not an S3 record: eventSource={record.get('eventSource')!r}")
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue  # removals, restores, lifecycle: nothing to route
        try:
            bucket = record["s3"]["bucket"]["name"]
            obj = record["s3"]["object"]
            key = unquote_plus(obj["key"])
        except (KeyError, TypeError) as exc:
            raise PoisonMessage(f"S3 record without bucket name or object key: {exc}") from None
        sources.append(
            SourceObject(
                bucket=bucket,
                key=key,
                version_id=obj.get("versionId") or None,
                etag=strip_etag(obj.get("eTag") or obj.get("etag")),
                size=obj.get("size"),
                event_time=record.get("eventTime"),
            )
        )
    return sources


def parse_notification(payload: dict[str, Any]) -> list[SourceObject]:
    """An S3 notification document: test event, records, or the same inside an SNS envelope."""
    if payload.get("Event") == "s3:TestEvent":
        return []
    if payload.get("Type") == "Notification" and "Message" in payload:
        return parse_notification(_loads(payload["Message"], "SNS Message"))
    records = payload.get("Records")
    if not isinstance(records, list):
        raise PoisonMessage("message is neither an S3 event (Records) nor an s3:TestEvent")
    return parse_s3_records(records)


def parse_sqs_body(body: str) -> list[SourceObject]:
    return parse_notification(_loads(body, "SQS body"))


def is_sqs_event(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and all(r.get("eventSource") == "aws:sqs" for r in records)


def is_direct_s3_event(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and all(r.get("eventSource") == "aws:s3" for r in records)


def _loads(text: str, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise PoisonMessage(f"{what} is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise PoisonMessage(f"{what} is JSON but not an object")
    return payload


if __name__ == "__main__":
    event = json.load(sys.stdin)
    if is_sqs_event(event):
        found = [s for r in event["Records"] for s in parse_sqs_body(r["body"])]
    else:
        found = parse_notification(event)
    for source in found:
        print(source.source_id)
