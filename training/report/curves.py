"""The Training curves section: loss per step (debugger.json) and per epoch, accuracy and the learning rate per
epoch (metrics.json)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .charts import figure, img, legend, mark_epochs, plot, xy
from .markup import fmt_accuracy, note
from .run import Run
from .values import float_or_nan, is_finite


def curves_section(run: Run) -> str:
    history = run.history
    losses = (run.debugger or {}).get("losses") or []
    if not history and not losses:
        return note(run.why_missing("metrics.json"))
    parts = [plot(lambda: _loss_figure(run, history, losses), "the loss curves")]
    if history:
        parts.append(plot(lambda: _accuracy_figure(run, history), "the accuracy curves"))
    if not losses:
        parts.append(note("per-step loss: " + run.notes.get("debugger.json", "debugger.json has no losses")))
    return "".join(parts)


def _loss_figure(run: Run, history: list[dict[str, Any]], losses: list[Any]) -> str:
    columns = (1 if losses else 0) + (1 if history else 0)
    fig, axes = figure(columns)
    if losses:
        ax = axes[0]
        xs, ys = xy(losses, 4000)
        ax.plot(xs, ys, color="#9db4cc", linewidth=0.6, label="loss per step")
        ax.plot(xs, _smooth(ys, max(5, len(ys) // 50)), color="#0b4f8a", linewidth=1.4, label="moving average")
        ax.set_title("training loss per step (debugger)", fontsize=10)
        ax.set_xlabel("global step", fontsize=9)
        finite = sorted(y for y in ys if math.isfinite(y))
        if finite and finite[-1] > 20 * max(finite[len(finite) // 2], 1e-9):  # a spike flattens the rest
            ax.set_yscale("log")
        mark_epochs(ax, run)
        legend(ax)
    if history:
        ax = axes[-1]
        epochs = [row.get("epoch") for row in history]
        for key, style in (("train_loss", "-o"), ("valid_loss", "-s")):
            ax.plot(
                epochs,
                [float_or_nan(row.get(key)) for row in history],
                style,
                markersize=4,
                label=key.replace("_", " "),
            )
        ax.set_title("loss per epoch", fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        _integer_ticks(ax, epochs)
        legend(ax)
    per_step = "the loss of every training step (thin) and its moving average; dotted lines mark epoch starts."
    per_epoch = "mean train loss per epoch (as optimised, incl. label smoothing) and valid loss."
    if losses and history:
        caption = f"Left: {per_step} Right: {per_epoch}"
    else:
        caption = (per_step if losses else per_epoch)[0].upper() + (per_step if losses else per_epoch)[1:]
    return img(fig, "loss curves", caption)


def _accuracy_figure(run: Run, history: list[dict[str, Any]]) -> str:
    fig, (acc_ax, lr_ax) = figure(2)
    epochs = [row.get("epoch") for row in history]
    for key, style in (("train_accuracy", "-o"), ("valid_accuracy", "-s")):
        acc_ax.plot(
            epochs, [float_or_nan(row.get(key)) for row in history], style, markersize=4, label=key.replace("_", " ")
        )
    test = (run.metrics or {}).get("test") or {}
    if is_finite(test.get("accuracy")):
        acc_ax.axhline(
            test["accuracy"],
            color="#c62828",
            linestyle="--",
            linewidth=1,
            label=f"test {fmt_accuracy(test['accuracy'])}",
        )
    best = (run.metrics or {}).get("best_epoch")
    if is_finite(best):
        acc_ax.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch {best}")
    acc_ax.set(ylim=(0, 1.02))
    acc_ax.set_title("accuracy per epoch", fontsize=10)
    acc_ax.set_xlabel("epoch", fontsize=9)
    lr_ax.plot(epochs, [float_or_nan(row.get("lr")) for row in history], "-o", markersize=4, color="#6a3d9a")
    unfrozen = [row.get("epoch") for row in history if row.get("backbone_trainable")]
    if unfrozen and unfrozen[0] != epochs[0]:
        for ax in (acc_ax, lr_ax):
            ax.axvline(unfrozen[0] - 0.5, color="#888", linestyle="--", linewidth=1)
        lr_ax.text(
            unfrozen[0] - 0.45,
            0.98,
            "backbone unfrozen",
            transform=lr_ax.get_xaxis_transform(),
            fontsize=7,
            va="top",
            color="#555",
        )
    lr_ax.set_title("learning rate (end of epoch)", fontsize=10)
    lr_ax.set_xlabel("epoch", fontsize=9)
    for ax in (acc_ax, lr_ax):
        _integer_ticks(ax, epochs)
    legend(acc_ax, loc="lower right")
    return img(
        fig,
        "accuracy and learning rate",
        "Train and valid accuracy per epoch (dashed: test accuracy of the best weights) and the learning rate.",
    )


def _integer_ticks(ax: Any, epochs: Sequence[Any]) -> None:
    import matplotlib.ticker

    known = sorted({e for e in epochs if is_finite(e)})
    if len(known) == 1:  # one epoch: one tick, not 0.96 ... 1.04
        ax.set_xlim(known[0] - 0.5, known[0] + 0.5)
        ax.set_xticks(known)
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _smooth(values: list[float], window: int) -> list[float]:
    """A trailing moving average that skips NaN (and is NaN where the value is: a gap stays visible)."""
    out, total, count, queue = [], 0.0, 0, []
    for value in values:
        queue.append(value)
        if math.isfinite(value):
            total, count = total + value, count + 1
        if len(queue) > window:
            old = queue.pop(0)
            if math.isfinite(old):
                total, count = total - old, count - 1
        out.append(total / count if count and math.isfinite(value) else math.nan)
    return out
