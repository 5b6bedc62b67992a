"""`breedfilter local up|env|status|down` for real: a background twin serving a trained artifact routes an
image put with the printed environment, `breedfilter results` sees it, and `down` frees every port. A twin
that dies is reported as dead (pid, log, last lines), not as "not running"; `status` counts every item."""

from __future__ import annotations

import io
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from breedfilter import local_cli, results
from tests.image_datasets import COLOURS, make_image

ROOT = Path(__file__).resolve().parents[2]


def breedfilter_local(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "breedfilter.local_cli", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def parse_exports(text: str) -> dict[str, str]:
    exports = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            exports[key] = shlex.split(value)[0]
    return exports


def listening(url: str) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) == 0


@pytest.fixture
def state_dir(tmp_path: Path):
    yield tmp_path
    breedfilter_local(tmp_path, "down")  # never leave a twin behind, even when the test fails


def test_up_routes_live_results_see_it_and_down_frees_the_ports(state_dir, trained_artifact, monkeypatch, capsys):
    started = breedfilter_local(state_dir, "up", "--model", str(trained_artifact))
    assert started.returncode == 0, started.stderr + started.stdout
    assert "local twin up" in started.stdout and "breedfilter local down" in started.stdout
    assert "state: in memory" in started.stdout and "a crash forgets" in started.stdout
    assert "retries: a failed message is back after 3.9 s" in started.stdout  # 390 s x 0.01, the default
    assert "after 5 receives" in started.stdout
    exports = parse_exports(started.stdout)
    assert exports["AWS_ACCESS_KEY_ID"] == "testing" and exports["RESULTS_TABLE"]
    assert listening(exports["AWS_ENDPOINT_URL"]) and listening(exports["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"])
    assert parse_exports(breedfilter_local(state_dir, "env").stdout) == exports

    again = breedfilter_local(state_dir, "up", "--model", str(trained_artifact))
    assert again.returncode == 0 and "already running" in again.stdout

    for key, value in exports.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")  # nothing but the exported environment points it at the twin
    buffer = io.BytesIO()
    make_image(COLOURS["002.Green_Thing"], 48, random.Random(1)).save(buffer, format="JPEG")
    s3.put_object(Bucket=exports["INBOX_BUCKET"], Key="uploads/live photo.jpg", Body=buffer.getvalue())
    s3.put_object(Bucket=exports["INBOX_BUCKET"], Key="uploads/notes.jpg", Body=b"not an image")

    for _ in range(600):  # the twin's poller routes them in the background
        if s3.list_objects_v2(Bucket=exports["INBOX_BUCKET"]).get("KeyCount", 0) == 0:
            break
        time.sleep(0.2)
    assert s3.list_objects_v2(Bucket=exports["INBOX_BUCKET"]).get("KeyCount", 0) == 0
    capsys.readouterr()
    assert results.main(["--source", f"s3://{exports['INBOX_BUCKET']}/uploads/live photo.jpg", "--format", "json"]) == 0
    assert '"uploads/live photo.jpg"' in capsys.readouterr().out
    assert results.main(["--status", "REJECTED", "--format", "csv"]) == 0
    assert "not_an_image" in capsys.readouterr().out

    status = breedfilter_local(state_dir, "status")
    assert status.returncode == 0 and "results 2 items" in status.stdout and "inbox 0 objects" in status.stdout

    stopped = breedfilter_local(state_dir, "down")
    assert stopped.returncode == 0 and "are free" in stopped.stdout, stopped.stderr
    assert not listening(exports["AWS_ENDPOINT_URL"]) and not listening(exports["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"])
    assert not (state_dir / "twin.json").exists()
    assert "no local twin is running" in breedfilter_local(state_dir, "down").stdout
    assert breedfilter_local(state_dir, "env").returncode == 1


def test_up_with_a_missing_model_says_so_and_starts_nothing(state_dir):
    started = breedfilter_local(state_dir, "up", "--model", str(state_dir / "nope.tar.gz"))
    assert started.returncode == 2
    assert "no such file" in started.stderr
    assert local_cli.read_state(state_dir) is None


