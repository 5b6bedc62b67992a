"""Route one inbox object: locate -> decide (once) -> copy -> record -> delete, safe to crash anywhere.

Every step is idempotent and the order is what makes redelivery converge:
- the decision (endpoint call included) is cached by Powertools idempotency, keyed on the source object
  (bucket, key, version id or ETag), so a redelivery after a crash copies under the *same* prefix;
- the copy lands on a name that depends only on the revision and on which revision claimed the readable name
  first (below), so a crash after it and before the record still leaves one copy per revision;
- the results item is a conditional put, written only after the copy exists;
- the inbox object is deleted last, so a crash before it leaves the item, and the redelivery just deletes.
A duplicate notification finds the item and does no work beyond deleting what the event names.

Every revision keeps its own sorted copy. A key is often reused (cameras restart at ``IMG_0001.jpg``): each
upload is its own source, with its own item, and must not overwrite the sorted copy of an earlier one. The
destination is the readable ``<prefix>/<key>`` for the first revision that claims it, and
``<prefix>/<dir>/<stem>~<rev><ext>`` (``<rev>``: 12 hex digits of sha256 of the revision, so a redelivery
computes the same name) when another revision already holds the readable one. The claim is atomic: a
conditional copy (``If-None-Match: *``) succeeds only where the name is free. On 412 the existing copy's
metadata says whose it is: this revision's own (written before a crash, not yet recorded) is kept as is;
another's sends this revision to its revision name, claimed the same way (only a deliberately crafted key could
already hold it: that fails loudly rather than overwrite). Objects over 5 GiB (always rejected) need a
multipart copy, which boto3 cannot make conditional: they HEAD the name first, which leaves a small race
window between two such giants of one key. A readable name rather than always a revision name: the sorted
bucket stays browsable by the user's own file names, and a name never moves once written.

Without a version id in the event (an unversioned inbox, or a notification that lacks it) the source is the
ETag: identical bytes are one source, and "what the event names" is every version of the key holding those
bytes. On a versioned inbox the router finds them by listing the key's versions (the event's bytes may sit
below a newer upload), copies by version id, and deletes exactly those versions: never one holding other
bytes, which their own event routes. On an unversioned inbox, reads, the copy and the delete are conditional
on the ETag; an object overwritten meanwhile is left for its own event.

An event naming a bucket that does not exist fails its record loudly (BucketMissing), so it reaches the DLQ.

    python -m routing.pipeline BUCKET KEY       # from functions/router, with the router's environment set
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.serialization.dataclass import DataclassSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from routing import decision as decisions
from routing.decision import Decision
from routing.endpoint import EndpointClient, EndpointRejected, make_client
from routing.events import SourceObject, SourceRevision, is_folder_marker, strip_etag
from routing.results import ResultsTable, build_item
from routing.settings import Settings
from routing.sniff import SNIFF_BYTES, sniff

logger = Logger(child=True)

SINGLE_COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; larger (rejected) objects take a multipart copy
MAX_METADATA_BYTES = 2000  # S3 allows 2 KB of user metadata
CLAIM_ATTEMPTS = 4  # conditional copies of one name: 409 conflicts and names freed between copy and HEAD
# The copy's metadata that says whose copy it is (S3 returns user metadata keys lower-cased).
OWNER_FIELDS = ("breedfilter-source-bucket", "breedfilter-source-key", "breedfilter-source-revision")


class Superseded(Exception):
    """The key now holds a newer object than the event named (unversioned bucket); its own event routes it."""


class BucketMissing(Exception):
    """The event names a bucket that does not exist: a loud failure (the record goes to the DLQ), never a drop."""

    def __init__(self, bucket: str, role: str = "inbox"):
        super().__init__(f"the {role} bucket {bucket!r} does not exist")
        self.bucket = bucket
        self.role = role


class DestinationTaken(Exception):
    """Both names of a revision hold another source's copy (only a key crafted to collide does that)."""


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
    item: dict[str, Any] | None = None  # the results item (routed, duplicate)
    decision: Decision | None = None  # this invocation's decision (routed)


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
            output_serializer=DataclassSerializer(Decision),  # stored as JSON, handed back as a Decision
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
                self.delete_inbox(source, item.get("source_version_id"))
                return RouteResult("duplicate", item)
            logger.warning("object is gone from the inbox and was never routed", source=source.source_id)
            return RouteResult("gone")
        try:
            decision = self._decide_once(source=source.idempotency_data(), where=located)
            destination = self.place(source, located, decision)
        except Superseded:
            logger.info("inbox key now holds a newer object; its own event routes it", source=source.source_id)
            return RouteResult("superseded")
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
        return RouteResult("routed", item, decision)

    # -- the steps -------------------------------------------------------------------------------------
    def locate(self, source: SourceObject) -> Located | None:
        """HEAD the object the event named; None when it is gone; Superseded when the key was overwritten.

        An event without a version id names the key's bytes (its ETag): the current object when it holds them,
        else, on a versioned inbox, the newest older version that does (a later upload sits above it).
        """
        if source.version_id:
            head = self._head_inbox(source, source.version_id)
            return None if head is None else _located(head, source.version_id)
        head = self._head_inbox(source)
        if head is None:
            return None
        etag = strip_etag(head.get("ETag"))
        if not source.etag or etag == source.etag:
            return _located(head, head.get("VersionId"))
        if head.get("VersionId") is None:  # unversioned: the named bytes were overwritten, and are gone
            raise Superseded(source.source_id)
        for version_id in self.versions_holding(source):
            older = self._head_inbox(source, version_id)
            if older is not None:
                return _located(older, version_id)
        return None  # no version holds these bytes any more: routed by a duplicate meanwhile, or deleted

    def decide(self, source: SourceRevision, where: Located) -> Decision:
        """Sniff, check size, ask the endpoint, and decide. Wrapped by idempotency: runs once per source."""
        settings = self.settings
        if where.size == 0:
            return decisions.reject(decisions.EMPTY, "the object is empty (0 bytes)", size=0)
        by_pointer = where.size > settings.max_image_bytes
        if by_pointer and where.size > settings.max_pointer_image_bytes:
            limit = (
                f"MAX_POINTER_IMAGE_BYTES={settings.max_pointer_image_bytes}"
                if settings.max_pointer_image_bytes
                else f"MAX_IMAGE_BYTES={settings.max_image_bytes} (S3 pointers are off)"
            )
            return decisions.reject(decisions.TOO_LARGE, f"{where.size} bytes exceeds {limit}", size=where.size)
        # a large image is sniffed from its first bytes and classified by S3 pointer: the endpoint reads it
        body = self.read(source.bucket, source.key, where, first_bytes=SNIFF_BYTES if by_pointer else None)
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
            if by_pointer:
                prediction = self.endpoint.classify_s3(
                    source.bucket, source.key, version_id=where.version_id, etag=where.etag
                )
            else:
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

    def read(self, bucket: str, key: str, where: Located, first_bytes: int | None = None) -> bytes:
        """The revision's bytes (or only its first ``first_bytes``); Superseded when the key's bytes changed."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if first_bytes is not None:
            params["Range"] = f"bytes=0-{first_bytes - 1}"
        if where.version_id:
            params["VersionId"] = where.version_id
        if _mutable(where.version_id) and where.etag:
            params["IfMatch"] = f'"{where.etag}"'
        try:
            return self.s3.get_object(**params)["Body"].read()
        except ClientError as exc:
            _raise_if_no_bucket(exc, bucket)
            if _status(exc) == 412:
                raise Superseded(f"s3://{bucket}/{key}") from exc
            raise

    def place(self, source: SourceObject, where: Located, decision: Decision) -> str:
        """Copy the revision into the sorted bucket and return the key it landed on: the readable name if this
        revision holds it or can claim it, else its own revision name (see the module docstring)."""
        readable = decisions.destination_key(decision.prefix, source.key)
        own = decisions.destination_key(decision.prefix, source.key, revision=source.revision)
        for name in (readable, own):
            if self._claim(source, where, decision, name):
                return name
            logger.info("sorted name holds another revision's copy", destination=name, source=source.source_id)
        raise DestinationTaken(f"{readable} and {own} both hold copies of other sources; {source.source_id} not copied")

    def _claim(self, source: SourceObject, where: Located, decision: Decision, name: str) -> bool:
        """True once ``name`` holds this revision's copy (written now, or by an attempt that crashed before
        recording it); False when it holds another source's copy."""
        for attempt in range(CLAIM_ATTEMPTS):
            if where.size > SINGLE_COPY_LIMIT:  # multipart: not conditional, so look first (a race window)
                owner = self.copy_owner(name)
                if owner is None:
                    self.copy(source, where, decision, name)
                    return True
                return _is_own_copy(owner, source)
            try:
                self.copy(source, where, decision, name, if_absent=True)
                return True
            except ClientError as exc:
                if _code(exc) == "ConditionalRequestConflict":  # a concurrent write of this name: try again
                    time.sleep(0.05 * 2**attempt)
                    continue
                if _status(exc) != 412:
                    raise
                if "copy-source" in str(exc.response.get("Error", {}).get("Condition", "")).lower():
                    raise Superseded(source.source_id) from exc  # the unversioned source's ETag changed
            owner = self.copy_owner(name)
            if owner is not None:
                return _is_own_copy(owner, source)
            # 412 but nothing there: the name was freed meanwhile, or (unversioned, where S3 does not say which
            # condition failed) the source changed; the next attempt tells.
        if _mutable(where.version_id):
            raise Superseded(source.source_id)
        raise RuntimeError(f"could not claim s3://{self.settings.sorted_bucket}/{name} in {CLAIM_ATTEMPTS} attempts")

    def copy(
        self,
        source: SourceObject,
        where: Located,
        decision: Decision,
        destination: str,
        *,
        if_absent: bool = False,
    ) -> None:
        """Copy exactly the located revision to ``destination``; ``if_absent``: only if the name is free (412)."""
        copy_source = {"Bucket": source.bucket, "Key": source.key}
        extra: dict[str, Any] = {
            "MetadataDirective": "REPLACE",
            "Metadata": object_metadata(source, decision, version_id=where.version_id),
        }
        if where.content_type:
            extra["ContentType"] = where.content_type
        if where.version_id:
            copy_source["VersionId"] = where.version_id
        if _mutable(where.version_id) and where.etag:
            extra["CopySourceIfMatch"] = f'"{where.etag}"'
        try:
            if where.size <= SINGLE_COPY_LIMIT:
                if if_absent:
                    extra["IfNoneMatch"] = "*"
                self.s3.copy_object(
                    CopySource=copy_source, Bucket=self.settings.sorted_bucket, Key=destination, **extra
                )
            else:
                self.s3.copy(copy_source, self.settings.sorted_bucket, destination, ExtraArgs=extra)
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                named = exc.response.get("Error", {}).get("BucketName")
                role = "sorted" if named == self.settings.sorted_bucket else "inbox"
                raise BucketMissing(named or source.bucket, role if named else "inbox or sorted") from exc
            raise

    def copy_owner(self, name: str) -> dict[str, str] | None:
        """The metadata of the sorted copy at ``name``, or None when there is none."""
        try:
            return self.s3.head_object(Bucket=self.settings.sorted_bucket, Key=name).get("Metadata", {})
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise

    def delete_inbox(self, source: SourceObject, version_id: str | None) -> None:
        """Delete exactly what the event names, once it is routed.

        - the event's version id: that version;
        - an ETag on a versioned inbox (``version_id``: the version routed, so the bucket is versioned): that
          version and every other version of the key holding the same bytes (all one source), never one
          holding other bytes;
        - an ETag on an unversioned inbox: the object, only if it still has that ETag.
        """
        if source.version_id:
            self._delete(source, VersionId=source.version_id)
            return
        if version_id is None:
            if source.etag:
                self._delete(source, IfMatch=f'"{source.etag}"')
            return
        if not _mutable(version_id):
            self._delete(source, VersionId=version_id)  # a version's bytes never change: these are the routed ones
        for other in list(self.versions_holding(source)):  # listed in full before deleting any
            if other != version_id or _mutable(other):  # "null" is rewritten in place: only as listed just now
                self._delete(source, VersionId=other)

    def versions_holding(self, source: SourceObject) -> Iterator[str]:
        """Version ids of the source's key whose ETag is the source's, newest first (delete markers aside)."""
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=source.bucket, Prefix=source.key)
        try:
            for page in pages:
                for version in page.get("Versions", []):
                    if version["Key"] != source.key:
                        if version["Key"] > source.key:
                            return  # keys come sorted: the ones below are longer keys with this prefix
                        continue
                    if strip_etag(version.get("ETag")) == source.etag:
                        yield version["VersionId"]
        except ClientError as exc:
            _raise_if_no_bucket(exc, source.bucket)
            raise

    def _delete(self, source: SourceObject, **condition: str) -> None:
        try:
            self.s3.delete_object(Bucket=source.bucket, Key=source.key, **condition)
        except ClientError as exc:
            _raise_if_no_bucket(exc, source.bucket)
            status = _status(exc)
            if status == 404:
                return  # already deleted
            if status == 412:
                logger.info("inbox key was overwritten after routing; leaving the newer object", key=source.key)
                return
            raise

    def _head_inbox(self, source: SourceObject, version_id: str | None = None) -> dict[str, Any] | None:
        """HEAD in the inbox; None for a missing key, version or a delete marker; BucketMissing for no bucket."""
        params = {"Bucket": source.bucket, "Key": source.key}
        if version_id:
            params["VersionId"] = version_id
        try:
            return self.s3.head_object(**params)
        except ClientError as exc:
            _raise_if_no_bucket(exc, source.bucket)
            if _status(exc) in (404, 405):  # missing, or a delete marker; a HEAD's 404 may be the bucket's
                self._require_bucket(source.bucket)
                return None
            raise

    def _require_bucket(self, bucket: str) -> None:
        """S3 answers a HEAD on a missing bucket with a bare 404, like a missing key: ask the bucket itself."""
        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) == "NoSuchBucket":
                raise BucketMissing(bucket) from exc
            raise


