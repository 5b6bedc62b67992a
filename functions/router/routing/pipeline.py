"""Route one inbox object: locate -> decide (once) -> copy -> record -> delete, safe to crash anywhere.

Every step is idempotent and the order is what makes redelivery converge:
- the decision (endpoint call included) is cached by Powertools idempotency, keyed on the source object
  (bucket, key, version id or ETag), so a redelivery after a crash copies to the *same* destination;
- the copy overwrites the same key, so a crash after it and before the record leaves one copy;
- the results item is a conditional put, written only after the copy exists;
- the inbox object is deleted last, so a crash before it leaves the item, and the redelivery just deletes.
A duplicate notification finds the item and does no work beyond the (no-op) delete.

    python -m routing.pipeline BUCKET KEY       # from functions/router, with the router's environment set
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from botocore.config import Config
from botocore.exceptions import ClientError

from routing import decision as decisions
from routing.endpoint import EndpointClient, EndpointRejected, make_client
from routing.events import SourceObject, is_folder_marker, strip_etag
from routing.results import ResultsTable, build_item
from routing.settings import Settings
from routing.sniff import SNIFF_BYTES, sniff

logger = Logger(child=True)

SINGLE_COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; larger (rejected) objects take a multipart copy
MAX_METADATA_BYTES = 2000  # S3 allows 2 KB of user metadata


class Superseded(Exception):
    """The key now holds a newer object than the event named (unversioned bucket); its own event routes it."""


@dataclass(frozen=True)
class Located:
    """The inbox object as it is now: what HEAD says."""

    version_id: str | None
    etag: str | None
    size: int
    content_type: str | None


@dataclass(frozen=True)
class RouteResult:
    outcome: str  # routed | duplicate | gone | superseded | folder
    item: dict[str, Any] | None = None


class Router:
    def __init__(
        self,
        settings: Settings,
        *,
        s3: Any = None,
        results: ResultsTable | None = None,
        endpoint: EndpointClient | None = None,
        persistence: DynamoDBPersistenceLayer | None = None,
    ):
        self.settings = settings
        self.s3 = s3 or boto3.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 5}))
        self.results = results or ResultsTable(settings.results_table)
        self.endpoint = endpoint or EndpointClient(
            make_client(settings.endpoint_timeout_seconds, settings.endpoint_max_attempts),
            settings.endpoint_name,
        )
        self.idempotency_config = IdempotencyConfig(expires_after_seconds=settings.idempotency_ttl_seconds)
        self._decide_once = idempotent_function(
            data_keyword_argument="source",
            persistence_store=persistence or DynamoDBPersistenceLayer(table_name=settings.idempotency_table),
            config=self.idempotency_config,
        )(self.decide)

    # -- the whole route ------------------------------------------------------------------------------
    def route(self, source: SourceObject) -> RouteResult:
        if is_folder_marker(source):
            return RouteResult("folder")
        item = self.results.get(source.source_id)
        if item is not None:  # decided before: a duplicate, or a redelivery after a crash before delete
            self.delete_inbox(source, item.get("source_version_id"))
            return RouteResult("duplicate", item)
        try:
            located = self.locate(source)
        except Superseded:
            logger.info("inbox key now holds a newer object; its own event routes it", source=source.source_id)
            return RouteResult("superseded")
        if located is None:
            item = self.results.get(source.source_id)  # a concurrent duplicate may have just finished
            if item is not None:
                return RouteResult("duplicate", item)
            logger.warning("object is gone from the inbox and was never routed", source=source.source_id)
            return RouteResult("gone")
        try:
            decision = self._decide_once(source=source.idempotency_data(), located=asdict(located))
        except Superseded:
            return RouteResult("superseded")
        destination = decisions.destination_key(decision["prefix"], source.key)
        self.copy(source, located, decision, destination)
        item = build_item(
            source,
            decision,
            version_id=located.version_id,
            destination_bucket=self.settings.sorted_bucket,
            destination_key=destination,
        )
        if not self.results.put_once(item):
            item = self.results.get(source.source_id) or item
        self.delete_inbox(source, located.version_id)
        return RouteResult("routed", item)

    # -- the steps -------------------------------------------------------------------------------------
    def locate(self, source: SourceObject) -> Located | None:
        """HEAD the object the event named; None when it is gone; Superseded when the key was overwritten."""
        params = {"Bucket": source.bucket, "Key": source.key}
        if source.version_id:
            params["VersionId"] = source.version_id
        try:
            head = self.s3.head_object(**params)
        except ClientError as exc:
            if _status(exc) in (404, 405):  # missing, or a delete marker
                return None
            raise
        etag = strip_etag(head.get("ETag"))
        if not source.version_id and source.etag and etag != source.etag:
            raise Superseded(source.source_id)
        return Located(
            version_id=source.version_id or head.get("VersionId"),
            etag=etag,
            size=int(head["ContentLength"]),
            content_type=head.get("ContentType"),
        )

    def decide(self, source: dict[str, str], located: dict[str, Any]) -> dict[str, Any]:
        """Sniff, check size, ask the endpoint, and decide. Wrapped by idempotency: runs once per source."""
        where = Located(**located)
        settings = self.settings
        if where.size == 0:
            return decisions.reject(decisions.EMPTY, "the object is empty (0 bytes)", size=0)
        if where.size > settings.max_image_bytes:
            return decisions.reject(
                decisions.TOO_LARGE,
                f"{where.size} bytes exceeds MAX_IMAGE_BYTES={settings.max_image_bytes}",
                size=where.size,
            )
        body = self.read(source["bucket"], source["key"], where)
        sniffed = sniff(body[:SNIFF_BYTES])
        if sniffed is None:
            return decisions.reject(
                decisions.NOT_AN_IMAGE,
                f"content starts with {body[:8].hex(' ')}, which is no known image format",
                size=where.size,
            )
        if not sniffed.supported:
            return decisions.reject(
                decisions.UNSUPPORTED_FORMAT,
                f"{sniffed.format} images are not supported; convert to JPEG, PNG or WebP",
                size=where.size,
                sniffed=sniffed,
            )
        try:
            prediction = self.endpoint.classify(body, sniffed.content_type)
        except EndpointRejected as exc:
            return decisions.reject(decisions.MODEL_REJECTED, exc.reason, size=where.size, sniffed=sniffed)
        return decisions.from_prediction(
            prediction,
            threshold=settings.confidence_threshold,
            top_k=settings.top_k,
            size=where.size,
            sniffed=sniffed,
        )

    def read(self, bucket: str, key: str, where: Located) -> bytes:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if where.version_id:
            params["VersionId"] = where.version_id
        elif where.etag:
            params["IfMatch"] = f'"{where.etag}"'
        try:
            return self.s3.get_object(**params)["Body"].read()
        except ClientError as exc:
            if _status(exc) == 412:
                raise Superseded(f"s3://{bucket}/{key}") from exc
            raise

    def copy(self, source: SourceObject, where: Located, decision: dict[str, Any], destination: str) -> None:
        copy_source = {"Bucket": source.bucket, "Key": source.key}
        extra: dict[str, Any] = {
            "MetadataDirective": "REPLACE",
            "Metadata": object_metadata(source, decision),
        }
        if where.content_type:
            extra["ContentType"] = where.content_type
        if where.version_id:
            copy_source["VersionId"] = where.version_id
        elif where.etag:
            extra["CopySourceIfMatch"] = f'"{where.etag}"'
        if where.size <= SINGLE_COPY_LIMIT:
            self.s3.copy_object(CopySource=copy_source, Bucket=self.settings.sorted_bucket, Key=destination, **extra)
        else:
            self.s3.copy(copy_source, self.settings.sorted_bucket, destination, ExtraArgs=extra)

    def delete_inbox(self, source: SourceObject, version_id: str | None) -> None:
        """Delete exactly the routed revision: by version id, or only if the ETag still matches."""
        params: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key}
        if version_id:
            params["VersionId"] = version_id
        elif source.etag:
            params["IfMatch"] = f'"{source.etag}"'
        try:
            self.s3.delete_object(**params)
        except ClientError as exc:
            status = _status(exc)
            if status == 404:
                return  # already deleted
            if status == 412:
                logger.info("inbox key was overwritten after routing; leaving the newer object", key=source.key)
                return
            raise


def object_metadata(source: SourceObject, decision: dict[str, Any]) -> dict[str, str]:
    """The decision on the sorted copy, ASCII-safe (S3 metadata is sent as HTTP headers), within 2 KB."""
    meta = {
        "breedfilter-status": decision["status"],
        "breedfilter-label": decision.get("label") or decision.get("top_label") or "",
        "breedfilter-confidence": str(decision.get("confidence", "")),
        "breedfilter-reason": decision.get("reason", ""),
        "breedfilter-known": _flag(decision.get("known")),
        "breedfilter-unknown-score": str(decision.get("unknown_score", "")),
        "breedfilter-threshold": str(decision.get("threshold", "")),
        "breedfilter-threshold-source": decision.get("threshold_source", ""),
        "breedfilter-model-version": decision.get("model_version", ""),
        "breedfilter-source-revision": source.revision,
        "breedfilter-source-key": source.key,
    }
    meta = {k: quote(str(v), safe=" /:.,()-_") for k, v in meta.items() if v}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_METADATA_BYTES:
        del meta["breedfilter-source-key"]  # a very long unicode key: the results item keeps it whole
    return meta


def _flag(value: bool | None) -> str:
    """``true``/``false`` for a decision's boolean, empty (left out) when the decision has none."""
    return "" if value is None else str(bool(value)).lower()


def _status(exc: ClientError) -> int:
    code = exc.response.get("Error", {}).get("Code", "")
    named = {"NoSuchKey": 404, "NotFound": 404, "NoSuchVersion": 404, "PreconditionFailed": 412}
    return named.get(code) or int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


if __name__ == "__main__":
    result = Router(Settings.from_env()).route(SourceObject(bucket=sys.argv[1], key=sys.argv[2]))
    print(result)
