"""Upload a local dataset directory to an S3 prefix for SageMaker training, skipping unchanged files.

    breedfilter data upload DIR s3://BUCKET/PREFIX [--workers 8] [--dry-run]
    python -m breedfilter.data_upload DIR s3://BUCKET/PREFIX

DIR is normally an ImageFolder tree (``DIR/{train,valid,test}/<class folder>/<images>``, the layout
``training/train.py`` reads), but any directory tree is uploaded: ``DIR/a/b.jpg`` becomes
``s3://BUCKET/PREFIX/a/b.jpg``. Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``),
symlinks that point outside DIR, and anything that is not a regular file are left out and counted.

Files are uploaded concurrently (``--workers``) with boto3's managed transfer (multipart above the
8 MiB chunk size) and botocore's standard retries. Each object gets the file's SHA-256 in its user
metadata (``x-amz-meta-sha256``). A file is skipped as unchanged when an object of the same size
exists under the key and either its listed ETag equals the ETag computed locally (the MD5, or for
multipart uploads the MD5 of the part MD5s plus ``-N``, with the same part size) or, when the ETag is
no MD5 (SSE-KMS) or came from other part sizes, its ``sha256`` metadata matches (one HEAD request).
So a second run uploads nothing, and a run that failed part-way resumes where it stopped.

Credentials and endpoints come from the usual places (``aws configure``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL_S3``...). Exit status: 0 when every file is in place, 1 when a file failed or S3
refused (missing bucket, no credentials, access denied), 2 for a bad DIR or destination.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from s3transfer.utils import ChunksizeAdjuster

from breedfilter.arguments import positive_int
from breedfilter.aws_hints import CREDENTIALS_HINT, NO_CREDENTIALS

DEFAULT_WORKERS = 8
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
PART_CONCURRENCY = 4  # threads per multipart file, on top of the file workers
READ_BLOCK = 1024 * 1024
MAX_FAILURES_SHOWN = 20
SHA256_METADATA = "sha256"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

CREDENTIAL_ERROR_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidToken",
}
ACCESS_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}

T = TypeVar("T")
R = TypeVar("R")


class UploadError(Exception):
    """A problem that stops the whole upload (bad arguments, missing bucket, no credentials...)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class UploadReport:
    """What a run did. In a dry run ``uploaded`` and ``bytes_uploaded`` are what *would* be uploaded."""

    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    ignored: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    bytes_uploaded: int = 0
    destination: str = ""
    dry_run: bool = False
    remote_only: list[str] = field(default_factory=list)  # objects under the prefix with no local file

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str  # relative to DIR, "/"-separated
    size: int


@dataclass(frozen=True)
class RemoteObject:
    size: int
    etag: str


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    etag: str  # the ETag S3 gives this file when uploaded with our TransferConfig (SSE-S3)


@dataclass
class ScanResult:
    files: list[LocalFile] = field(default_factory=list)
    ignored: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    file: LocalFile
    upload: bool
    sha256: str = ""
    error: str = ""


# --- destination and local tree --------------------------------------------------------------------


