"""``breedfilter data upload``: uploads, skips unchanged files by ETag or sha256 metadata, reports failures.

Every test runs against moto's in-process S3 (``mock_aws``) with fake credentials; the no-credentials
test runs outside it with every credential source emptied and the endpoint pointed at a closed port.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from breedfilter import data_upload
from breedfilter.data_upload import UploadError, UploadReport, hash_file, parse_destination, upload_directory

BUCKET = "datasets"
PREFIX = "dogs"
DEST = f"s3://{BUCKET}/{PREFIX}"
MiB = 1024 * 1024
WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
DATASET = {
    "train/001.Affenpinscher/a.jpg": b"affen-1" * 100,
    "train/001.Affenpinscher/b.jpg": b"affen-2" * 150,
    "train/002.Siberian_Husky/c.jpg": b"husky-1" * 120,
    "valid/001.Affenpinscher/d.jpg": b"affen-3" * 90,
    "test/002.Siberian_Husky/e.jpg": b"husky-2" * 80,
}


class CallLog:
    """Counts the S3 operations a client makes (a ``before-call.s3`` handler) and can fail chosen ones."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: Counter[str] = Counter()
        self.fail: dict[tuple[str, str], str] = {}  # (operation, key or "") -> error code
        client.meta.events.register("before-call.s3", self._before_call)

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        self.calls[model.name] += 1
        key = params.get("url_path", "")
        for (operation, wanted), code in self.fail.items():
            if operation == model.name and (not wanted or key.endswith(wanted)):
                status = 404 if code == "NoSuchBucket" else 403
                return SimpleNamespace(status_code=status, headers={}), {
                    "Error": {"Code": code, "Message": f"injected {code}"}
                }
        return None

    def writes(self) -> int:
        return sum(count for name, count in self.calls.items() if name in WRITES)

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture
def aws(moto_s3: Any) -> None:
    moto_s3.create_bucket(Bucket=BUCKET)


@pytest.fixture
def s3(aws: None) -> Any:
    return boto3.client("s3", region_name="us-east-1")


@pytest.fixture
def log(s3: Any) -> CallLog:
    return CallLog(s3)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """An ImageFolder tree plus things that must not be uploaded: hidden entries and an outside symlink."""
    root = tmp_path / "dogImages"
    for relative, body in DATASET.items():
        write(root / relative, body)
    write(root / ".DS_Store", b"finder")
    write(root / "train" / ".ipynb_checkpoints" / "a-checkpoint.jpg", b"checkpoint")
    write(tmp_path / "outside.jpg", b"not part of the dataset")
    (root / "train" / "002.Siberian_Husky" / "outside.jpg").symlink_to(tmp_path / "outside.jpg")
    return root


def write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def keys_of(relatives: list[str] | dict[str, bytes], prefix: str = PREFIX) -> list[str]:
    return sorted(f"{prefix}/{relative}" if prefix else relative for relative in relatives)


def objects(s3: Any) -> dict[str, dict[str, Any]]:
    listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {item["Key"]: item for item in listing}


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def upload(source: Path, s3: Any, destination: str = DEST, **kwargs: Any) -> UploadReport:
    return upload_directory(source, destination, s3_client=s3, progress=False, **kwargs)


def use_client(monkeypatch: pytest.MonkeyPatch, s3: Any) -> None:
    """Make ``main`` use this (instrumented) client instead of building its own."""
    monkeypatch.setattr(data_upload, "make_s3_client", lambda workers: s3)


# --- first and second run -------------------------------------------------------------------------


def test_first_run_uploads_every_file_with_its_bytes_and_sha256(dataset: Path, s3: Any, log: CallLog) -> None:
    report = upload(dataset, s3)

    assert sorted(report.uploaded) == keys_of(DATASET)
    assert report.unchanged == [] and report.failed == {}
    assert report.bytes_uploaded == sum(len(body) for body in DATASET.values())
    assert report.ignored == 3  # .DS_Store, .ipynb_checkpoints/, the symlink pointing outside
    assert report.destination == DEST
    assert sorted(objects(s3)) == keys_of(DATASET)
    for relative, body in DATASET.items():
        key = f"{PREFIX}/{relative}"
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"sha256": sha256(body)}
    assert log.calls["PutObject"] == len(DATASET)


def test_second_run_uploads_nothing_and_sends_no_write_or_head(dataset: Path, s3: Any, log: CallLog) -> None:
    upload(dataset, s3)
    log.reset()

    report = upload(dataset, s3)

    assert report.uploaded == [] and report.bytes_uploaded == 0
    assert sorted(report.unchanged) == keys_of(DATASET)
    assert log.writes() == 0
    assert log.calls["HeadObject"] == 0  # every ETag matched
    assert set(log.calls) == {"ListObjectsV2"}


