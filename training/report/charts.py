"""Matplotlib helpers for the report's plots: figures of the report's size, PNGs inlined as data URIs, lines thinned
to what a 900 px plot can show, legends, epoch marks, and a plot that fails as one line of HTML, not the report.

matplotlib is imported when the first plot is drawn: the terminal summary needs none.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

from .markup import esc
from .run import Run
from .values import get, is_finite

MAX_POINTS = 1500  # per plotted line: enough for a 900 px wide plot, keeps the PNGs small
FIGSIZE = (10, 3.2)
DPI = 90


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(columns: int = 1, height: float = FIGSIZE[1], **kwargs: Any) -> tuple[Any, Any]:
    """A figure of the report's width with ``columns`` axes side by side (a grid, small tick labels)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, columns, figsize=(FIGSIZE[0], height), constrained_layout=True, squeeze=False, **kwargs)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig, list(axes[0])


def img(fig: Any, alt: str, caption: str = "") -> str:
    """The figure as an inlined PNG in a <figure> (closed after); ``caption`` is HTML, already escaped."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        _show_sparse_data(fig)
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{caption_html}</figure>'


def _show_sparse_data(fig: Any) -> None:
    """Short runs: a line of one or a few points is invisible, so those get markers; an axes whose data lines hold
    no finite value (a loss that went NaN) says so instead of staying blank."""
    for ax in fig.axes:
        lines = [line for line in ax.get_lines() if line.get_transform() == ax.transData]
        finite = 0
        for line in lines:
            count = sum(1 for y in line.get_ydata() if is_finite(float(y)))
            finite += count
            if count <= 12 and line.get_marker() in ("None", None, "", " "):
                line.set_marker("o")
                line.set_markersize(3.5)
        if lines and not finite:
            ax.text(
                0.5,
                0.5,
                "no finite values (NaN/Inf)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="#c62828",
                fontsize=9,
            )


def plot(draw: Callable[[], str], what: str) -> str:
    """A plot, or a line saying why it could not be drawn (the rest of the report goes on)."""
    try:
        return draw()
    except ImportError as exc:
        return f'<div class="error">could not draw {esc(what)}: matplotlib is missing ({esc(exc)})</div>'
    except Exception as exc:
        return f'<div class="error">could not draw {esc(what)}: {esc(type(exc).__name__)}: {esc(exc)}</div>'


def thin(items: Sequence[Any], limit: int = MAX_POINTS) -> list[Any]:
    """At most about ``limit`` items, evenly spaced, the last one kept."""
    if len(items) <= limit:
        return list(items)
    stride = math.ceil(len(items) / limit)
    thinned = list(items[::stride])
    if thinned[-1] is not items[-1]:
        thinned.append(items[-1])
    return thinned


def xy(points: Any, limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """[[x, y], ...] -> (xs, ys), thinned; missing or non-numeric values become NaN (a gap in the line)."""
    pairs = [p for p in (points or []) if isinstance(p, (list, tuple)) and len(p) >= 2 and is_finite(p[0])]
    pairs = thin(pairs, limit)
    return [p[0] for p in pairs], [float(p[1]) if isinstance(p[1], (int, float)) else math.nan for p in pairs]


def legend_label(name: Any, width: int = 42) -> str:
    """A legend label: matplotlib hides labels starting with '_' and reads '$' as math, so neither may reach it."""
    text = str(name)
    if len(text) > width:
        text = "…" + text[-(width - 1) :]
    return " " + text.replace("$", r"\$")


def legend(ax: Any, outside: bool = False, **kwargs: Any) -> None:
    """A small legend when the axes has labelled lines; ``outside``: to the right of the axes."""
    if not ax.get_legend_handles_labels()[0]:
        return
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, **kwargs)
    else:
        ax.legend(fontsize=8, **kwargs)


def _epoch_starts(run: Run) -> list[tuple[int, float]]:
    """(epoch, first global step) from the profiler's step series: where the per-step plots cross an epoch."""
    starts: dict[int, float] = {}
    for row in get(run.profiler, "steps", "series") or []:
        epoch, step = row.get("epoch"), row.get("global_step")
        if is_finite(epoch) and is_finite(step) and (epoch not in starts or step < starts[epoch]):
            starts[epoch] = step
    return sorted(starts.items())[1:]


def mark_epochs(ax: Any, run: Run) -> None:
    """Dotted lines where each epoch after the first starts, on an axes over global steps."""
    for epoch, step in _epoch_starts(run)[:50]:
        ax.axvline(step, color="grey", linewidth=0.6, linestyle=":", alpha=0.8)
        ax.text(step, 1.0, f" e{epoch}", transform=ax.get_xaxis_transform(), fontsize=7, color="grey", va="top")
