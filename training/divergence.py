"""The divergence guard: a run whose loss blew up is stopped, and its model is never shipped.

A learning rate far too high (``--lr 1e6``) sends the loss to 1e8, 1e18, then NaN within a few epochs; the
weights are garbage from then on, yet accuracy can sit at chance and look merely "poor". The trainer asks
this guard about every step's loss and every epoch's row, independently of the debugger (``--debugger off``
does not turn it off), and raises ``TrainingDiverged`` after the epoch where it fired: train.py then writes
no model artifact (metrics.json says ``"diverged": true``) and exits with code 3.

The run diverged when, in an epoch:
- a training step's loss was NaN/Inf (the per-sample mean the optimizer stepped on), or the epoch's mean
  training or validation loss is NaN/Inf;
- the epoch's mean training or validation loss is more than ``GROWTH`` (100) times a reference: the lower of
  the chance-level loss ln(classes) (what a uniform guess scores, about where a fresh head starts) and the
  lowest value of that loss in earlier epochs; and above ``FLOOR`` (10) times chance, so a loss that only
  rose from a tiny value (0.001 to 0.2 when overfitting) is not taken for a blow-up.

With the fp16 loss scaler (``--amp on`` on GPUs without bfloat16) overflowing *gradients* are normal and the
scaler skips those steps; the loss itself stays finite. A NaN/Inf *loss* means the forward pass overflowed:
that counts as divergence.

    guard = DivergenceGuard(num_classes=2)
    guard.observe_step(loss, global_step, epoch)    # each step; True when it was NaN/Inf
    reason = guard.check_epoch(row)                 # each epoch: None, or why it diverged
    if reason:
        raise TrainingDiverged(f"{reason}; {advice(lr, grad_clip)}", epoch=row["epoch"])

Used by training/trainer.py; not run on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GROWTH = 100.0  # "orders of magnitude": this many times the reference loss
FLOOR = 10.0  # ... and above this many times the chance-level loss
LOSSES = (("train_loss", "train loss"), ("valid_loss", "valid loss"))  # (row key, name in the reason)


class TrainingDiverged(RuntimeError):
    """The loss diverged: training stopped and no model was written. ``reason`` says where, how and what to try;
    ``epoch`` is the (1-based) epoch where it was detected."""

    def __init__(self, reason: str, epoch: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch


def chance_loss(num_classes: int) -> float:
    """The cross-entropy of a uniform guess over ``num_classes`` classes: ln(classes)."""
    return math.log(max(2, num_classes))


def loss_problem(
    name: str,
    value: float | None,
    epoch: int,
    num_classes: int,
    best: tuple[float, int] | None = None,
    growth: float = GROWTH,
    floor: float = FLOOR,
) -> str | None:
    """Why this epoch's mean ``value`` of a loss shows divergence, or None when it does not.

    ``best`` is (the lowest finite value of this loss in earlier epochs, its epoch), or None in the first
    epoch. Fires on NaN/Inf, and on a value above ``growth`` times the lower of chance level and ``best`` that
    is also above ``floor`` times chance level (see the module docstring)."""
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{name} {value} at epoch {epoch}"
    chance = chance_loss(num_classes)
    if value <= floor * chance:
        return None
    if value > growth * chance and (best is None or best[0] >= chance):
        return (
            f"{name} {value:.3g} at epoch {epoch} is {value / chance:.2g}× the chance-level loss "
            f"ln({max(2, num_classes)}) = {chance:.3g}"
        )
    if best is not None and value > growth * best[0]:
        ratio = value / best[0] if best[0] > 0 else math.inf
        return f"{name} {value:.3g} at epoch {epoch} is {ratio:.2g}× its lowest, {best[0]:.3g} at epoch {best[1]}"
    return None


def advice(lr: float, grad_clip: float = 0.0) -> str:
    """What to change: a lower rate, and gradient clipping when it was off."""
    text = f"lower --lr (it was {lr:g})"
    if grad_clip <= 0:
        text += " and set --grad-clip 1.0"
    return text


@dataclass
class DivergenceGuard:
    """Watches one run's losses (see the module docstring). Under DDP feed it the all-reduced epoch row, so
    every rank reaches the same verdict; ``observe_step`` sees the rank's own step loss."""

    num_classes: int
    growth: float = GROWTH
    floor: float = FLOOR
    best: dict[str, tuple[float, int]] = field(default_factory=dict)  # row key -> (lowest finite value, epoch)
    bad_step: tuple[float, int, int] | None = None  # (loss, global step, 1-based epoch) of the first NaN/Inf step

    def remember(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Take the lowest losses of earlier epochs (a resumed run's history) as references."""
        for row in rows:
            self._keep(row)

    def observe_step(self, loss: float, global_step: int, epoch: int) -> bool:
        """One step's loss (``epoch`` 1-based); True when it is NaN/Inf. The first such step is kept for the
        epoch's reason."""
        if math.isfinite(loss):
            return False
        if self.bad_step is None:
            self.bad_step = (loss, global_step, epoch)
        return True

    def check_epoch(self, row: Mapping[str, Any]) -> str | None:
        """``diverged: ...`` for this epoch's row (``epoch``, ``train_loss``, ``valid_loss``), or None.

        The first finding is spelled out, the others follow in parentheses. A healthy epoch's losses become
        references for the next epochs; a diverged one's do not."""
        epoch = int(row["epoch"])
        findings: list[tuple[str, str]] = []  # (full text, short text)
        if self.bad_step is not None:
            loss, step, at = self.bad_step
            findings.append((f"the training loss was {loss} at step {step} in epoch {at}", f"train loss {loss}"))
        for key, name in LOSSES:
            value = row.get(key)
            problem = loss_problem(name, value, epoch, self.num_classes, self.best.get(key), self.growth, self.floor)
            if problem is None:
                continue
            if key == "train_loss" and self.bad_step is not None and not math.isfinite(value):
                continue  # the NaN/Inf step already says it
            findings.append((problem, f"{name} {value:.3g}"))
        if not findings:
            self._keep(row)
            return None
        reason = "diverged: " + findings[0][0]
        if len(findings) > 1:
            reason += " (also " + ", ".join(short for _, short in findings[1:]) + ")"
        return reason

    def _keep(self, row: Mapping[str, Any]) -> None:
        for key, _ in LOSSES:
            value = row.get(key)
            if value is not None and math.isfinite(value) and (key not in self.best or value < self.best[key][0]):
                self.best[key] = (float(value), int(row["epoch"]))
