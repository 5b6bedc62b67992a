"""Checkpoints each epoch and resume from the last one (SageMaker spot: the checkpoint dir syncs to S3).

``last.pt`` holds everything a resumed run needs to continue exactly as an uninterrupted one would: model,
optimizer, schedule, AMP scaler, epoch, history and the best result so far. ``best.pt`` holds the best
weights by validation accuracy. Both are written atomically (temp file, then rename), so an interruption
mid-write leaves the previous checkpoint intact; both load with ``weights_only=True``.

Used by train.py (``--checkpoint-dir``, ``--resume``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"


class CheckpointMismatch(RuntimeError):
    """The checkpoint dir holds another run's checkpoint (other model or classes)."""


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_last(directory: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The last checkpoint in ``directory``, or None; refuses one written for another model or label set."""
    path = directory / LAST
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    theirs = state.get("identity", {})
    if theirs != identity:
        differing = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
        raise CheckpointMismatch(
            f"{path} was written by another run (differs in {', '.join(differing)}). "
            f"Pass --resume false to start over, or another --checkpoint-dir."
        )
    return state
