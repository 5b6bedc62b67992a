"""Training curves and the confusion matrix as PNG files (matplotlib, no display needed), beside report.html.

Used by train.py at the end of a run (``from report import png_files``); run from training/,
``python -m report.png_files ../out/train/output/metrics.json`` redraws both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def training_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs valid, with the learning rate."""
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for key, style in (("train_loss", "-o"), ("valid_loss", "-s")):
        loss_ax.plot(epochs, [row[key] for row in history], style, label=key.replace("_", " "))
    for key, style in (("train_accuracy", "-o"), ("valid_accuracy", "-s")):
        acc_ax.plot(epochs, [row[key] for row in history], style, label=key.replace("_", " "))
    loss_ax.set(title="loss (train: as optimised, incl. label smoothing)", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    unfrozen = [row["epoch"] for row in history if row.get("backbone_trainable")]
    if unfrozen and unfrozen[0] != epochs[0]:
        for ax in (loss_ax, acc_ax):
            ax.axvline(unfrozen[0] - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(unfrozen[0] - 0.45, ax.get_ylim()[1], "backbone unfrozen", va="top", fontsize=8, color="grey")
    return _save(fig, path)


def confusion_matrix(confusion: list[list[int]], labels: list[str], path: Path, title: str = "test") -> Path:
    """Rows: true class, columns: predicted; cells show counts, colour shows the row's share."""
    n = len(labels)
    size = max(5.0, min(40.0, 0.35 * n + 3))
    fig, ax = plt.subplots(figsize=(size, size), constrained_layout=True)
    rows = [sum(row) or 1 for row in confusion]
    shares = [[cell / rows[i] for cell in row] for i, row in enumerate(confusion)]
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"{title} confusion matrix", xlabel="predicted class", ylabel="true class")
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 30, ha="right" if n <= 6 else "center")
    ax.set_yticks(range(n), labels)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                colour = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", color=colour, fontsize=8)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    metrics_path = Path(sys.argv[1])
    metrics = json.loads(metrics_path.read_text())
    print(training_curves(metrics["history"], metrics_path.with_name("training_curves.png")))
    test = metrics["test"]
    print(confusion_matrix(test["confusion"], metrics["labels"], metrics_path.with_name("confusion_matrix.png")))