def _located(head: dict[str, Any], version_id: str | None) -> Located:
    return Located(
        version_id=version_id,
        etag=strip_etag(head.get("ETag")),
        size=int(head["ContentLength"]),
        content_type=head.get("ContentType"),
    )


def _mutable(version_id: str | None) -> bool:
    """No version id (unversioned) or "null" (versioning suspended): the key's bytes may be replaced in place,
    so reads, copies and deletes must check the ETag. A real version id's bytes never change."""
    return version_id is None or version_id == "null"


def object_metadata(source: SourceObject, decision: Decision, *, version_id: str | None = None) -> dict[str, str]:
    """The decision on the sorted copy, ASCII-safe (S3 metadata is sent as HTTP headers), within 2 KB. The
    source fields say whose copy it is (place() reads them back to recognise its own copy after a crash)."""
    meta = {
        "breedfilter-status": decision.status,
        "breedfilter-label": decision.shown_label or "",
        "breedfilter-confidence": _text(decision.confidence),
        "breedfilter-reason": decision.reason or "",
        "breedfilter-known": _flag(decision.known),
        "breedfilter-unknown-score": _text(decision.unknown_score),
        "breedfilter-threshold": _text(decision.threshold),
        "breedfilter-threshold-source": decision.threshold_source or "",
        "breedfilter-model-version": decision.model_version or "",
    }
    meta = {k: _header_safe(v) for k, v in meta.items() if v} | owner_metadata(source, version_id)
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_METADATA_BYTES:
        del meta["breedfilter-source-key"]  # a very long unicode key: the results item keeps it whole
    return meta