def test_main_prints_the_summary_and_the_next_command(
    dataset: Path, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert data_upload.main([str(dataset), DEST + "/"]) == 0
    first = capsys.readouterr()
    assert f"uploaded 5 files ({data_upload.human_bytes(sum(map(len, DATASET.values())))})" in first.out
    assert "0 unchanged (skipped), 3 hidden/ignored skipped -> s3://datasets/dogs" in first.out
    assert "next: breedfilter train --data s3://datasets/dogs" in first.out
    assert first.err == ""  # an ImageFolder tree: no layout warning, and no bar when stderr is no terminal

    assert data_upload.main([str(dataset), DEST]) == 0
    second = capsys.readouterr()
    assert "uploaded 0 files (0 B), 5 unchanged (skipped), 3 hidden/ignored skipped" in second.out
    assert sorted(objects(s3)) == keys_of(DATASET)


def test_changed_content_of_the_same_size_uploads_only_that_file(dataset: Path, s3: Any, log: CallLog) -> None:
    upload(dataset, s3)
    changed = "train/001.Affenpinscher/a.jpg"
    new_body = b"AFFEN-1" * 100
    assert len(new_body) == len(DATASET[changed])
    (dataset / changed).write_bytes(new_body)
    log.reset()

    report = upload(dataset, s3)

    assert report.uploaded == [f"{PREFIX}/{changed}"]
    assert len(report.unchanged) == len(DATASET) - 1
    assert log.calls["PutObject"] == 1
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{changed}")["Body"].read() == new_body
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{changed}")["Metadata"]["sha256"] == sha256(new_body)


def test_an_added_file_is_the_only_upload(dataset: Path, s3: Any, log: CallLog) -> None:
    upload(dataset, s3)
    write(dataset / "train" / "003.Beagle" / "f.jpg", b"beagle")
    log.reset()

    report = upload(dataset, s3)

    assert report.uploaded == [f"{PREFIX}/train/003.Beagle/f.jpg"]
    assert report.bytes_uploaded == len(b"beagle")
    assert log.calls["PutObject"] == 1 and log.writes() == 1


# --- multipart and the sha256 fallback ------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    root = tmp_path / "big"
    write(root / "train" / "x" / "big.bin", os.urandom(11 * MiB))
    write(root / "train" / "x" / "small.jpg", b"small")
    return root


def test_a_large_file_goes_multipart_and_is_unchanged_by_its_multipart_etag(
    big_file: Path, s3: Any, log: CallLog
) -> None:
    report = upload(big_file, s3, chunk_size=5 * MiB)

    key = f"{PREFIX}/train/x/big.bin"
    assert sorted(report.uploaded) == [key, f"{PREFIX}/train/x/small.jpg"]
    assert log.calls["CreateMultipartUpload"] == 1 and log.calls["UploadPart"] == 3  # 5 + 5 + 1 MiB
    assert log.calls["PutObject"] == 1  # the small file
    etag = objects(s3)[key]["ETag"].strip('"')
    assert etag.endswith("-3")
    body = (big_file / "train" / "x" / "big.bin").read_bytes()
    assert hash_file(big_file / "train" / "x" / "big.bin", len(body), 5 * MiB).etag == etag
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"sha256": sha256(body)}
    log.reset()

    again = upload(big_file, s3, chunk_size=5 * MiB)

    assert again.uploaded == [] and len(again.unchanged) == 2
    assert log.writes() == 0 and log.calls["HeadObject"] == 0