def parse_destination(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``; ``s3://bucket`` -> ``("bucket", "")``."""
    if not uri.startswith("s3://"):
        raise UploadError(f"destination must look like s3://BUCKET[/PREFIX], got {uri!r}", exit_code=2)
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise UploadError(
            f"{uri!r}: {bucket!r} is not a valid S3 bucket name (3-63 characters: a-z 0-9 . -)", exit_code=2
        )
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise UploadError(f"{uri!r}: the prefix has an empty path segment ('//')", exit_code=2)
    return bucket, prefix


def destination_uri(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def object_key(prefix: str, relative_key: str) -> str:
    return f"{prefix}/{relative_key}" if prefix else relative_key


def check_source(source: Path) -> Path:
    if not source.exists():
        raise UploadError(f"no such directory: {source}", exit_code=2)
    if not source.is_dir():
        raise UploadError(f"not a directory: {source}", exit_code=2)
    return source.resolve()


def looks_like_imagefolder(source: Path) -> bool:
    """True when DIR has a train/ folder (matched case-insensitively, as training/imagefolder.py does)."""
    try:
        return any(child.is_dir() and child.name.lower() == "train" for child in source.iterdir())
    except OSError:
        return False


def scan_tree(root: Path) -> ScanResult:
    """Every regular file under ``root`` (resolved), hidden entries and outside symlinks left out and counted."""
    result = ScanResult()
    _scan_directory(root, root, PurePosixPath(), frozenset({root}), result)
    result.files.sort(key=lambda item: item.key)
    return result


def _scan_directory(
    root: Path, directory: Path, relative: PurePosixPath, ancestors: frozenset[Path], result: ScanResult
) -> None:
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        result.unreadable[f"{relative.as_posix()}/"] = f"cannot list directory: {exc.strerror or exc}"
        return
    for entry in entries:
        if entry.name.startswith("."):
            result.ignored += 1
            continue
        _scan_entry(root, entry, relative / entry.name, ancestors, directory, result)


def _scan_entry(
    root: Path,
    entry: os.DirEntry[str],
    relative: PurePosixPath,
    ancestors: frozenset[Path],
    directory: Path,
    result: ScanResult,
) -> None:
    path = Path(entry.path)
    if entry.is_symlink():
        real = path.resolve()
        if not real.exists() or not real.is_relative_to(root) or real in ancestors:
            result.ignored += 1  # broken, pointing outside DIR, or a loop
            return
    else:
        real = directory / entry.name
    try:
        if real.is_dir():
            _scan_directory(root, real, relative, ancestors | {real}, result)
        elif real.is_file():
            result.files.append(LocalFile(path, relative.as_posix(), real.stat().st_size))
        else:
            result.ignored += 1  # sockets, FIFOs, devices
    except OSError as exc:
        result.unreadable[relative.as_posix()] = exc.strerror or str(exc)


# --- checksums ---------------------------------------------------------------------------------------


def transfer_config(chunk_size: int) -> TransferConfig:
    return TransferConfig(
        multipart_threshold=chunk_size,
        multipart_chunksize=chunk_size,
        max_concurrency=PART_CONCURRENCY,
        use_threads=True,
        preferred_transfer_client="classic",  # the part sizes below are the classic transfer manager's
    )


def hash_file(path: Path, size: int, chunk_size: int, on_bytes: Callable[[int], None] | None = None) -> FileDigest:
    """SHA-256 and expected S3 ETag of a file, in one streaming pass.

    boto3 uploads in one PutObject below ``chunk_size`` (ETag = MD5) and in parts from ``chunk_size`` on,
    with the part size s3transfer adjusts to S3's limits (ETag = MD5 of the part MD5s, ``-N``).
    """
    multipart = size >= chunk_size
    part_size = ChunksizeAdjuster().adjust_chunksize(chunk_size, size) if multipart else max(size, 1)
    sha = hashlib.sha256()
    part = hashlib.md5(usedforsecurity=False)
    part_digests: list[bytes] = []
    filled = 0
    with path.open("rb") as stream:
        while block := stream.read(min(READ_BLOCK, part_size - filled)):
            sha.update(block)
            part.update(block)
            filled += len(block)
            if on_bytes:
                on_bytes(len(block))
            if filled == part_size:
                part_digests.append(part.digest())
                part, filled = hashlib.md5(usedforsecurity=False), 0
    if filled or not part_digests:
        part_digests.append(part.digest())
    if not multipart:
        etag = part_digests[0].hex()
    else:
        combined = hashlib.md5(b"".join(part_digests), usedforsecurity=False).hexdigest()
        etag = f"{combined}-{len(part_digests)}"
    return FileDigest(sha.hexdigest(), etag)


# --- S3 ------------------------------------------------------------------------------------------------


def make_s3_client(workers: int = DEFAULT_WORKERS) -> Any:
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max(10, workers * PART_CONCURRENCY),
    )
    try:
        return boto3.session.Session().client("s3", config=config)
    except ProfileNotFound as exc:
        raise UploadError(f"{exc}; {CREDENTIALS_HINT}") from exc


def describe_error(exc: BaseException) -> str:
    """One line for a failed file: ``AccessDenied: Access Denied`` rather than a traceback."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '') or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def s3_failure(exc: Exception, bucket: str, uri: str) -> UploadError:
    """The whole-run error for a request that failed before any upload (listing the destination)."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UploadError(NO_CREDENTIALS)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return UploadError(
                f"bucket {bucket!r} does not exist (check the name, or create it: aws s3 mb s3://{bucket})"
            )
        if code in ACCESS_DENIED_CODES:
            return UploadError(
                f"access denied to {uri}: these credentials need s3:ListBucket on the bucket and "
                f"s3:PutObject and s3:GetObject on the prefix (see who you are: aws sts get-caller-identity)"
            )
        if code in CREDENTIAL_ERROR_CODES:
            return UploadError(f"AWS rejected the credentials ({describe_error(exc)}): {CREDENTIALS_HINT}")
        return UploadError(f"S3 refused listing {uri}: {describe_error(exc)}")
    return UploadError(f"could not reach S3 for {uri}: {describe_error(exc)}")


