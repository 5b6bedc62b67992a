"""Find inbox objects that no notification will ever route, and send them through the normal path.

S3 delivers event notifications at least once and sometimes late; two writes to one key of an unversioned
bucket at once may raise a single notification; a purged or expired message leaves its object in the inbox
forever. The router deletes every object it routes, so an object version still in the inbox after a grace
period is stuck. Per version older than the grace period (delete markers and ``key/`` folder markers aside)
the reconciler looks for the router's results item, keyed on the router's own source id
(``s3://bucket/key#v:<versionId>``, or ``#e:<etag>`` where the version id is ``null``):

- **lost**: no item. The notification never came (or its message was purged): route it.
- **leftover**: an item exists but the object is still there: the router crashed after recording and
  before deleting, and its message is gone. The notification makes the router delete it.

Each goes to the inbox queue as the notification S3 would have sent (``s3_notification``), marked with a
top-level ``"breedfilter": {"origin": "reconciler"}`` that S3 never sends and the router's parser ignores,
so ``routing.events.parse_sqs_body`` reads it unchanged. A duplicate (the late original still arrives, or
two runs) is harmless: the router converges on duplicates. A run sends at most ``max_objects``.

    python -m routing.reconcile [--dry-run]     # from functions/router, with the reconciler's environment set
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import boto3
from botocore.config import Config

from routing.events import SourceObject, strip_etag
from routing.settings import ConfigError

DEFAULT_GRACE_MINUTES = 15.0
DEFAULT_MAX_OBJECTS = 1000
MAX_MAX_OBJECTS = 100_000
NULL_VERSION = "null"  # list_object_versions' version id of an object written while unversioned
ORIGIN_FIELD = "breedfilter"  # the top-level field marking our own notifications (S3 sends no such field)
BATCH_GET_LIMIT = 100  # BatchGetItem's most keys per request
SEND_BATCH_LIMIT = 10  # SendMessageBatch's most entries per request
LOST = "lost"
LEFTOVER = "leftover"

REQUIRED_ENV = {
    "inbox_bucket": "INBOX_BUCKET",
    "inbox_queue_url": "INBOX_QUEUE_URL",
    "results_table": "RESULTS_TABLE",
}
GRACE_ENV = "RECONCILE_GRACE_MINUTES"
MAX_OBJECTS_ENV = "RECONCILE_MAX_OBJECTS"
ENV_VARIABLES = frozenset(REQUIRED_ENV.values()) | {GRACE_ENV, MAX_OBJECTS_ENV}


# -- settings -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileSettings:
    inbox_bucket: str
    inbox_queue_url: str
    results_table: str
    grace_minutes: float = DEFAULT_GRACE_MINUTES
    max_objects: int = DEFAULT_MAX_OBJECTS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReconcileSettings:
        env = os.environ if env is None else env
        missing = [var for var in REQUIRED_ENV.values() if not env.get(var, "").strip()]
        if missing:
            raise ConfigError(
                f"reconciler is missing environment variable(s) {', '.join(missing)}; "
                "template.yaml sets them on the deployed ReconcilerFunction"
            )
        values: dict[str, Any] = {name: env[var].strip() for name, var in REQUIRED_ENV.items()}
        grace = env.get(GRACE_ENV, "").strip()
        if grace:
            values["grace_minutes"] = _number(GRACE_ENV, grace, float)
        most = env.get(MAX_OBJECTS_ENV, "").strip()
        if most:
            values["max_objects"] = _number(MAX_OBJECTS_ENV, most, int)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not (math.isfinite(self.grace_minutes) and self.grace_minutes >= 0):
            raise ConfigError(f"{GRACE_ENV} must be a number of minutes >= 0, got {self.grace_minutes}")
        if not 1 <= self.max_objects <= MAX_MAX_OBJECTS:
            raise ConfigError(f"{MAX_OBJECTS_ENV} must be within 1..{MAX_MAX_OBJECTS}, got {self.max_objects}")
        if not self.inbox_queue_url.startswith(("https://", "http://")):
            raise ConfigError(f"INBOX_QUEUE_URL must be the inbox queue's URL, got {self.inbox_queue_url!r}")

    def replace(self, **changes: Any) -> ReconcileSettings:
        settings = ReconcileSettings(**{**asdict(self), **{k: v for k, v in changes.items() if v is not None}})
        settings.check()
        return settings


def _number(var: str, raw: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {kind.__name__}") from None


# -- the inbox ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxVersion:
    """One object version listed in the inbox (list_object_versions)."""

    bucket: str
    key: str
    version_id: str | None  # None where S3 says "null": written while the bucket was unversioned
    etag: str
    size: int
    last_modified: datetime
    is_latest: bool = True

    @classmethod
    def from_listing(cls, bucket: str, entry: Mapping[str, Any]) -> InboxVersion:
        version = entry.get("VersionId")
        return cls(
            bucket=bucket,
            key=entry["Key"],
            version_id=None if version in (None, "", NULL_VERSION) else str(version),
            etag=strip_etag(entry.get("ETag")) or "",
            size=int(entry.get("Size", 0)),
            last_modified=_utc(entry["LastModified"]),
            is_latest=bool(entry.get("IsLatest", True)),
        )

    @property
    def is_folder_marker(self) -> bool:
        return self.key.endswith("/") and self.size == 0

    @property
    def source(self) -> SourceObject:
        """The object as the router names it (its ``source_id`` is the results item's key)."""
        return SourceObject(
            bucket=self.bucket,
            key=self.key,
            version_id=self.version_id,
            etag=self.etag or None,
            size=self.size,
            event_time=event_time(self.last_modified),
        )


@dataclass
class ListingPage:
    versions: list[InboxVersion]
    delete_markers: int


def list_inbox_pages(s3: Any, bucket: str, prefix: str = "") -> Iterator[ListingPage]:
    """Every object version under ``prefix``, one listing page (up to 1000) at a time."""
    params: dict[str, Any] = {"Bucket": bucket}
    if prefix:
        params["Prefix"] = prefix
    for page in s3.get_paginator("list_object_versions").paginate(**params):
        yield ListingPage(
            versions=[InboxVersion.from_listing(bucket, entry) for entry in page.get("Versions", [])],
            delete_markers=len(page.get("DeleteMarkers", [])),
        )


def iter_routable_versions(s3: Any, bucket: str, prefix: str = "") -> Iterator[InboxVersion]:
    """The versions the router would route: delete markers and ``key/`` folder markers left out."""
    for page in list_inbox_pages(s3, bucket, prefix):
        yield from (version for version in page.versions if not version.is_folder_marker)


# -- the notification -----------------------------------------------------------------------------------------


def event_time(moment: datetime) -> str:
    """S3's eventTime format: ``2025-11-21T14:03:27.512Z``."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.") + f"{_utc(moment).microsecond // 1000:03d}Z"


def sequencer(moment: datetime) -> str:
    """An S3-like sequencer (upper-case hex, 18 digits) that grows with the object's write time."""
    return f"{int(_utc(moment).timestamp() * 1_000_000):018X}"


def s3_notification(
    version: InboxVersion,
    *,
    region: str,
    origin: str = "reconciler",
    detail: Mapping[str, Any] | None = None,
    sent_at: datetime | None = None,
) -> dict[str, Any]:
    """The ObjectCreated:Put notification S3 sends for ``version``, plus our ``breedfilter`` marker.

    Keys are URL-encoded as real S3 encodes them (``quote_plus``: spaces as ``+``); ``versionId`` only
    where the bucket versions the object, as S3 does.
    """
    obj: dict[str, Any] = {"key": quote_plus(version.key), "size": version.size, "eTag": version.etag}
    if version.version_id:
        obj["versionId"] = version.version_id
    obj["sequencer"] = sequencer(version.last_modified)
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event_time(version.last_modified),
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": f"breedfilter-{origin}"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": f"breedfilter-{origin}",
            "bucket": {"name": version.bucket, "arn": f"arn:{_partition(region)}:s3:::{version.bucket}"},
            "object": obj,
        },
    }
    marker: dict[str, Any] = {"origin": origin, "sent_at": event_time(sent_at or datetime.now(UTC))}
    marker.update(detail or {})
    return {"Records": [record], ORIGIN_FIELD: marker}