def owner_metadata(source: SourceObject, version_id: str | None = None) -> dict[str, str]:
    """The sorted copy's metadata that says whose copy it is (OWNER_FIELDS, and the version routed)."""
    meta = {
        "breedfilter-source-bucket": source.bucket,
        "breedfilter-source-revision": source.revision,
        "breedfilter-source-version-id": version_id or "",
        "breedfilter-source-key": source.key,
    }
    return {k: _header_safe(v) for k, v in meta.items() if v}


def _is_own_copy(found: dict[str, str], source: SourceObject) -> bool:
    """Whether a sorted copy's metadata names this source: its revision, and its bucket and key where the copy
    carries them (a very long key is left out of the metadata; copies from before the bucket was recorded)."""
    expected = owner_metadata(source)
    if found.get("breedfilter-source-revision") != expected["breedfilter-source-revision"]:
        return False
    return all(found[k] == expected[k] for k in OWNER_FIELDS if k in found and k in expected)


def _header_safe(value: Any) -> str:
    return quote(str(value), safe=" /:.,()-_")


def _text(value: float | None) -> str:
    """A decision's number as metadata text, empty (left out) when the decision has none."""
    return "" if value is None else str(value)


def _flag(value: bool | None) -> str:
    """``true``/``false`` for a decision's boolean, empty (left out) when the decision has none."""
    return "" if value is None else str(bool(value)).lower()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    named = {"NoSuchKey": 404, "NotFound": 404, "NoSuchVersion": 404, "PreconditionFailed": 412}
    return named.get(_code(exc)) or int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _raise_if_no_bucket(exc: ClientError, bucket: str) -> None:
    if _code(exc) == "NoSuchBucket":
        raise BucketMissing(bucket) from exc


if __name__ == "__main__":
    result = Router(Settings.from_env()).route(SourceObject(bucket=sys.argv[1], key=sys.argv[2]))
    print(result)
