"""Helpers several test modules share: train.py runs on tiny models, crashes on purpose, queue handling.

Test modules import these from here, never from one another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "training" / "train.py"


def quick_args(data: Path, out: Path, *extra: str, model: str = "timm/test_efficientnet") -> list[str]:
    return [
        "--data",
        str(data),
        "--model",
        model,
        "--weights",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--num-workers",
        "0",
        "--unfreeze-epoch",
        "0",
        "--lr",
        "0.01",
        "--warmup-epochs",
        "0",
        "--label-smoothing",
        "0",
        "--early-stopping-patience",
        "0",
        "--model-dir",
        str(out / "model"),
        "--output-data-dir",
        str(out / "output"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
        "--report",  # drawing report.html takes seconds; the tests of the report ask for it
        "off",
        *extra,
    ]


def run_train_py(args: list[str], env_extra: dict[str, str] | None = None, launcher: list[str] | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "training"), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    command = [*(launcher or [sys.executable]), str(TRAIN_PY), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def crash_once(monkeypatch, owner, name):
    """Make ``owner.name`` raise the first time it is called, as if the function died there."""
    original = getattr(owner, name)
    crashed = []

    def wrapper(*args, **kwargs):
        if not crashed:
            crashed.append(name)
            raise RuntimeError(f"simulated crash in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return crashed


def lose_notifications(harness) -> int:
    """Take every message off the inbox queue unrouted, as a purge (or a lost notification) would."""
    lost = 0
    while True:
        messages = harness.sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)
        messages = messages.get("Messages", [])
        if not messages:
            break
        for message in messages:
            harness.sqs.delete_message(QueueUrl=harness.stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
        lost += len(messages)
    assert harness.queue_depth() == 0
    return lost


def queued_bodies(harness) -> list[dict]:
    """Every message body on the inbox queue, left there (visibility 0)."""
    messages = harness.sqs.receive_message(
        QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    ).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def assert_routed_once(harness, keys: dict[str, str]) -> None:
    """``keys``: inbox key -> label. One sorted copy and one item each, nothing left anywhere."""
    assert sorted(harness.keys(harness.sorted)) == sorted(f"{label}/{key}" for key, label in keys.items())
    items = harness.items()
    assert len(items) == len(keys)
    for key, label in keys.items():
        assert harness.item_for(key)["label"] == label
    assert harness.keys(harness.inbox) == [] and harness.inbox_versions() == []
    assert harness.queue_depth() == 0 and harness.queue_depth(harness.stack.dlq_url) == 0