def notification_body(version: InboxVersion, *, region: str, origin: str = "reconciler", **detail: Any) -> str:
    return json.dumps(s3_notification(version, region=region, origin=origin, detail=detail), separators=(",", ":"))


class NotificationSender:
    """Buffer notification bodies and send them to a queue 10 at a time (SendMessageBatch).

    ``send`` returns the entries flushed by this call; ``flush`` sends what is left. Each result is
    ``(tag, error)``: error None when SQS took the message.
    """

    def __init__(self, sqs: Any, queue_url: str):
        self.sqs = sqs
        self.queue_url = queue_url
        self._pending: list[tuple[Any, str]] = []

    def send(self, tag: Any, body: str) -> list[tuple[Any, str | None]]:
        self._pending.append((tag, body))
        return self.flush() if len(self._pending) >= SEND_BATCH_LIMIT else []

    def flush(self) -> list[tuple[Any, str | None]]:
        pending, self._pending = self._pending, []
        results: list[tuple[Any, str | None]] = []
        for start in range(0, len(pending), SEND_BATCH_LIMIT):
            batch = pending[start : start + SEND_BATCH_LIMIT]
            entries = [{"Id": str(i), "MessageBody": body} for i, (_, body) in enumerate(batch)]
            try:
                response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:  # ClientError, EndpointConnectionError...: every entry of the batch failed
                results += [(tag, f"{type(exc).__name__}: {exc}") for tag, _ in batch]
                continue
            failed = {f["Id"]: f"{f.get('Code')}: {f.get('Message', '')}" for f in response.get("Failed", [])}
            results += [(tag, failed.get(str(i))) for i, (tag, _) in enumerate(batch)]
        return results