def put_single_part(s3: Any, key: str, body: bytes, metadata: dict[str, str]) -> None:
    """An object whose ETag is the plain MD5, which the 5 MiB-part multipart ETag cannot equal."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata)


def test_an_etag_mismatch_with_matching_sha256_metadata_is_unchanged(big_file: Path, s3: Any, log: CallLog) -> None:
    path = big_file / "train" / "x" / "big.bin"
    body = path.read_bytes()
    key = f"{PREFIX}/train/x/big.bin"
    put_single_part(s3, key, body, {"sha256": sha256(body)})
    assert "-" not in objects(s3)[key]["ETag"]
    log.reset()

    report = upload(big_file, s3, chunk_size=5 * MiB)

    assert key in report.unchanged
    assert report.uploaded == [f"{PREFIX}/train/x/small.jpg"]
    assert log.calls["HeadObject"] == 1
    assert log.calls["CreateMultipartUpload"] == 0 and log.calls["UploadPart"] == 0


@pytest.mark.parametrize("metadata", [{}, {"sha256": "0" * 64}], ids=["no-metadata", "other-sha256"])
def test_an_etag_mismatch_without_matching_sha256_uploads(
    big_file: Path, s3: Any, log: CallLog, metadata: dict[str, str]
) -> None:
    path = big_file / "train" / "x" / "big.bin"
    body = path.read_bytes()
    key = f"{PREFIX}/train/x/big.bin"
    put_single_part(s3, key, os.urandom(len(body)), metadata)  # same size, other bytes
    log.reset()

    report = upload(big_file, s3, chunk_size=5 * MiB)

    assert key in report.uploaded
    assert log.calls["HeadObject"] == 1 and log.calls["CreateMultipartUpload"] == 1
    assert s3.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"sha256": sha256(body)}


def test_a_size_difference_uploads_without_a_head(dataset: Path, s3: Any, log: CallLog) -> None:
    key = f"{PREFIX}/train/001.Affenpinscher/a.jpg"
    body = DATASET["train/001.Affenpinscher/a.jpg"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=body + b"!", Metadata={"sha256": sha256(body)})
    log.reset()

    report = upload(dataset, s3)

    assert key in report.uploaded
    assert log.calls["HeadObject"] == 0


def test_hash_file_matches_boto3_etags_for_single_and_multipart(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    body = os.urandom(6 * MiB + 3)
    path.write_bytes(body)
    assert hash_file(path, len(body), 8 * MiB).etag == hashlib.md5(body).hexdigest()
    parts = [body[: 5 * MiB], body[5 * MiB :]]
    combined = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    assert hash_file(path, len(body), 5 * MiB).etag == f"{combined}-2"
    # below S3's 5 MiB minimum boto3 raises the part size to 5 MiB: the same two parts as above
    assert hash_file(path, len(body), 1 * MiB).etag == combined + "-2"
    assert hash_file(path, len(body), 5 * MiB).sha256 == sha256(body)


# --- what is uploaded, and where ------------------------------------------------------------------


def test_hidden_entries_and_outside_symlinks_are_skipped_inside_symlinks_uploaded(dataset: Path, s3: Any) -> None:
    (dataset / "valid" / "001.Affenpinscher" / "alias.jpg").symlink_to(dataset / "train/001.Affenpinscher/a.jpg")

    report = upload(dataset, s3)

    uploaded = set(objects(s3))
    assert f"{PREFIX}/valid/001.Affenpinscher/alias.jpg" in uploaded
    assert not any("/." in key or key.endswith("outside.jpg") for key in uploaded)
    assert report.ignored == 3


@pytest.mark.parametrize(
    ("destination", "prefix"),
    [("s3://datasets", ""), ("s3://datasets/", ""), ("s3://datasets/a/b/", "a/b"), ("s3://datasets/a/b", "a/b")],
)
def test_keys_are_relative_to_dir_under_the_prefix(dataset: Path, s3: Any, destination: str, prefix: str) -> None:
    report = upload(dataset, s3, destination)

    assert sorted(objects(s3)) == keys_of(DATASET, prefix)
    assert report.destination == (f"s3://datasets/{prefix}" if prefix else "s3://datasets")


def test_a_dry_run_uploads_nothing_and_lists_what_would_go(
    dataset: Path, s3: Any, log: CallLog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = upload(dataset, s3, dry_run=True)
    assert report.dry_run and sorted(report.uploaded) == keys_of(DATASET)
    assert objects(s3) == {} and log.writes() == 0

    use_client(monkeypatch, s3)
    assert data_upload.main([str(dataset), DEST, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for key in keys_of(DATASET):
        assert f"would upload {key}" in out
    assert "dry run: would upload 5 files" in out and "nothing was uploaded" in out
    assert objects(s3) == {} and log.writes() == 0


def test_objects_with_no_local_file_are_reported(dataset: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/train/old_class/x.jpg", Body=b"stale")
    s3.put_object(Bucket=BUCKET, Key="dogs2/elsewhere.jpg", Body=b"not under the prefix")

    assert data_upload.main([str(dataset), DEST]) == 0

    out = capsys.readouterr().out
    assert "note: 1 object under s3://datasets/dogs has no local file" in out
    assert "(e.g. dogs/train/old_class/x.jpg)" in out


def test_a_tree_without_train_warns_but_uploads(tmp_path: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "flat" / "a.jpg", b"a")

    assert data_upload.main([str(tmp_path / "flat"), DEST]) == 0

    captured = capsys.readouterr()
    assert "warning:" in captured.err and "no train/ folder" in captured.err
    assert sorted(objects(s3)) == [f"{PREFIX}/a.jpg"]


def test_progress_bar_reports_bytes_on_stderr(dataset: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upload_directory(dataset, DEST, s3_client=s3, progress=True)

    err = capsys.readouterr().err
    assert "checking" in err and "uploading" in err


# --- errors ---------------------------------------------------------------------------------------


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = data_upload.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_a_missing_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([str(tmp_path / "nope"), DEST], capsys)
    assert code == 2
    assert err.strip() == f"error: no such directory: {tmp_path / 'nope'}"


def test_a_file_instead_of_a_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "f.jpg", b"x")
    code, err = run_main([str(tmp_path / "f.jpg"), DEST], capsys)
    assert code == 2 and "not a directory" in err


def test_a_dir_with_only_hidden_files_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "d" / "train" / ".DS_Store", b"x")
    code, err = run_main([str(tmp_path / "d"), DEST], capsys)
    assert code == 2 and "has no files to upload (1 hidden/ignored entries skipped)" in err


@pytest.mark.parametrize(
    "destination",
    ["datasets/dogs", "s3://", "s3:/datasets", "https://datasets.s3.amazonaws.com/x", "s3://Bad_Bucket/x", "s3://b//x"],
)
def test_a_bad_destination_is_a_clear_error(
    dataset: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main([str(dataset), destination], capsys)
    assert code == 2 and err.startswith("error: ") and "s3://" in err
    with pytest.raises(UploadError):
        parse_destination(destination)


def test_a_missing_bucket_is_a_clear_error(dataset: Path, aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([str(dataset), "s3://no-such-bucket/dogs"], capsys)
    assert code == 1
    assert "bucket 'no-such-bucket' does not exist" in err and "aws s3 mb s3://no-such-bucket" in err


def test_access_denied_is_a_clear_error(
    dataset: Path, s3: Any, log: CallLog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log.fail[("ListObjectsV2", "")] = "AccessDenied"
    use_client(monkeypatch, s3)

    code, err = run_main([str(dataset), DEST], capsys)

    assert code == 1 and "access denied to s3://datasets/dogs" in err and "s3:PutObject" in err
    assert log.writes() == 0


@pytest.mark.usefixtures("no_credentials")
def test_no_credentials_is_a_clear_error(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main([str(dataset), DEST], capsys)

    assert code == 1
    assert "no AWS credentials found" in err and "aws configure" in err and "AWS_PROFILE" in err


# --- partial failures and resuming ----------------------------------------------------------------


def test_one_failing_file_does_not_stop_the_others_and_a_rerun_uploads_only_it(
    dataset: Path, s3: Any, log: CallLog, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = f"{PREFIX}/train/002.Siberian_Husky/c.jpg"
    log.fail[("PutObject", "c.jpg")] = "AccessDenied"
    use_client(monkeypatch, s3)

    code, err = run_main([str(dataset), DEST], capsys)

    assert code == 1
    assert f"failed: {failing}: " in err and "AccessDenied" in err
    assert sorted(objects(s3)) == [key for key in keys_of(DATASET) if key != failing]

    del log.fail[("PutObject", "c.jpg")]
    log.reset()
    report = upload(dataset, s3)

    assert report.uploaded == [failing] and report.ok
    assert len(report.unchanged) == len(DATASET) - 1
    assert log.writes() == 1


def test_a_file_that_cannot_be_read_is_reported_and_the_rest_upload(
    dataset: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreadable = dataset / "valid" / "001.Affenpinscher" / "d.jpg"
    real_hash_file = data_upload.hash_file

    def hash_file_failing_on_one(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_hash_file(path, *args, **kwargs)

    monkeypatch.setattr(data_upload, "hash_file", hash_file_failing_on_one)
    report = upload(dataset, s3)

    key = f"{PREFIX}/valid/001.Affenpinscher/d.jpg"
    assert report.failed == {key: "cannot read: Permission denied"}
    assert sorted(report.uploaded) == [k for k in keys_of(DATASET) if k != key]
    assert not report.ok

    monkeypatch.setattr(data_upload, "hash_file", real_hash_file)
    assert upload(dataset, s3).uploaded == [key]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_chmod_000_fails_alone(dataset: Path, s3: Any) -> None:
    path = dataset / "test" / "002.Siberian_Husky" / "e.jpg"
    path.chmod(0)
    try:
        report = upload(dataset, s3)
    finally:
        path.chmod(0o644)
    key = f"{PREFIX}/test/002.Siberian_Husky/e.jpg"
    assert list(report.failed) == [key] and "Permission denied" in report.failed[key]
    assert len(report.uploaded) == len(DATASET) - 1
    assert upload(dataset, s3).uploaded == [key]
