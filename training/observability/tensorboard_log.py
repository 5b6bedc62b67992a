"""Epoch metrics as TensorBoard event files: a train.py callback (rank 0 only).

On SageMaker train.py writes to /opt/ml/output/tensorboard, which the launcher's TensorBoardOutputConfig syncs
to S3; locally to out/train/tensorboard. Without the tensorboard package it says so once and writes nothing.

    tensorboard --logdir out/train/tensorboard
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("train")

# Row keys -> TensorBoard tags: grouped so that train and valid curves share a chart.
TAGS = {
    "train_loss": "loss/train",
    "valid_loss": "loss/valid",
    "train_accuracy": "accuracy/train",
    "valid_accuracy": "accuracy/valid",
    "best_valid_accuracy": "accuracy/best_valid",
    "lr": "lr",
    "epoch_seconds": "time/epoch_seconds",
}


class TensorBoardCallback:
    """Trainer callback: one scalar per metric per epoch (step = epoch)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: no event files (pip install tensorboard)")
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(log_dir))
        log.info("TensorBoard event files: %s", log_dir)

    def on_step_end(self, trainer: Any, step: Any) -> None:
        return None

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        if self.writer is not None:
            for key, tag in TAGS.items():
                value = row.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.writer.add_scalar(tag, value, row["epoch"])
            self.writer.flush()
        return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