# -- the results table ----------------------------------------------------------------------------------------


def existing_items(dynamodb: Any, table: str, source_ids: Iterable[str], *, attempts: int = 8) -> set[str]:
    """Which of ``source_ids`` have a results item (BatchGetItem, consistent reads, keys only)."""
    wanted = list(dict.fromkeys(source_ids))
    found: set[str] = set()
    for start in range(0, len(wanted), BATCH_GET_LIMIT):
        request: dict[str, Any] = {
            table: {
                "Keys": [{"pk": {"S": pk}} for pk in wanted[start : start + BATCH_GET_LIMIT]],
                "ProjectionExpression": "pk",
                "ConsistentRead": True,
            }
        }
        for attempt in range(attempts):
            response = dynamodb.batch_get_item(RequestItems=request)
            found |= {item["pk"]["S"] for item in response.get("Responses", {}).get(table, [])}
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off, then ask for the rest
        else:
            raise RuntimeError(f"results table {table}: keys still unprocessed after {attempts} BatchGetItem calls")
    return found


# -- the run --------------------------------------------------------------------------------------------------


@dataclass
class StuckObject:
    source_id: str
    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    last_modified: str
    age_minutes: float
    kind: str = LOST  # lost | leftover
    sent: bool = False
    error: str | None = None


@dataclass
class ReconcileReport:
    bucket: str
    queue_url: str
    grace_minutes: float
    max_objects: int
    dry_run: bool
    started_at: str
    scanned: int = 0  # object versions listed (folder markers included; delete markers apart)
    folder_markers: int = 0
    delete_markers: int = 0
    too_young: int = 0  # within the grace period: their notification may still come
    stuck: list[StuckObject] = field(default_factory=list)
    truncated: bool = False  # more stuck objects than max_objects, or out of time: the next run goes on
    stopped_early: str | None = None

    @property
    def lost(self) -> list[StuckObject]:
        return [s for s in self.stuck if s.kind == LOST]

    @property
    def leftover(self) -> list[StuckObject]:
        return [s for s in self.stuck if s.kind == LEFTOVER]

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.stuck)

    @property
    def failed(self) -> int:
        return sum(s.error is not None for s in self.stuck)

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "queue_url": self.queue_url,
            "grace_minutes": self.grace_minutes,
            "max_objects": self.max_objects,
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "folder_markers": self.folder_markers,
            "delete_markers": self.delete_markers,
            "too_young": self.too_young,
            "stuck": len(self.stuck),
            "lost": len(self.lost),
            "leftover": len(self.leftover),
            "sent": self.sent,
            "failed": self.failed,
            "truncated": self.truncated,
            "stopped_early": self.stopped_early,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary(), "started_at": self.started_at, "objects": [asdict(s) for s in self.stuck]}