def list_remote(s3: Any, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Objects under ``prefix/`` (every object when there is no prefix), by key: size and unquoted ETag."""
    list_prefix = f"{prefix}/" if prefix else ""
    remote: dict[str, RemoteObject] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=list_prefix):
        for item in page.get("Contents", []):
            remote[item["Key"]] = RemoteObject(int(item["Size"]), str(item.get("ETag", "")).strip('"'))
    return remote


def remote_sha256(s3: Any, bucket: str, key: str) -> str | None:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError):
        return None  # cannot tell: upload again, which is always safe
    return head.get("Metadata", {}).get(SHA256_METADATA)


def is_unchanged(s3: Any, bucket: str, key: str, size: int, digest: FileDigest, remote: RemoteObject | None) -> bool:
    if remote is None or remote.size != size:
        return False
    if remote.etag == digest.etag:
        return True
    return remote_sha256(s3, bucket, key) == digest.sha256


# --- progress and concurrency ----------------------------------------------------------------------


class Progress:
    """A tqdm byte counter on stderr, or nothing; safe to update from many threads."""

    def __init__(self, enabled: bool, total: int, description: str):
        self._lock = threading.Lock()
        self._bar: Any = None
        if enabled and total:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(
                total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
            )

    def __call__(self, count: int) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Progress]:
    bar = Progress(enabled, total, description)
    try:
        yield bar
    finally:
        bar.close()


def run_concurrently(function: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[function(item) ...]`` on a thread pool, in order; Ctrl-C cancels what has not started."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="data-upload")
    try:
        futures = [pool.submit(function, item) for item in items]
        return [future.result() for future in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


# --- the upload ------------------------------------------------------------------------------------


def upload_directory(
    source: Path,
    destination: str,
    *,
    s3_client: Any = None,
    workers: int = DEFAULT_WORKERS,
    dry_run: bool = False,
    progress: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> UploadReport:
    """Upload every non-hidden file under ``source`` to ``destination`` (``s3://bucket[/prefix]``).

    Unchanged files are skipped (see the module docstring); a file that fails is recorded in
    ``report.failed`` and the others go on. Raises ``UploadError`` for problems that stop the whole run.
    ``progress=None`` shows a bar when stderr is a terminal.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root = check_source(Path(source))
    bucket, prefix = parse_destination(destination)
    uri = destination_uri(bucket, prefix)
    scan = scan_tree(root)
    if not scan.files and not scan.unreadable:
        skipped = f" ({scan.ignored} hidden/ignored entries skipped)" if scan.ignored else ""
        raise UploadError(f"{source} has no files to upload{skipped}", exit_code=2)
    show = sys.stderr.isatty() if progress is None else progress
    s3 = s3_client if s3_client is not None else make_s3_client(workers)
    try:
        remote = list_remote(s3, bucket, prefix)
    except (ClientError, BotoCoreError) as exc:
        raise s3_failure(exc, bucket, uri) from exc

    report = UploadReport(destination=uri, dry_run=dry_run, ignored=scan.ignored, failed=dict(scan.unreadable))
    local_keys = {object_key(prefix, item.key) for item in scan.files}
    report.remote_only = sorted(key for key in remote if key not in local_keys)

    decisions = _decide(s3, bucket, prefix, scan.files, remote, workers, chunk_size, show)
    to_upload = _sort_decisions(decisions, prefix, report)
    if dry_run:
        report.uploaded = [object_key(prefix, item.file.key) for item in to_upload]
        report.bytes_uploaded = sum(item.file.size for item in to_upload)
        return report
    _upload(s3, bucket, prefix, to_upload, workers, chunk_size, show, report)
    return report


def _decide(
    s3: Any,
    bucket: str,
    prefix: str,
    files: list[LocalFile],
    remote: dict[str, RemoteObject],
    workers: int,
    chunk_size: int,
    show: bool,
) -> list[Decision]:
    """Hash every file and decide, concurrently, which need uploading."""
    with progress_bar(show, sum(item.size for item in files), "checking") as bar:

        def decide(item: LocalFile) -> Decision:
            key = object_key(prefix, item.key)
            try:
                digest = hash_file(item.path, item.size, chunk_size, bar)
            except OSError as exc:
                return Decision(item, upload=False, error=f"cannot read: {describe_error(exc)}")
            unchanged = is_unchanged(s3, bucket, key, item.size, digest, remote.get(key))
            return Decision(item, upload=not unchanged, sha256=digest.sha256)

        return run_concurrently(decide, files, workers)


def _sort_decisions(decisions: list[Decision], prefix: str, report: UploadReport) -> list[Decision]:
    to_upload = []
    for decision in decisions:
        key = object_key(prefix, decision.file.key)
        if decision.error:
            report.failed[key] = decision.error
        elif decision.upload:
            to_upload.append(decision)
        else:
            report.unchanged.append(key)
    return to_upload


def _upload(
    s3: Any,
    bucket: str,
    prefix: str,
    to_upload: list[Decision],
    workers: int,
    chunk_size: int,
    show: bool,
    report: UploadReport,
) -> None:
    config = transfer_config(chunk_size)
    with progress_bar(show, sum(item.file.size for item in to_upload), "uploading") as bar:

        def upload(item: Decision) -> tuple[str, str | None]:
            key = object_key(prefix, item.file.key)
            try:
                s3.upload_file(
                    str(item.file.path),
                    bucket,
                    key,
                    ExtraArgs={"Metadata": {SHA256_METADATA: item.sha256}},
                    Config=config,
                    Callback=bar,
                )
            except (S3UploadFailedError, ClientError, BotoCoreError, OSError) as exc:
                return key, describe_error(exc)
            return key, None

        results = run_concurrently(upload, to_upload, workers)
    for item, (key, error) in zip(to_upload, results, strict=True):
        if error is None:
            report.uploaded.append(key)
            report.bytes_uploaded += item.file.size
        else:
            report.failed[key] = error


# --- command line ----------------------------------------------------------------------------------


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_lines(report: UploadReport) -> list[str]:
    verb = "would upload" if report.dry_run else "uploaded"
    parts = [
        f"{verb} {plural(len(report.uploaded), 'file')} ({human_bytes(report.bytes_uploaded)})",
        f"{len(report.unchanged)} unchanged (skipped)",
        f"{report.ignored} hidden/ignored skipped",
    ]
    if report.failed:
        parts.append(f"{len(report.failed)} FAILED")
    lines = [("dry run: " if report.dry_run else "") + ", ".join(parts) + f" -> {report.destination}"]
    if report.remote_only:
        count = len(report.remote_only)
        lines.append(
            f"note: {plural(count, 'object')} under {report.destination} "
            f"{'has' if count == 1 else 'have'} no local file; left in place, the training job will read "
            f"{'it' if count == 1 else 'them'} too (e.g. {report.remote_only[0]})"
        )
    if report.failed:
        lines.append("run the same command again to retry the failed files (files already uploaded are skipped)")
    elif report.dry_run:
        lines.append("nothing was uploaded (dry run)")
    else:
        lines.append(f"next: breedfilter train --data {report.destination}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("source", type=Path, metavar="DIR", help="local dataset directory (DIR/train/<class>/...)")
    parser.add_argument("destination", metavar="s3://BUCKET[/PREFIX]", help="where DIR's files go")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"files checked and uploaded at once (default {DEFAULT_WORKERS})",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter data upload",
        description="Upload a dataset directory to S3 for SageMaker training; unchanged files are skipped.",
        epilog=(
            "example: breedfilter data upload data/dogImages s3://my-bucket/datasets/dogs\n"
            "exit status: 0 all files in place, 1 a file failed or S3 refused, 2 bad DIR or destination"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run a parsed command line: print warnings, the dry-run list, failures and the summary."""
    source: Path = args.source
    if source.is_dir() and not looks_like_imagefolder(source):
        print(
            f"warning: {source} has no train/ folder; the training job expects "
            "DIR/{train,valid,test}/<class folder>/<images> (uploading anyway)",
            file=sys.stderr,
        )
    try:
        report = upload_directory(source, args.destination, workers=args.workers, dry_run=args.dry_run)
    except UploadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (uploaded files are skipped)", file=sys.stderr)
        return 130
    if report.dry_run:
        for key in report.uploaded:
            print(f"would upload {key}")
    for key, reason in list(report.failed.items())[:MAX_FAILURES_SHOWN]:
        print(f"failed: {key}: {reason}", file=sys.stderr)
    if len(report.failed) > MAX_FAILURES_SHOWN:
        print(f"... and {len(report.failed) - MAX_FAILURES_SHOWN} more failures", file=sys.stderr)
    for line in summary_lines(report):
        print(line)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
