"""Exact evaluation: loss and accuracy averaged per sample, a confusion matrix, per-class accuracy.

Averaging batch means (``sum(batch_loss) / n_batches``) over-weights a short last batch and makes the metric
depend on the batch size, which biases tuning. Here every batch contributes its *sum* of per-sample losses
and its count, summed across processes too, and the total is divided once.

Used by train.py for validation and test.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import ddp


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    count: int
    confusion: torch.Tensor  # [true, predicted] counts

    def per_class_accuracy(self, labels: list[str]) -> dict[str, float | None]:
        """Recall per class; None for a class with no samples."""
        totals = self.confusion.sum(dim=1)
        return {
            label: (float(self.confusion[i, i] / totals[i]) if totals[i] > 0 else None)
            for i, label in enumerate(labels)
        }


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Evaluation:
    """Plain cross-entropy (no label smoothing), summed per sample; exact across processes."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    confusion = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    )
    with torch.inference_mode():
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with autocast:
                logits = model(images)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").double()
            count += targets.numel()
            predicted = logits.argmax(dim=1)
            confusion += torch.bincount(targets * num_classes + predicted, minlength=num_classes**2).view(
                num_classes, num_classes
            )
    ddp.all_sum(loss_sum)
    ddp.all_sum(count)
    ddp.all_sum(confusion)
    total = int(count.item())
    correct = int(confusion.diagonal().sum().item())
    return Evaluation(
        loss=float(loss_sum.item()) / total if total else float("nan"),
        accuracy=correct / total if total else float("nan"),
        count=total,
        confusion=confusion.cpu(),
    )