class Reconciler:
    """``Reconciler(settings, s3=..., sqs=..., dynamodb=...).run()``: one pass over the inbox.

    Clients default to boto3's (the Lambda's role, or whatever AWS_ENDPOINT_URL points at).
    """

    def __init__(self, settings: ReconcileSettings, *, s3: Any = None, sqs: Any = None, dynamodb: Any = None):
        config = Config(retries={"mode": "standard", "total_max_attempts": 5})
        self.settings = settings
        self.s3 = s3 or boto3.client("s3", config=config)
        self.sqs = sqs or boto3.client("sqs", config=config)
        self.dynamodb = dynamodb or boto3.client("dynamodb", config=config)

    @property
    def region(self) -> str:
        return self.s3.meta.region_name or os.environ.get("AWS_REGION") or "us-east-1"

    def run(
        self,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
        prefix: str = "",
        should_stop: Callable[[], bool] | None = None,
    ) -> ReconcileReport:
        """Find stuck versions (at most ``max_objects``), classify them, and send each a notification.

        ``now`` fixes the clock (tests); ``should_stop`` is asked before each listing page (the Lambda's
        remaining time): when it says so, the run ends there, truncated.
        """
        settings = self.settings
        now = _utc(now or datetime.now(UTC))
        cutoff = now - timedelta(minutes=settings.grace_minutes)
        report = ReconcileReport(
            bucket=settings.inbox_bucket,
            queue_url=settings.inbox_queue_url,
            grace_minutes=settings.grace_minutes,
            max_objects=settings.max_objects,
            dry_run=dry_run,
            started_at=event_time(now),
        )
        candidates = self._find(report, cutoff, prefix, should_stop)
        items = existing_items(self.dynamodb, settings.results_table, (v.source.source_id for v in candidates))
        for version in candidates:
            source = version.source
            report.stuck.append(
                StuckObject(
                    source_id=source.source_id,
                    bucket=version.bucket,
                    key=version.key,
                    version_id=version.version_id,
                    etag=version.etag,
                    size=version.size,
                    last_modified=event_time(version.last_modified),
                    age_minutes=round((now - version.last_modified).total_seconds() / 60.0, 1),
                    kind=LEFTOVER if source.source_id in items else LOST,
                )
            )
        if not dry_run:
            self._send(report, candidates, now)
        return report

    def _find(
        self, report: ReconcileReport, cutoff: datetime, prefix: str, should_stop: Callable[[], bool] | None
    ) -> list[InboxVersion]:
        candidates: list[InboxVersion] = []
        for page in list_inbox_pages(self.s3, self.settings.inbox_bucket, prefix):
            report.delete_markers += page.delete_markers
            for version in page.versions:
                if version.is_folder_marker:
                    report.scanned += 1
                    report.folder_markers += 1
                    continue
                if version.last_modified > cutoff:
                    report.scanned += 1
                    report.too_young += 1
                    continue
                if len(candidates) >= self.settings.max_objects:
                    report.truncated = True  # one more than we may send: the next run takes the rest
                    return candidates
                report.scanned += 1
                candidates.append(version)
            if should_stop is not None and should_stop():
                report.truncated = True
                report.stopped_early = "out of time"
                return candidates
        return candidates

    def _send(self, report: ReconcileReport, candidates: list[InboxVersion], now: datetime) -> None:
        sender = NotificationSender(self.sqs, self.settings.inbox_queue_url)
        by_id = {stuck.source_id: stuck for stuck in report.stuck}
        results: list[tuple[Any, str | None]] = []
        for version in candidates:
            stuck = by_id[version.source.source_id]
            body = json.dumps(
                s3_notification(
                    version,
                    region=self.region,
                    origin="reconciler",
                    detail={"reason": stuck.kind},
                    sent_at=now,
                ),
                separators=(",", ":"),
            )
            results += sender.send(stuck, body)
        results += sender.flush()
        for stuck, error in results:
            stuck.sent, stuck.error = error is None, error


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


if __name__ == "__main__":
    result = Reconciler(ReconcileSettings.from_env()).run(dry_run="--dry-run" in sys.argv[1:])
    print(json.dumps(result.as_dict(), indent=2, default=str))
