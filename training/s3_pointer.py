"""An image by S3 pointer, for photos larger than a request body may be (InvokeEndpoint takes 6 MB, serverless 4).

The router sends ``{"s3_uri": "s3://bucket/key", "version_id": "..."}`` (or ``"etag"`` for an unversioned
bucket) as ``application/json``; the endpoint reads exactly that revision with its own role (template.yaml
lets it read the inbox) and classifies it like a body. The size is capped before anything is read
(``BREEDFILTER_MAX_POINTER_IMAGE_BYTES``, default 50 MiB); decoding keeps its pixel and decompression-bomb
limits. A missing object is a 404, a changed one a 412, a too large one a 413; a role that may not read the
object is a 500 (the router retries, then the dead-letter queue: the photo is never rejected for it).

    python s3_pointer.py s3://bucket/key     # from the artifact's code/: prints the object's size
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

MAX_BYTES_VARIABLE = "BREEDFILTER_MAX_POINTER_IMAGE_BYTES"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "404"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled"}
_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


class PointerError(Exception):
    """The pointer cannot be followed: ``status`` is the HTTP status the endpoint answers."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_pointer(payload: Any) -> bool:
    return isinstance(payload, dict) and "s3_uri" in payload


def parse(payload: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    """(bucket, key, version_id, etag) from a pointer; the key is taken as written (no URL decoding)."""
    uri = payload.get("s3_uri")
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise PointerError(400, f"s3_uri must be a string s3://bucket/key, got {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise PointerError(400, f"s3_uri names no object: {uri!r}")
    version_id, etag = payload.get("version_id"), payload.get("etag")
    for name, value in (("version_id", version_id), ("etag", etag)):
        if value is not None and not isinstance(value, str):
            raise PointerError(400, f"{name} must be a string, got {type(value).__name__}")
    unknown = sorted(set(payload) - {"s3_uri", "version_id", "etag"})
    if unknown:
        raise PointerError(400, f"unknown field(s) in the S3 pointer: {', '.join(unknown)}")
    return bucket, key, version_id, etag


def max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_VARIABLE, "").strip()
    try:
        return int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        raise PointerError(500, f"{MAX_BYTES_VARIABLE}={raw!r} is not a number of bytes") from None


def read(payload: dict[str, Any], client: Any = None) -> bytes:
    """The bytes the pointer names, at most ``max_bytes()`` of them."""
    bucket, key, version_id, etag = parse(payload)
    limit = max_bytes()
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    if etag:
        params["IfMatch"] = f'"{etag.strip(chr(34))}"'
    uri = f"s3://{bucket}/{key}"
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = (client or _client()).get_object(**params)
        size = int(response.get("ContentLength") or 0)
        if size > limit:
            response["Body"].close()
            raise PointerError(413, f"{uri} is {size} bytes, over the endpoint's limit of {limit}")
        data = response["Body"].read(limit + 1)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _NOT_FOUND or status == 404:
            raise PointerError(404, f"{uri}: no such object or version ({code})") from None
        if code == "PreconditionFailed" or status == 412:
            raise PointerError(412, f"{uri} no longer holds the bytes with ETag {etag}") from None
        if code == "InvalidObjectState":  # S3 answers 403 for an archived object too: not the role's fault
            raise PointerError(500, f"{uri} is archived (Glacier); restore it to classify it") from None
        if code in _DENIED or status == 403:
            raise PointerError(500, f"the endpoint's role may not read {uri} ({code}): grant it s3:GetObject") from None
        raise PointerError(502, f"reading {uri} failed: {code or exc}") from None
    except BotoCoreError as exc:
        raise PointerError(503, f"reading {uri} failed: {exc}") from None
    if len(data) > limit:
        raise PointerError(413, f"{uri} is over the endpoint's limit of {limit} bytes")
    return data


def _client() -> Any:
    """One S3 client per endpoint configuration (``AWS_ENDPOINT_URL[_S3]`` points a local twin at moto)."""
    import boto3
    from botocore.config import Config

    key = (os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 3}))
        return _clients[key]


if __name__ == "__main__":
    print(len(read({"s3_uri": sys.argv[1]})), "bytes")
