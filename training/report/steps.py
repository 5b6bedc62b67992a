"""The profiler's sections on training steps (from profiler.json): Step time (the split into data wait,
forward+backward and optimizer, outlier steps), Data loading (workers, data wait, the data-loading rules), and Top
operators (torch.profiler's table and where its trace is)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

from .charts import figure, img, legend, plot, thin
from .markup import esc, fmt_number, fmt_seconds, fmt_share, kv_table, note, table
from .rules import rules_table
from .run import Run
from .values import float_or_nan, get, is_finite

PART_NAMES = {
    "data_seconds": "data",
    "forward_backward_seconds": "forward+backward",
    "optimizer_seconds": "optimizer",
}
PART_COLOURS = {"data_seconds": "#e69f00", "forward_backward_seconds": "#0072b2", "optimizer_seconds": "#009e73"}
DATA_RULES = ("dataloader", "cpubottleneck", "iobottleneck")  # rule names, lower case without _ or -


def steps_section(run: Run) -> str:
    if run.profiler is None:
        return note(run.why_missing("profiler.json"))
    summary = get(run.profiler, "steps", "summary") or {}
    series = get(run.profiler, "steps", "series") or []
    if not summary.get("steps"):
        return note("no training step was timed")
    shares = summary.get("share") or {}
    seconds = summary.get("seconds") or {}
    bar = "".join(
        f'<div style="width:{_clip(shares.get(part)) * 100:.2f}%;'
        f'background:{PART_COLOURS[part]}" title="{name}">{name} {fmt_share(shares.get(part))}</div>'
        for part, name in PART_NAMES.items()
    )
    split = ", ".join(
        f"{name} <b>{fmt_share(shares.get(part))}</b> ({fmt_seconds(seconds.get(part))})"
        for part, name in PART_NAMES.items()
    )
    outliers = summary.get("outliers") or []
    rows = [
        ("steps timed", f"{summary['steps']:,} ({fmt_seconds(summary.get('total_seconds'))} in all)"),
        ("split", split),
        (
            "step time",
            f"median <b>{fmt_seconds(summary.get('median_step_seconds'))}</b>, p90 "
            f"{fmt_seconds(summary.get('p90_step_seconds'))}, max {fmt_seconds(summary.get('max_step_seconds'))}",
        ),
        ("throughput", f"{float_or_nan(summary.get('images_per_second')):,.1f} images/s per process"),
        (
            "outliers",
            f"{len(outliers)} steps slower than {fmt_seconds(summary.get('outlier_threshold_seconds'))}"
            " (median + 5 × MAD, warm-up excluded)",
        ),
        (
            "start-up",
            f"{fmt_seconds(run.profiler.get('init_seconds'))} from process start to the end of the first step",
        ),
    ]
    parts = [kv_table(rows), f'<div class="sharebar">{bar}</div>']
    if series:
        parts.append(plot(lambda: _step_figure(series, summary), "the step times"))
    if outliers:
        shown = sorted(outliers, key=lambda o: -float_or_nan(o.get("step_seconds")))[:15]
        listing = table(
            ["global step", "epoch", "step time"],
            [[esc(o.get("global_step")), esc(o.get("epoch")), fmt_seconds(o.get("step_seconds"))] for o in shown],
            numeric=(0, 1, 2),
        )
        parts.append(f"<h3>Slowest outlier steps ({len(shown)} of {len(outliers)})</h3>{listing}")
    return "".join(parts)


def _step_figure(series: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    fig, (time_ax, hist_ax) = figure(2, gridspec_kw={"width_ratios": [2.2, 1]})
    rows = sorted(series, key=lambda r: float_or_nan(r.get("global_step")))
    thinned = thin(rows)
    steps = [float_or_nan(r.get("global_step")) for r in thinned]
    stacks = [[float_or_nan(r.get(part)) * 1e3 for r in thinned] for part in PART_NAMES]
    time_ax.stackplot(
        steps, stacks, labels=list(PART_NAMES.values()), colors=list(PART_COLOURS.values()), alpha=0.85, linewidth=0
    )
    outliers = summary.get("outliers") or []
    slow = {o.get("global_step") for o in outliers}
    usual = sorted(
        r["step_seconds"] * 1e3 for r in rows if r.get("global_step") not in slow and is_finite(r.get("step_seconds"))
    )
    threshold = summary.get("outlier_threshold_seconds")
    # The axis fits the usual steps (the warm-up and outliers would flatten them); outliers sit at the top edge.
    top = max(usual[int(0.99 * (len(usual) - 1))] * 1.6 if usual else 1.0, float_or_nan(threshold) * 1e3 * 1.25 or 0)
    top = top if math.isfinite(top) and top > 0 else None
    if top:
        time_ax.set_ylim(0, top)
    if is_finite(threshold):
        time_ax.axhline(threshold * 1e3, color="#c62828", linestyle=":", linewidth=0.9, label="outlier threshold")
    if outliers:
        values = [float_or_nan(o.get("step_seconds")) * 1e3 for o in outliers]
        time_ax.scatter(
            [o.get("global_step") for o in outliers],
            [min(v, top * 0.93) if top else v for v in values],
            marker="v",
            color="#c62828",
            s=24,
            zorder=5,
            label="outlier step",
            clip_on=False,
        )
        for outlier in sorted(outliers, key=lambda o: -float_or_nan(o.get("step_seconds")))[:8]:
            value = float_or_nan(outlier.get("step_seconds")) * 1e3
            if top and value > top:
                time_ax.annotate(
                    fmt_seconds(value / 1e3),
                    (outlier.get("global_step"), top * 0.93),
                    xytext=(3, -3),
                    textcoords="offset points",
                    fontsize=7,
                    color="#c62828",
                    va="top",
                )
    time_ax.set_ylabel("ms per step", fontsize=9)
    time_ax.set_xlabel("global step", fontsize=9)
    time_ax.legend(fontsize=7.5, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=5, frameon=False, borderaxespad=0)
    if usual:
        hist_ax.hist([d for d in usual if not top or d <= top], bins=40, color="#0072b2", alpha=0.8)
        for key, label, style in (("median_step_seconds", "median", "-"), ("p90_step_seconds", "p90", "--")):
            if is_finite(summary.get(key)):
                hist_ax.axvline(
                    summary[key] * 1e3,
                    color="#333",
                    linestyle=style,
                    linewidth=1,
                    label=f"{label} {fmt_seconds(summary[key])}",
                )
    hist_ax.set_title("step time distribution (outliers left out)", fontsize=10)
    hist_ax.set_xlabel("ms per step", fontsize=9)
    legend(hist_ax)
    return img(
        fig,
        "step time breakdown",
        "Left: each step's data wait, forward+backward and optimizer time, stacked; red triangles mark outlier steps "
        "(at the top edge, with their time, when they are off the scale). Right: how the other steps' times are "
        "distributed.",
    )


def data_section(run: Run) -> str:
    if run.profiler is None:
        return note(run.why_missing("profiler.json"))
    profiler = run.profiler
    summary = get(profiler, "steps", "summary") or {}
    series = get(profiler, "steps", "series") or []
    waits = [r.get("data_seconds") for r in series]
    median_wait = _median(waits)
    median_step = summary.get("median_step_seconds")
    workers, cores = profiler.get("num_workers"), profiler.get("cpu_count")
    world = profiler.get("world_size") or 1
    rows = [
        (
            "loader workers",
            f"<b>{esc(workers)}</b> per process × {esc(world)} process(es) on <b>{esc(cores)}</b> "
            "cores this process may use",
        ),
        ("batch size", f"{esc(profiler.get('batch_size'))} per process"),
        ("data wait share", f"<b>{fmt_share(get(summary, 'share', 'data_seconds'))}</b> of step time"),
        (
            "median data wait",
            f"{fmt_seconds(median_wait)} per step"
            + (f" (median step {fmt_seconds(median_step)})" if is_finite(median_step) else ""),
        ),
    ]
    parts = [kv_table(rows)]
    verdicts = [r for r in run.rules if _is_data_rule(r)]
    if verdicts:
        parts.append("<h3>What the data-loading rules say</h3>" + rules_table(verdicts))
    else:
        parts.append(note("no data-loading rule (Dataloader, CPUBottleneck, IOBottleneck) ran: check --profiler-rules"))
    return "".join(parts)


def _is_data_rule(rule: dict[str, Any]) -> bool:
    name = str(rule.get("rule") or "").lower().replace("_", "").replace("-", "")
    return name in DATA_RULES


def operators_section(run: Run) -> str:
    if run.profiler is None:
        return note(run.why_missing("profiler.json"))
    torch_profiler = run.profiler.get("torch_profiler")
    if not torch_profiler:
        return note(
            "torch.profiler did not run in this job (it runs for a window of steps when the profiler is on;"
            " a run shorter than the window has none)"
        )
    parts = []
    steps = torch_profiler.get("steps") or []
    if len(steps) == 2:
        parts.append(f"<p>Profiled steps {esc(steps[0])} to {esc(steps[1])}.</p>")
    operators = torch_profiler.get("top_operators") or []
    if operators:
        headers = ["operator", "calls", "CPU total", "self CPU", "device total", "self device", "self share"]
        rows = [
            [
                f"<code>{esc(op.get('name'))}</code>",
                fmt_number(op.get("calls")),
                _ms(op.get("cpu_total_ms")),
                _ms(op.get("self_cpu_ms")),
                _ms(op.get("device_total_ms")),
                _ms(op.get("self_device_ms")),
                fmt_share(op.get("self_share")),
            ]
            for op in operators
        ]
        parts.append(table(headers, rows, numeric=range(1, 7)))
    trace = torch_profiler.get("trace")
    if trace:
        found = (run.output_dir / str(trace)).is_file()
        where = f"<code>{esc(trace)}</code>" + (" next to this report" if found else " (not found next to this report)")
        parts.append(
            f'<p>Full trace: {where}. Open it in Perfetto: <a href="https://ui.perfetto.dev">https://ui.perfetto.dev'
            "</a> → <i>Open trace file</i> (it stays on your machine), or in Chrome at <code>chrome://tracing</code>."
            "</p>"
        )
    return "".join(parts)


def _clip(share: Any) -> float:
    return max(0.0, min(1.0, share)) if is_finite(share) else 0.0


def _ms(value: Any) -> str:
    return fmt_seconds(value / 1e3) if is_finite(value) else "–"


def _median(values: Iterable[Any]) -> float | None:
    finite = [v for v in values if is_finite(v)]
    return statistics.median(finite) if finite else None
