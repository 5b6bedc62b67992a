"""The Debugger section (from debugger.json): NaN/Inf, gradient norm and update/weight ratio per layer, zero and
dead activations, and the class distribution of the training inputs with the classes most often wrong."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .charts import figure, img, legend, legend_label, mark_epochs, plot, xy
from .markup import esc, fmt_share, note, table
from .run import Run
from .values import is_finite

TOP_LAYERS = 8


def debugger_section(run: Run) -> str:
    debugger = run.debugger
    if debugger is None:
        return note(run.why_missing("debugger.json"))
    parts = [
        f"<p>{esc(debugger.get('records', 0))} sampled steps (every {esc(debugger.get('interval'))} steps); "
        f"collections: {esc(', '.join(map(str, debugger.get('collections') or [])) or '–')}.</p>"
    ]
    nonfinite = debugger.get("nonfinite") or {}
    if nonfinite.get("first_step") is not None:
        names = ", ".join(map(str, nonfinite.get("tensors") or []))
        parts.append(
            f'<div class="error">NaN/Inf first seen at step {esc(nonfinite["first_step"])} in: {esc(names)}</div>'
        )
    layers = debugger.get("layers") or {}
    if layers:
        parts.append("<h3>Gradient norm per layer</h3>")
        parts.append(plot(lambda: _layer_figure(run, layers, "grad_norm", "gradient L2 norm"), "gradient norms"))
        parts.append("<h3>Update / weight ratio</h3>")
        parts.append(
            plot(lambda: _layer_figure(run, layers, "update_ratio", "|Δw| / |w| per step"), "update/weight ratios")
        )
    else:
        parts.append(note("no per-layer statistics (the gradients collection was off, or no step was sampled)"))
    activations = debugger.get("activations") or {}
    if activations:
        parts.append("<h3>Activations: zero and dead fraction</h3>")
        parts.append(plot(lambda: _activation_figure(activations), "activation fractions"))
    classes = debugger.get("classes") or {}
    if classes.get("seen"):
        parts.append("<h3>Class distribution of the training inputs</h3>")
        parts.append(plot(lambda: _class_figure(classes), "the class distribution"))
        parts.append(_class_table(classes))
    return "".join(parts)


def _most_varying(series: dict[str, dict[str, Any]], key: str, count: int) -> list[str]:
    """The names whose ``key`` series spans the most orders of magnitude (ties: the largest values)."""
    scored = []
    for name, stats in series.items():
        values = [p[1] for p in (stats or {}).get(key) or [] if len(p) >= 2 and is_finite(p[1]) and p[1] > 0]
        if not values:
            continue
        logs = [math.log10(v) for v in values]
        spread = statistics.pstdev(logs) if len(logs) > 1 else 0.0
        scored.append((spread, max(logs), name))
    scored.sort(reverse=True)
    return [name for _, _, name in scored[:count]]


def _layer_figure(run: Run, layers: dict[str, Any], key: str, ylabel: str) -> str:
    names = _most_varying(layers, key, TOP_LAYERS)
    if not names:
        return note(f"no {key.replace('_', ' ')} recorded (update ratios need two sampled steps in a row)")
    fig, (ax,) = figure(1, height=3.4)
    for name in names:
        xs, ys = xy(layers[name].get(key))
        ax.plot(xs, ys, linewidth=1.1, label=legend_label(name))
    ax.set_yscale("log")
    ax.set_xlabel("global step", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if key == "update_ratio":
        ax.axhspan(1e-4, 1e-2, color="#2e7d32", alpha=0.07, label=" usual range 1e-4 … 1e-2")
    mark_epochs(ax, run)
    legend(ax, outside=True)
    caption = f"The {len(names)} of {len(layers)} layers whose {key.replace('_', ' ')} varied most (log scale)."
    return img(fig, f"{key} per layer", esc(caption))


def _activation_figure(activations: dict[str, Any]) -> str:
    fig, (zero_ax, dead_ax) = figure(2, height=3.4)
    zero = _top_by(activations, "zero_fraction", TOP_LAYERS // 2 + 2)
    dead = _top_by(activations, "dead_fraction", TOP_LAYERS // 2 + 2)
    for name in zero:
        xs, ys = xy(activations[name].get("zero_fraction"))
        zero_ax.plot(xs, ys, linewidth=1.1, label=legend_label(name, 30))
    for name in dead:
        xs, ys = xy(activations[name].get("dead_fraction"))
        dead_ax.plot(xs, ys, linewidth=1.1, label=legend_label(name, 30))
    zero_ax.set_title("share of zero outputs (highest modules)", fontsize=10)
    dead_ax.set_title("share of dead channels (ReLU family)", fontsize=10)
    for ax in (zero_ax, dead_ax):
        ax.set(ylim=(-0.02, 1.02))
        ax.set_xlabel("global step", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    if not dead:
        dead_ax.text(
            0.5,
            0.5,
            "no ReLU-family activation recorded",
            ha="center",
            va="center",
            transform=dead_ax.transAxes,
            color="grey",
        )
    return img(
        fig,
        "activation zero and dead fractions",
        "Left: share of activations that are exactly zero. Right: "
        "share of channels with no positive output anywhere in the batch (dead ReLU).",
    )


def _top_by(series: dict[str, Any], key: str, count: int) -> list[str]:
    scored = []
    for name, stats in series.items():
        values = [p[1] for p in (stats or {}).get(key) or [] if len(p) >= 2 and is_finite(p[1])]
        if values:
            scored.append((max(values), name))
    scored.sort(reverse=True)
    return [name for _, name in scored[:count]]


def _class_figure(classes: dict[str, Any]) -> str:
    labels = [str(label) for label in classes.get("labels") or []]
    seen = list(classes.get("seen") or [])
    wrong = list(classes.get("wrong") or [0] * len(seen))
    labels = labels or [str(i) for i in range(len(seen))]
    count = len(seen)
    fig, (ax,) = figure(1, height=3.4 if count <= 12 else 4.2)
    positions = list(range(count))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], seen, width, color="#5b8fd1", label="seen")
    ax.bar([p + width / 2 for p in positions], wrong[:count], width, color="#d9534f", label="predicted wrong")
    if count <= 30:
        names = [legend_label(label, 24).strip() for label in labels[:count]]
        ax.set_xticks(positions, names, rotation=0 if count <= 6 else 90, fontsize=8)
    else:  # too many to name: the table below names the ones that matter
        ax.set_xlabel(f"{count} classes in label order", fontsize=9)
        ax.set_xlim(-1, count)
    ax.set_ylabel("training images (all epochs)", fontsize=9)
    ax.grid(axis="x", visible=False)
    legend(ax)
    known = [n for n in seen if is_finite(n) and n > 0]
    ratio = f"; most / fewest seen: {max(known) / min(known):.2f}" if known else ""
    return img(
        fig,
        "class distribution",
        esc(f"Training images seen per class and how many the model got wrong while training{ratio}."),
    )


def _class_table(classes: dict[str, Any], count: int = 10) -> str:
    """The classes the model got wrong most often while training (share of the images of that class it saw)."""
    seen, wrong = classes.get("seen") or [], classes.get("wrong") or []
    labels = classes.get("labels") or [str(i) for i in range(len(seen))]
    rows = [
        (w / n, label, n, w)
        for label, n, w in zip(labels, seen, wrong, strict=False)
        if is_finite(n) and is_finite(w) and n > 0 and w > 0
    ]
    if not rows:
        return ""
    rows.sort(key=lambda row: (-row[0], str(row[1])))
    shown = rows[:count]
    listing = table(
        ["class", "seen", "wrong", "wrong share"],
        [[esc(label), f"{n:,}", f"{w:,}", fmt_share(share)] for share, label, n, w in shown],
        numeric=(1, 2, 3),
    )
    return f"<h4>Most often wrong while training ({len(shown)} of {len(seen)} classes)</h4>{listing}"
