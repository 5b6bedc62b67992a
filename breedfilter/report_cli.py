"""Show a training run's report: the terminal summary, and the path of its self-contained report.html.

    breedfilter report out/train                                  # a train.py run (its output/ dir is used)
    breedfilter report out/train/output                           # an output dir: metrics/debugger/profiler.json
    breedfilter report s3://BUCKET/PREFIX/JOB/output/output.tar.gz   # a SageMaker job's output, downloaded
    breedfilter report s3://BUCKET/PREFIX/JOB                     # a prefix holding exactly one output.tar.gz
    ... [--regenerate] [--open] [--download-dir DIR]

S3 archives are downloaded with boto3 (your default credentials; AWS_ENDPOINT_URL is honoured) and extracted
safely into out/reports/JOB/. report.html is built with training/report/ when it is missing (or with
--regenerate). Exit status 2 with one line on stderr when there is nothing to report on.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.units import REPO_ROOT

DEFAULT_DOWNLOAD_DIR = REPO_ROOT / "out" / "reports"
KNOWN_FILES = ("metrics.json", "debugger.json", "profiler.json", "report.html")
JSON_FILES = KNOWN_FILES[:3]
OUTPUT_ARCHIVE = "output/output.tar.gz"  # where SageMaker puts OUTPUT_DATA_DIR: s3://.../JOB/output/output.tar.gz


class ReportError(Exception):
    """Nothing to report on (no dir, no known file, bad S3 URI, missing object, no credentials): one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breedfilter report", description=__doc__.split("\n")[0])
    parser.add_argument("run", metavar="RUN_DIR|s3://BUCKET/KEY", help="a run or output dir, or a job's S3 output")
    parser.add_argument("--regenerate", action="store_true", help="rebuild report.html even when there is one")
    parser.add_argument("--open", action="store_true", help="open report.html in the default browser")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=DEFAULT_DOWNLOAD_DIR,
        help=f"where S3 outputs are extracted, one dir per job (default {DEFAULT_DOWNLOAD_DIR})",
    )
    return parser


def find_output_dir(path: Path) -> Path:
    """The dir holding the run's files: PATH itself, PATH/output (a train.py run dir) or PATH/output/data."""
    if not path.exists():
        raise ReportError(f"no such directory: {path}")
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory (pass a run dir, an output dir or an s3:// URI)")
    for candidate in (path, path / "output", path / "output" / "data"):
        if any((candidate / name).is_file() for name in KNOWN_FILES):
            return candidate
    raise ReportError(
        f"no {', '.join(KNOWN_FILES)} in {path} (nor in {path / 'output'}): is it a training run's output dir?"
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or any(c in bucket for c in " \\?#"):
        raise ReportError(f"bad S3 URI {uri!r}: expected s3://BUCKET/KEY (a job's output.tar.gz or its prefix)")
    return bucket, key


def fetch_s3(uri: str, download_dir: Path, s3: Any = None) -> Path:
    """Download the job's output.tar.gz (the key itself, or the only one under the prefix) and extract it."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, key = parse_s3_uri(uri)
    try:
        s3 = s3 or boto3.Session().client("s3")  # a new session: credentials as they are now
        if not key.endswith(".tar.gz"):
            key = _only_archive(s3, bucket, key)
        target = download_dir / _local_name(bucket, key)
        with tempfile.TemporaryDirectory(prefix="breedfilter-report-") as scratch:
            archive = Path(scratch) / "output.tar.gz"
            s3.download_file(bucket, key, str(archive))
            return _extract(archive, target, f"s3://{bucket}/{key}")
    except NoCredentialsError as exc:
        raise ReportError(NO_CREDENTIALS) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise ReportError(f"no object s3://{bucket}/{key} (check the bucket and the job name)") from exc
        if code == "NoSuchBucket":
            raise ReportError(f"no bucket {bucket!r} (from {uri})") from exc
        raise ReportError(f"s3://{bucket}/{key}: {code}: {error.get('Message') or exc}") from exc
    except BotoCoreError as exc:
        raise ReportError(f"s3://{bucket}/{key}: {exc}") from exc


def _only_archive(s3: Any, bucket: str, prefix: str) -> str:
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
        if item["Key"] == OUTPUT_ARCHIVE or item["Key"].endswith("/" + OUTPUT_ARCHIVE)
    ]
    if len(keys) > 1 and prefix and not prefix.endswith("/"):  # s3://b/jobs/job-1 also matches jobs/job-10/...
        keys = [k for k in keys if k.startswith(prefix + "/")] or keys
    if not keys:
        raise ReportError(f"no {OUTPUT_ARCHIVE} under s3://{bucket}/{prefix} (SageMaker writes a job's output there)")
    if len(keys) > 1:
        shown = ", ".join(f"s3://{bucket}/{k}" for k in keys[:10]) + (" ..." if len(keys) > 10 else "")
        raise ReportError(f"{len(keys)} job outputs under s3://{bucket}/{prefix}; pass one of: {shown}")
    return keys[0]


def _local_name(bucket: str, key: str) -> str:
    """The job's name (KEY = .../JOB/output/output.tar.gz), else a hash of the URI: safe as a dir name."""
    parts = key.split("/")
    if key.endswith("/" + OUTPUT_ARCHIVE) and len(parts) >= 3:
        name = parts[-3]
        if name and name not in (".", "..") and all(c.isalnum() or c in "-_." for c in name):
            return name
    return hashlib.sha256(f"s3://{bucket}/{key}".encode()).hexdigest()[:16]


def _extract(archive: Path, target: Path, source: str) -> Path:
    """Unpack into a fresh TARGET; the "data" filter refuses absolute paths, .. and links out of it."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ReportError(f"{source} is not a usable output.tar.gz: {exc}") from exc
    return target


def ensure_report(output_dir: Path, regenerate: bool) -> Path:
    """OUTPUT_DIR/report.html, built with training/report/ when missing or asked for."""
    path = output_dir / "report.html"
    if path.is_file() and not regenerate:
        return path
    if not any((output_dir / name).is_file() for name in JSON_FILES):
        raise ReportError(f"cannot build a report in {output_dir}: none of {', '.join(JSON_FILES)} is there")
    from breedfilter.units import training_module

    return training_module("report").write_report(output_dir)


def summary(output_dir: Path) -> list[str]:
    if not any((output_dir / name).is_file() for name in JSON_FILES):
        return [f"(no {', '.join(JSON_FILES)} beside the report: no summary)"]
    from breedfilter.units import training_module

    return training_module("report").summary_lines(output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.run.startswith("s3:"):
            output_dir = find_output_dir(fetch_s3(args.run, args.download_dir))
        else:
            output_dir = find_output_dir(Path(args.run))
        path = ensure_report(output_dir, args.regenerate)
        lines = summary(output_dir)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    print(f"report: {path}")
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