def test_a_stale_state_file_is_not_a_running_twin(state_dir):
    (state_dir / "twin.json").write_text('{"pid": 999999999, "exports": {}}')
    assert local_cli.read_state(state_dir) is None
    assert not (state_dir / "twin.json").exists()
    assert os.environ.get("AWS_ACCESS_KEY_ID") == "testing"  # conftest's fake credentials, untouched


def wait_until_dead(pid: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while local_cli._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not local_cli._alive(pid)


def test_a_twin_that_died_is_reported_with_its_log_and_its_state_is_cleaned_up(state_dir, trained_artifact):
    started = breedfilter_local(state_dir, "up", "--model", str(trained_artifact), "--time-scale", "0.001")
    assert started.returncode == 0, started.stderr + started.stdout
    assert "back after 0.39 s" in started.stdout  # --time-scale reaches the twin
    state = json.loads((state_dir / "twin.json").read_text())
    pid = state["pid"]
    os.kill(pid, signal.SIGKILL)  # a crash: no chance to clean up its state file
    wait_until_dead(pid)
    assert (state_dir / "twin.json").exists()

    status = breedfilter_local(state_dir, "status")
    assert status.returncode == 1
    assert f"the local twin (pid {pid}" in status.stdout and ") died; its log: " in status.stdout
    assert "twin.log (last lines:)" in status.stdout and "serving; state in" in status.stdout  # the log's tail
    assert "no local twin is running" not in status.stdout
    assert not (state_dir / "twin.json").exists()  # cleaned up: said once
    assert "no local twin is running" in breedfilter_local(state_dir, "status").stdout


@pytest.mark.parametrize("command", ["env", "down"])
def test_env_and_down_say_the_twin_died_too(state_dir, command):
    log = state_dir / "twin.log"
    log.write_text("2026-01-01 breedfilter.twin.local_twin INFO serving\nFatal Python error: Segmentation fault\n")
    (state_dir / "twin.json").write_text(json.dumps({"pid": 999999999, "log": str(log), "exports": {}}))
    result = breedfilter_local(state_dir, command)
    said = result.stdout + result.stderr
    assert "the local twin (pid 999999999) died" in said and "Segmentation fault" in said
    assert result.returncode == (1 if command == "env" else 0)
    assert not (state_dir / "twin.json").exists()


def test_status_counts_every_item_not_the_first_page(harness, tmp_path, monkeypatch, capsys):
    """One scan page stops at 1 MB: 1190 items counted as 1132 before."""
    from breedfilter.twin.local_aws import aws_environment, count_items

    table = harness.stack.names.results_table
    padding = "x" * 200_000
    requests = [
        {"PutRequest": {"Item": {"pk": {"S": f"s3://b/k{i}#e:{i}"}, "padding": {"S": padding}}}} for i in range(8)
    ]
    harness.dynamodb.batch_write_item(RequestItems={table: requests})
    first_page = harness.dynamodb.scan(TableName=table, Select="COUNT")
    assert first_page["Count"] < 8 and "LastEvaluatedKey" in first_page  # 1.6 MB: more than one page
    assert count_items(harness.dynamodb, table) == 8
    assert count_items(harness.dynamodb, table, page_size=3) == 8  # smaller pages, same total

    exports = {
        **aws_environment(harness.aws.url, "http://127.0.0.1:9"),
        "RESULTS_TABLE": table,
        "INBOX_BUCKET": harness.inbox,
        "SORTED_BUCKET": harness.sorted,
        "ENDPOINT_NAME": "breedfilter-classifier",
    }
    state = {"pid": os.getpid(), "model": "m", "log": "twin.log", "started_at": "now", "exports": exports}
    (tmp_path / "twin.json").write_text(json.dumps(state))
    monkeypatch.setattr(local_cli, "_alive", lambda pid: True)  # this test process plays the twin
    capsys.readouterr()
    assert local_cli.main(["--state-dir", str(tmp_path), "status"]) == 0
    assert "results 8 items" in capsys.readouterr().out
