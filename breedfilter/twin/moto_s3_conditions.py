"""Make moto's S3 honour the CopyObject conditions the router relies on, as S3 does.

moto 5.2.5 ignores two CopyObject headers that S3 honours:
- ``If-None-Match: *``: copy only if the *destination* key does not exist (S3's conditional writes), else 412.
  The router claims a sorted name with it, so a second revision of a key can never overwrite the first's copy.
- ``x-amz-copy-source-if-match``: copy only if the *source* still has that ETag, else 412. The router copies
  from an unversioned inbox with it, so an object overwritten meanwhile is never copied under the old decision.

``install()`` patches moto's S3 request handler in this process (in-process ``mock_aws`` and a
``ThreadedMotoServer`` alike); it is idempotent. The tests install it (tests/conftest.py); the local twin should
too, before it starts moto's server, so that it behaves as S3 does.

    python -m breedfilter.twin.moto_s3_conditions      # installs it and shows a refused copy
"""

from __future__ import annotations

from typing import Any

_MARK = "_breedfilter_conditions"


def install() -> None:
    from moto.s3.exceptions import PreconditionFailed
    from moto.s3.responses import S3Response

    original = S3Response.copy_object
    if getattr(original, _MARK, False):
        return

    def copy_object(self: Any) -> Any:
        bucket, key = self.bucket_name, self.parse_key_name()
        if self.headers.get("If-None-Match") == "*" and self.backend.get_object(bucket, key) is not None:
            raise PreconditionFailed("If-None-Match")
        wanted = self.headers.get("x-amz-copy-source-if-match")
        if wanted:
            found = _copy_source(self)
            if found is not None and wanted.strip('"') != found.etag.strip('"'):
                raise PreconditionFailed("x-amz-copy-source-If-Match")
        return original(self)

    setattr(copy_object, _MARK, True)
    S3Response.copy_object = copy_object


def _copy_source(response: Any) -> Any:
    """The object named by ``x-amz-copy-source`` (None when missing: moto's own copy answers that)."""
    from urllib.parse import parse_qs, unquote, urlparse

    header = response.headers.get("x-amz-copy-source")
    if isinstance(header, bytes):
        header = header.decode("utf-8")
    parsed = urlparse(header)
    bucket, key = unquote(parsed.path).lstrip("/").split("/", 1)
    version_id = parse_qs(parsed.query).get("versionId", [None])[0]
    try:
        return response.backend.get_object(bucket, key, version_id=version_id)
    except Exception:  # a missing bucket or version: moto's own copy raises the right error
        return None


if __name__ == "__main__":
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    install()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="example-bucket")
        s3.put_object(Bucket="example-bucket", Key="a", Body=b"a")
        s3.put_object(Bucket="example-bucket", Key="b", Body=b"b")
        try:
            s3.copy_object(CopySource={"Bucket": "example-bucket", "Key": "a"}, Bucket="example-bucket", Key="b",
                           IfNoneMatch="*")  # fmt: skip
        except ClientError as exc:
            print(exc.response["Error"])
