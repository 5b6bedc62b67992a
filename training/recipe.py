"""The fine-tuning recipe's parts: parameter groups, optimizer, warmup + cosine schedule, staged unfreezing.

- Discriminative learning rates: the new head trains at ``lr``, the pretrained backbone at ``lr × ratio``.
- Staged unfreezing: the backbone is frozen (and its BatchNorm statistics kept) until ``unfreeze_epoch``;
  ``-1`` keeps it frozen for good (the naive recipe's "train the head only").
- No weight decay on biases and normalisation weights (1-D parameters), as the references do.
- The schedule is per step: linear warmup, then cosine to zero (or a constant rate).

Used by train.py; ``python training/recipe.py`` prints the learning-rate curve of a short schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

import architectures


def parameter_groups(model: nn.Module, lr: float, backbone_lr_ratio: float, weight_decay: float) -> list[dict]:
    """Four groups: (backbone, head) × (decayed, not decayed); the backbone's lr is lr × ratio."""
    backbone, head = architectures.split_parameters(model)
    groups = []
    for name, params, group_lr in (("backbone", backbone, lr * backbone_lr_ratio), ("head", head, lr)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for suffix, members, wd in (("", decay, weight_decay), ("_no_decay", no_decay, 0.0)):
            if members:
                groups.append({"name": name + suffix, "params": members, "lr": group_lr, "weight_decay": wd})
    return groups


def make_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    backbone_lr_ratio: float,
    weight_decay: float,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    groups = parameter_groups(model, lr, backbone_lr_ratio, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}: adamw, adam or sgd")


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """The multiplier on each group's base lr at ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    if kind != "cosine":
        raise ValueError(f"unknown scheduler {kind!r}: cosine or constant")
    remaining = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / remaining)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, kind))


def backbone_trainable(epoch: int, unfreeze_epoch: int) -> bool:
    """Whether the backbone trains in ``epoch`` (0-based)."""
    return unfreeze_epoch >= 0 and epoch >= unfreeze_epoch


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    backbone, _ = architectures.split_parameters(model)
    for param in backbone:
        param.requires_grad_(trainable)


def freeze_backbone_norms(model: nn.Module) -> None:
    """Keep a frozen backbone's BatchNorm running statistics (call after ``model.train()``)."""
    head = set(architectures.head_module(model).modules())
    for module in _norm_layers(model.modules()):
        if module not in head:
            module.eval()


def _norm_layers(modules: Iterable[nn.Module]) -> Iterable[nn.Module]:
    return (m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm))


if __name__ == "__main__":
    for step in range(0, 100, 10):
        print(step, round(lr_factor(step, 100, 10, "cosine"), 3))
