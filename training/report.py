"""The run report: one self-contained HTML page from a run's OUTPUT_DIR (metrics.json, debugger.json, profiler.json).

Sections: job summary, every rule verdict (fired first, a banner when one fired or stopped training), the
decisions the model makes (calibration, thresholds, unknown images: from open_set.json, drawn by
report_decisions.py; left out for a run without that file), training curves, debugger statistics (gradient
norms, update/weight ratios, activations, classes), system usage, step time breakdown, data loading, top
operators. Plots are matplotlib PNGs inlined as base64 data URIs and the CSS is inline: no script, nothing
fetched, so the file opens anywhere (a laptop, an S3 download, an attachment). Any of the three files may be
missing; the page says which and how to get it. Needs only the standard library and matplotlib, so it runs in
the SageMaker training container too; ``summary_lines`` (the terminal summary) needs no matplotlib.

    python training/report.py OUTPUT_DIR        # writes OUTPUT_DIR/report.html and prints its path
    breedfilter report RUN_DIR|s3://...         # the same, for a local run or a SageMaker job's output.tar.gz
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_NAME = "report.html"
SOURCES = ("metrics.json", "debugger.json", "profiler.json")
DECISIONS = "open_set.json"  # optional: written after training; older runs have none (no section, no note)
MISSING_HINTS = {
    "metrics.json": "no metrics.json: the run did not finish (train.py writes it at the end of a run; see the log)",
    "debugger.json": "debugger off (no debugger.json): run train.py with --debugger on",
    "profiler.json": "profiler off (no profiler.json): run train.py with --profiler on",
}
DATA_RULES = ("dataloader", "cpubottleneck", "iobottleneck")  # rule names, lower case without _ or -
MAX_POINTS = 1500  # per plotted line: enough for a 900 px wide plot, keeps the PNGs small
TOP_LAYERS = 8
FIGSIZE = (10, 3.2)
DPI = 90
STATUS_ORDER = {"fired": 0, "ok": 1, "not_applicable": 2}
STATUS_TEXT = {"fired": "fired", "ok": "ok", "not_applicable": "not applicable"}
PART_NAMES = {
    "data_seconds": "data",
    "forward_backward_seconds": "forward+backward",
    "optimizer_seconds": "optimizer",
}
PART_COLOURS = {"data_seconds": "#e69f00", "forward_backward_seconds": "#0072b2", "optimizer_seconds": "#009e73"}


class NoRunFiles(FileNotFoundError):
    """The directory holds none of metrics.json, debugger.json, profiler.json."""


@dataclass
class Run:
    """The documents of one output dir; ``notes`` say what is missing or unreadable, and why."""

    output_dir: Path
    metrics: dict[str, Any] | None = None
    debugger: dict[str, Any] | None = None
    profiler: dict[str, Any] | None = None
    open_set: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # source file -> why it is not used

    @property
    def rules(self) -> list[dict[str, Any]]:
        """Every verdict of both files, fired first (then ok, then not applicable), the stopping rule at the top."""
        seen: set[tuple[str, str]] = set()
        verdicts = []
        for document in (self.debugger, self.profiler):
            for rule in (document or {}).get("rules") or []:
                key = (str(rule.get("rule")), str(rule.get("source")))
                if key not in seen:
                    seen.add(key)
                    verdicts.append(rule)
        stopped = self.stopped_by
        if stopped and (str(stopped.get("rule")), str(stopped.get("source"))) not in seen:
            verdicts.append(stopped)

        def order(rule: dict[str, Any]) -> tuple[int, int]:
            is_stop = bool(stopped) and rule.get("rule") == stopped.get("rule")
            return (0 if is_stop else 1, STATUS_ORDER.get(rule.get("status"), 3))

        return sorted(verdicts, key=order)

    @property
    def stopped_by(self) -> dict[str, Any] | None:
        return (self.debugger or {}).get("stopped_by") or (self.profiler or {}).get("stopped_by")

    @property
    def history(self) -> list[dict[str, Any]]:
        return (self.metrics or {}).get("history") or (self.debugger or {}).get("epochs") or []

    @property
    def labels(self) -> list[str]:
        return list((self.metrics or {}).get("labels") or (self.debugger or {}).get("labels") or [])

    @property
    def job_name(self) -> str:
        environment = (self.metrics or {}).get("environment") or {}
        if environment.get("job_name"):
            return str(environment["job_name"])
        # out/train/output -> train; /opt/ml/output/data -> ml: the first name that is not a generic one
        return next(
            (
                p.name
                for p in [self.output_dir.resolve(), *self.output_dir.resolve().parents]
                if p.name not in ("output", "data")
            ),
            "run",
        )


def load(output_dir: Path | str) -> Run:
    """Read whatever of the three files is there (raises NoRunFiles when none is)."""
    output_dir = Path(output_dir)
    run = Run(output_dir)
    found = 0
    for name in SOURCES:
        path = output_dir / name
        if not path.is_file():
            run.notes[name] = MISSING_HINTS[name]
            continue
        found += 1
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            run.notes[name] = f"{name} unreadable ({exc}); the run may have been cut off while writing it"
            continue
        if not isinstance(document, dict):
            run.notes[name] = f"{name} is not a JSON object"
            continue
        setattr(run, name.removesuffix(".json"), document)
    if not found:
        raise NoRunFiles(f"none of {', '.join(SOURCES)} in {output_dir}")
    path = output_dir / DECISIONS
    if path.is_file():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            run.notes[DECISIONS] = f"{DECISIONS} unreadable ({exc}); the run may have been cut off while writing it"
        else:
            if isinstance(document, dict):
                run.open_set = document
            else:
                run.notes[DECISIONS] = f"{DECISIONS} is not a JSON object"
    return run


def write_report(output_dir: Path | str) -> Path:
    """Build OUTPUT_DIR/report.html from the run's JSON files and return its path."""
    run = load(output_dir)
    path = run.output_dir / REPORT_NAME
    path.write_text(render(run), encoding="utf-8")
    return path


# --- formatting ---------------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_seconds(seconds: Any) -> str:
    if not _finite(seconds):
        return "–"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def fmt_share(share: Any) -> str:
    return f"{share * 100:.1f}%" if _finite(share) else "–"


def fmt_accuracy(accuracy: Any) -> str:
    return f"{accuracy * 100:.2f}%" if _finite(accuracy) else "–"


def fmt_bytes(count: Any) -> str:
    if not _finite(count):
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def fmt_number(value: Any) -> str:
    """HTML-safe: ints with separators, floats to 4 significant digits, anything else (e.g. "nan") escaped."""
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return esc(value)


def _median(values: Iterable[Any]) -> float | None:
    finite = [v for v in values if _finite(v)]
    return statistics.median(finite) if finite else None


def _get(document: dict[str, Any] | None, *keys: str) -> Any:
    value: Any = document
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# --- the terminal summary -----------------------------------------------------------------------------------------


def summary_lines(output_dir: Path | str) -> list[str]:
    """A few lines for a terminal: job, accuracy, the rules that fired, the step time split, the top operators."""
    run = load(output_dir)
    metrics, profiler = run.metrics or {}, run.profiler or {}
    environment = metrics.get("environment") or {}
    where = ", ".join(
        str(part)
        for part in (
            environment.get("host"),
            environment.get("instance_type"),
            environment.get("device") or profiler.get("device"),
            environment.get("torch") and f"torch {environment['torch']}",
        )
        if part
    )
    lines = [f"job: {run.job_name}" + (f" (model {metrics['model']})" if metrics.get("model") else "")]
    if where:
        lines[0] += f" on {where}"
    if run.metrics is not None:
        planned = _get(metrics, "hyperparameters", "epochs")
        epochs = f"{len(run.history)}" + (f"/{planned}" if planned else "") + " epochs"
        test = metrics.get("test")
        test_text = (
            f"test accuracy {fmt_accuracy(test.get('accuracy'))} ({test.get('count')} images)" if test else "no test"
        )
        lines.append(
            f"result: best epoch {metrics.get('best_epoch')}: valid accuracy "
            f"{fmt_accuracy(metrics.get('best_valid_accuracy'))}, {test_text}; {epochs} in "
            f"{fmt_seconds(metrics.get('wall_seconds'))}"
            + (f"; stopped: {metrics['stop_reason']}" if metrics.get("stop_reason") else "")
        )
    if run.open_set is not None:
        import report_decisions

        lines.append(report_decisions.summary_line(run.open_set))
    rules = run.rules
    if rules:
        counts = {status: sum(r.get("status") == status for r in rules) for status in STATUS_ORDER}
        lines.append(f"rules: {counts['fired']} fired, {counts['ok']} ok, {counts['not_applicable']} not applicable")
        for rule in rules:
            if rule.get("status") == "fired":
                lines.append(f"  FIRED {_rule_title(rule)}: {rule.get('evidence')} -> {rule.get('recommendation')}")
    stopped = run.stopped_by
    if stopped:
        lines.append(f"stopped by rule {stopped.get('rule')}{_where(stopped)}")
    summary = _get(profiler, "steps", "summary") or {}
    if summary.get("steps"):
        split = " / ".join(f"{name} {fmt_share(_get(summary, 'share', part))}" for part, name in PART_NAMES.items())
        lines.append(
            f"step time: median {fmt_seconds(summary.get('median_step_seconds'))} "
            f"(p90 {fmt_seconds(summary.get('p90_step_seconds'))}, max {fmt_seconds(summary.get('max_step_seconds'))})"
            f": {split}; {summary.get('images_per_second', 0):.1f} images/s; "
            f"{len(summary.get('outliers') or [])} outlier steps"
        )
    operators = _get(profiler, "torch_profiler", "top_operators") or []
    if operators:
        lines.append(
            "top operators: " + ", ".join(f"{op.get('name')} {fmt_share(op.get('self_share'))}" for op in operators[:3])
        )
    lines.extend(run.notes.values())
    return lines


def _where(rule: dict[str, Any]) -> str:
    parts = [f"step {rule['step']}" if rule.get("step") is not None else "", ""]
    parts[1] = f"epoch {rule['epoch']}" if rule.get("epoch") is not None else ""
    text = ", ".join(p for p in parts if p)
    return f" at {text}" if text else ""


def _rule_title(rule: dict[str, Any]) -> str:
    title = f"{rule.get('rule')} ({rule.get('source')}{_where(rule).replace(' at ', ', ')}"
    if rule.get("tensor"):
        title += f", {rule['tensor']}"
    return title + ")"


# --- the page -----------------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2733;margin:0;
 background:#f4f6f8}
main{max-width:1180px;margin:0 auto;padding:18px 28px 40px;background:#fff}
h1{font-size:24px;margin:6px 0 2px}
h2{font-size:19px;margin:30px 0 8px;padding-bottom:4px;border-bottom:2px solid #dde3ea}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6b7b;margin:0 0 10px}
nav{font-size:13px;margin:6px 0 12px}nav a{color:#1f5fa8;margin-right:12px;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:190px}
table.rules{width:100%}table.rules td.tensor{word-break:break-all;max-width:200px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600;
 white-space:nowrap}
.fired{background:#c62828}.ok{background:#2e7d32}.not_applicable{background:#78848f}
tr.row-fired td{background:#fff3f3}
.small{font-size:12px;color:#5b6b7b}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-size:14px}
.banner.bad{background:#fdecea;border:1px solid #e57373}
.banner.good{background:#e8f5e9;border:1px solid #81c784}
.note{padding:8px 12px;border-left:4px solid #f0ad4e;background:#fff8e6;margin:8px 0}
.error{padding:8px 12px;border-left:4px solid #c62828;background:#fdecea;margin:8px 0}
figure{margin:8px 0 14px}figure img{width:100%;max-width:900px;height:auto;display:block}
figcaption{font-size:12px;color:#5b6b7b;max-width:900px}
.sharebar{display:flex;width:100%;max-width:900px;height:26px;border-radius:4px;overflow:hidden;margin:6px 0}
.sharebar div{color:#fff;font-size:12px;line-height:26px;padding-left:6px;white-space:nowrap;overflow:hidden}
details summary{cursor:pointer;color:#1f5fa8}
code{background:#eef2f6;padding:0 4px;border-radius:3px}
"""

SECTIONS = (
    ("summary", "Job summary"),
    ("rules", "Rules"),
    ("decisions", "Decisions: calibration, thresholds and unknown images"),
    ("curves", "Training curves"),
    ("debugger", "Debugger"),
    ("system", "System usage"),
    ("steps", "Step time"),
    ("data", "Data loading"),
    ("operators", "Top operators"),
)
NAV_TITLES = {"decisions": "Decisions"}  # where the section's title is too long for the navigation line


def render(run: Run) -> str:
    """The whole page as one string."""
    builders: dict[str, Callable[[Run], str]] = {
        "summary": _summary_section,
        "rules": _rules_section,
        "decisions": _decisions_section,
        "curves": _curves_section,
        "debugger": _debugger_section,
        "system": _system_section,
        "steps": _steps_section,
        "data": _data_section,
        "operators": _operators_section,
    }
    metrics = run.metrics or {}
    subtitle = " · ".join(
        esc(part)
        for part in (
            metrics.get("model"),
            metrics.get("model_version") and f"version {metrics['model_version']}",
            f"report written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        )
        if part
    )
    sections = [(key, title) for key, title in SECTIONS if key != "decisions" or _has_decisions(run)]
    body = [
        f"<h1>Training run report: {esc(run.job_name)}</h1>",
        f'<p class="sub">{subtitle}</p>',
        _banner(run),
        "<nav>"
        + "".join(f'<a href="#{key}">{esc(NAV_TITLES.get(key, title))}</a>' for key, title in sections)
        + "</nav>",
    ]
    for key, title in sections:
        try:
            content = builders[key](run)
        except Exception as exc:  # one broken section must not cost the whole report
            content = f'<div class="error">could not build this section: {esc(type(exc).__name__)}: {esc(exc)}</div>'
        body.append(f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>')
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Run report: {esc(run.job_name)}</title><style>{CSS}</style></head>\n"
        f"<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )


def _banner(run: Run) -> str:
    parts = []
    stopped = run.stopped_by
    fired = [rule for rule in run.rules if rule.get("status") == "fired"]
    if stopped:
        parts.append(
            f"<p><b>Training was stopped by rule {esc(stopped.get('rule'))}</b> ({esc(stopped.get('source'))})"
            f"{esc(_where(stopped))}: {esc(stopped.get('evidence'))}<br>"
            f"Recommendation: {esc(stopped.get('recommendation'))}</p>"
        )
    if fired:
        names = ", ".join(f"<b>{esc(rule.get('rule'))}</b>{esc(_where(rule))}" for rule in fired)
        parts.append(
            f'<p>{len(fired)} rule{"s" if len(fired) != 1 else ""} fired: {names}. See <a href="#rules">'
            "Rules</a> for the evidence and what to change.</p>"
        )
    html_parts = []
    if parts:
        html_parts.append(f'<div class="banner bad">{"".join(parts)}</div>')
    elif run.rules:
        html_parts.append(f'<div class="banner good">All {len(run.rules)} rules passed (none fired).</div>')
    if run.notes:
        items = "".join(f"<li>{esc(note)}</li>" for note in run.notes.values())
        html_parts.append(f'<div class="note">Missing from this report:<ul>{items}</ul></div>')
    return "".join(html_parts)


def _note(text: str) -> str:
    return f'<div class="note">{esc(text)}</div>'


def _missing(run: Run, name: str) -> str:
    return _note(run.notes.get(name, MISSING_HINTS[name]))


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    """Rows of (escaped header, already escaped/formatted html value)."""
    return '<table class="kv">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# --- a) job summary ---


def _summary_section(run: Run) -> str:
    if run.metrics is None:
        parts = [_missing(run, "metrics.json")]
        if run.history:
            parts.append(f"<p>The debugger saw {len(run.history)} epochs before the run ended.</p>")
        return "".join(parts)
    metrics = run.metrics
    environment = metrics.get("environment") or {}
    hyper = metrics.get("hyperparameters") or {}
    test = metrics.get("test")
    planned = hyper.get("epochs")
    rows = [
        (
            "model",
            esc(metrics.get("model"))
            + (f" (version {esc(metrics['model_version'])})" if metrics.get("model_version") else ""),
        ),
        ("labels", f"{len(run.labels)} classes"),
        ("epochs run / planned", f"{len(run.history)} / {esc(planned if planned is not None else '?')}"),
        (
            "best epoch",
            f"{esc(metrics.get('best_epoch'))}: valid accuracy "
            f"<b>{fmt_accuracy(metrics.get('best_valid_accuracy'))}</b>, valid loss "
            f"{fmt_number(metrics.get('best_valid_loss'))}",
        ),
        (
            "test",
            "no test split"
            if not test
            else f"accuracy <b>{fmt_accuracy(test.get('accuracy'))}</b> on "
            f"{esc(test.get('count'))} images, loss {fmt_number(test.get('loss'))}",
        ),
        ("wall time", fmt_seconds(metrics.get("wall_seconds"))),
        ("stop reason", esc(metrics.get("stop_reason") or "ran all planned epochs")),
    ]
    for document, name in ((run.debugger, "debugger"), (run.profiler, "profiler")):
        if document and _finite(document.get("seconds")):
            share = document["seconds"] / metrics["wall_seconds"] if _finite(metrics.get("wall_seconds")) else None
            rows.append(
                (
                    f"{name} overhead",
                    f"{fmt_seconds(document['seconds'])}" + (f" ({fmt_share(share)} of wall time)" if share else ""),
                )
            )
    env_text = ", ".join(
        f"{esc(key.replace('_', ' '))} <b>{esc(environment[key])}</b>"
        for key in ("host", "job_name", "instance_type", "device", "torch", "python", "world_size")
        if environment.get(key) not in (None, "")
    )
    rows.append(("environment", env_text or "not recorded"))
    parts = [_kv_table(rows), _counts_table(run)]
    if hyper:
        shown = {k: v for k, v in hyper.items() if not k.endswith(("_dir", "_path")) and k not in ("data",)}
        items = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in shown.items())
        parts.append(
            f'<details><summary>hyperparameters ({len(shown)})</summary><table class="kv">{items}</table></details>'
        )
    return "".join(parts)


def _counts_table(run: Run) -> str:
    counts = (run.metrics or {}).get("counts") or {}
    if not counts:
        return ""
    splits = list(counts)
    labels = run.labels or sorted({label for split in counts.values() for label in split})
    totals = [sum((counts[s] or {}).values()) for s in splits]
    header = ["split"] + [esc(s) for s in splits]
    total_row = [["<b>images</b>"] + [f"<b>{t:,}</b>" for t in totals]]
    per_class = [[esc(label)] + [f"{(counts[s] or {}).get(label, 0):,}" for s in splits] for label in labels]
    numeric = range(1, len(splits) + 1)
    if len(labels) <= 12:
        return "<h3>Images per class and split</h3>" + _table(header, total_row + per_class, numeric)
    least = [min((counts[s] or {}).values() or [0]) for s in splits]
    most = [max((counts[s] or {}).values() or [0]) for s in splits]
    spread = [["fewest per class"] + [f"{n:,}" for n in least], ["most per class"] + [f"{n:,}" for n in most]]
    return (
        "<h3>Images per split</h3>"
        + _table(header, total_row + spread, numeric)
        + f"<details><summary>per class ({len(labels)} classes)</summary>{_table(header, per_class, numeric)}"
        "</details>"
    )


# --- b) rules ---


def _rules_section(run: Run) -> str:
    parts = [_missing(run, name) for name in ("debugger.json", "profiler.json") if name in run.notes]
    rules = run.rules
    if not rules:
        if run.debugger is not None or run.profiler is not None:
            parts.append(_note("no rule ran (all rules were turned off with --debugger-rules / --profiler-rules)"))
        return "".join(parts)
    return "".join(parts) + _rules_table(rules)


def _rules_table(rules: Sequence[dict[str, Any]]) -> str:
    rows = []
    for rule in rules:
        status = rule.get("status") if rule.get("status") in STATUS_TEXT else "not_applicable"
        thresholds = ", ".join(f"{k}={fmt_number(v)}" for k, v in (rule.get("thresholds") or {}).items())
        where = "<br>".join(f"{name} {esc(rule[name])}" for name in ("step", "epoch") if rule.get(name) is not None)
        if rule.get("count"):
            where += f'<br><span class="small">{esc(rule["count"])} times</span>'
        rows.append(
            f'<tr class="row-{status}"><td><span class="badge {status}">{STATUS_TEXT[status]}</span></td>'
            f'<td><b>{esc(rule.get("rule"))}</b><br><span class="small">{esc(rule.get("source"))}'
            f"{', action ' + esc(rule['action']) if rule.get('action') else ''}"
            f"{'<br>' + esc(thresholds) if thresholds else ''}</span></td>"
            f'<td>{where or "–"}</td><td class="tensor">{esc(rule.get("tensor")) or "–"}</td>'
            f"<td>{esc(rule.get('evidence'))}</td><td>{esc(rule.get('recommendation'))}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("status", "rule", "step / epoch", "tensor", "evidence", "recommendation"))
    return f'<table class="rules"><tr>{head}</tr>{"".join(rows)}</table>'


# --- plotting helpers ---


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(columns: int = 1, height: float = FIGSIZE[1], **kwargs: Any) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, axes = plt.subplots(1, columns, figsize=(FIGSIZE[0], height), constrained_layout=True, squeeze=False, **kwargs)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig, list(axes[0])


def _img(fig: Any, alt: str, caption: str = "") -> str:
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
            count = sum(1 for y in line.get_ydata() if _finite(float(y)))
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


def _plot(draw: Callable[[], str], what: str) -> str:
    """A plot, or a line saying why it could not be drawn (the rest of the report goes on)."""
    try:
        return draw()
    except ImportError as exc:
        return f'<div class="error">could not draw {esc(what)}: matplotlib is missing ({esc(exc)})</div>'
    except Exception as exc:
        return f'<div class="error">could not draw {esc(what)}: {esc(type(exc).__name__)}: {esc(exc)}</div>'


def _thin(items: Sequence[Any], limit: int = MAX_POINTS) -> list[Any]:
    if len(items) <= limit:
        return list(items)
    stride = math.ceil(len(items) / limit)
    thinned = list(items[::stride])
    if thinned[-1] is not items[-1]:
        thinned.append(items[-1])
    return thinned


def _xy(points: Any, limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """[[x, y], ...] -> (xs, ys), thinned; missing or non-numeric values become NaN (a gap in the line)."""
    pairs = [p for p in (points or []) if isinstance(p, (list, tuple)) and len(p) >= 2 and _finite(p[0])]
    pairs = _thin(pairs, limit)
    return [p[0] for p in pairs], [float(p[1]) if isinstance(p[1], (int, float)) else math.nan for p in pairs]


def _label(name: Any, width: int = 42) -> str:
    """A legend label: matplotlib hides labels starting with '_' and reads '$' as math, so neither may reach it."""
    text = str(name)
    if len(text) > width:
        text = "…" + text[-(width - 1) :]
    return " " + text.replace("$", r"\$")


def _legend(ax: Any, outside: bool = False, **kwargs: Any) -> None:
    if not ax.get_legend_handles_labels()[0]:
        return
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, **kwargs)
    else:
        ax.legend(fontsize=8, **kwargs)


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


# --- b2) decisions: calibration, thresholds, unknown images (report_decisions.py) ---


def _has_decisions(run: Run) -> bool:
    """open_set.json is there (readable or not): a run from before it existed gets no section and no note."""
    return run.open_set is not None or DECISIONS in run.notes


def _decisions_section(run: Run) -> str:
    if run.open_set is None:
        return _note(run.notes.get(DECISIONS, f"no {DECISIONS}"))
    import report_decisions  # imports this module: imported here, not at the top

    return report_decisions.section(run.open_set)


# --- c) training curves ---


def _curves_section(run: Run) -> str:
    history = run.history
    losses = (run.debugger or {}).get("losses") or []
    if not history and not losses:
        return _missing(run, "metrics.json")
    parts = [_plot(lambda: _loss_figure(run, history, losses), "the loss curves")]
    if history:
        parts.append(_plot(lambda: _accuracy_figure(run, history), "the accuracy curves"))
    if not losses:
        parts.append(_note("per-step loss: " + run.notes.get("debugger.json", "debugger.json has no losses")))
    return "".join(parts)


def _epoch_starts(run: Run) -> list[tuple[int, float]]:
    """(epoch, first global step) from the profiler's step series: where the per-step plots cross an epoch."""
    starts: dict[int, float] = {}
    for row in _get(run.profiler, "steps", "series") or []:
        epoch, step = row.get("epoch"), row.get("global_step")
        if _finite(epoch) and _finite(step) and (epoch not in starts or step < starts[epoch]):
            starts[epoch] = step
    return sorted(starts.items())[1:]


def _mark_epochs(ax: Any, run: Run) -> None:
    for epoch, step in _epoch_starts(run)[:50]:
        ax.axvline(step, color="grey", linewidth=0.6, linestyle=":", alpha=0.8)
        ax.text(step, 1.0, f" e{epoch}", transform=ax.get_xaxis_transform(), fontsize=7, color="grey", va="top")


def _loss_figure(run: Run, history: list[dict[str, Any]], losses: list[Any]) -> str:
    columns = (1 if losses else 0) + (1 if history else 0)
    fig, axes = _figure(columns)
    if losses:
        ax = axes[0]
        xs, ys = _xy(losses, 4000)
        ax.plot(xs, ys, color="#9db4cc", linewidth=0.6, label="loss per step")
        ax.plot(xs, _smooth(ys, max(5, len(ys) // 50)), color="#0b4f8a", linewidth=1.4, label="moving average")
        ax.set_title("training loss per step (debugger)", fontsize=10)
        ax.set_xlabel("global step", fontsize=9)
        finite = sorted(y for y in ys if math.isfinite(y))
        if finite and finite[-1] > 20 * max(finite[len(finite) // 2], 1e-9):  # a spike flattens the rest
            ax.set_yscale("log")
        _mark_epochs(ax, run)
        _legend(ax)
    if history:
        ax = axes[-1]
        epochs = [row.get("epoch") for row in history]
        for key, style in (("train_loss", "-o"), ("valid_loss", "-s")):
            ax.plot(epochs, [_nan(row.get(key)) for row in history], style, markersize=4, label=key.replace("_", " "))
        ax.set_title("loss per epoch", fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        _integer_ticks(ax, epochs)
        _legend(ax)
    per_step = "the loss of every training step (thin) and its moving average; dotted lines mark epoch starts."
    per_epoch = "mean train loss per epoch (as optimised, incl. label smoothing) and valid loss."
    if losses and history:
        caption = f"Left: {per_step} Right: {per_epoch}"
    else:
        caption = (per_step if losses else per_epoch)[0].upper() + (per_step if losses else per_epoch)[1:]
    return _img(fig, "loss curves", caption)


def _accuracy_figure(run: Run, history: list[dict[str, Any]]) -> str:
    fig, (acc_ax, lr_ax) = _figure(2)
    epochs = [row.get("epoch") for row in history]
    for key, style in (("train_accuracy", "-o"), ("valid_accuracy", "-s")):
        acc_ax.plot(epochs, [_nan(row.get(key)) for row in history], style, markersize=4, label=key.replace("_", " "))
    test = (run.metrics or {}).get("test") or {}
    if _finite(test.get("accuracy")):
        acc_ax.axhline(
            test["accuracy"],
            color="#c62828",
            linestyle="--",
            linewidth=1,
            label=f"test {fmt_accuracy(test['accuracy'])}",
        )
    best = (run.metrics or {}).get("best_epoch")
    if _finite(best):
        acc_ax.axvline(best, color="grey", linestyle=":", linewidth=1, label=f"best epoch {best}")
    acc_ax.set(ylim=(0, 1.02))
    acc_ax.set_title("accuracy per epoch", fontsize=10)
    acc_ax.set_xlabel("epoch", fontsize=9)
    lr_ax.plot(epochs, [_nan(row.get("lr")) for row in history], "-o", markersize=4, color="#6a3d9a")
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
    _legend(acc_ax, loc="lower right")
    return _img(
        fig,
        "accuracy and learning rate",
        "Train and valid accuracy per epoch (dashed: test accuracy of the best weights) and the learning rate.",
    )


def _nan(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _integer_ticks(ax: Any, epochs: Sequence[Any]) -> None:
    import matplotlib.ticker

    known = sorted({e for e in epochs if _finite(e)})
    if len(known) == 1:  # one epoch: one tick, not 0.96 ... 1.04
        ax.set_xlim(known[0] - 0.5, known[0] + 0.5)
        ax.set_xticks(known)
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


# --- d) debugger ---


def _debugger_section(run: Run) -> str:
    debugger = run.debugger
    if debugger is None:
        return _missing(run, "debugger.json")
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
        parts.append(_plot(lambda: _layer_figure(run, layers, "grad_norm", "gradient L2 norm"), "gradient norms"))
        parts.append("<h3>Update / weight ratio</h3>")
        parts.append(
            _plot(lambda: _layer_figure(run, layers, "update_ratio", "|Δw| / |w| per step"), "update/weight ratios")
        )
    else:
        parts.append(_note("no per-layer statistics (the gradients collection was off, or no step was sampled)"))
    activations = debugger.get("activations") or {}
    if activations:
        parts.append("<h3>Activations: zero and dead fraction</h3>")
        parts.append(_plot(lambda: _activation_figure(activations), "activation fractions"))
    classes = debugger.get("classes") or {}
    if classes.get("seen"):
        parts.append("<h3>Class distribution of the training inputs</h3>")
        parts.append(_plot(lambda: _class_figure(classes), "the class distribution"))
        parts.append(_class_table(classes))
    return "".join(parts)


def _most_varying(series: dict[str, dict[str, Any]], key: str, count: int) -> list[str]:
    """The names whose ``key`` series spans the most orders of magnitude (ties: the largest values)."""
    scored = []
    for name, stats in series.items():
        values = [p[1] for p in (stats or {}).get(key) or [] if len(p) >= 2 and _finite(p[1]) and p[1] > 0]
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
        return _note(f"no {key.replace('_', ' ')} recorded (update ratios need two sampled steps in a row)")
    fig, (ax,) = _figure(1, height=3.4)
    for name in names:
        xs, ys = _xy(layers[name].get(key))
        ax.plot(xs, ys, linewidth=1.1, label=_label(name))
    ax.set_yscale("log")
    ax.set_xlabel("global step", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if key == "update_ratio":
        ax.axhspan(1e-4, 1e-2, color="#2e7d32", alpha=0.07, label=" usual range 1e-4 … 1e-2")
    _mark_epochs(ax, run)
    _legend(ax, outside=True)
    caption = f"The {len(names)} of {len(layers)} layers whose {key.replace('_', ' ')} varied most (log scale)."
    return _img(fig, f"{key} per layer", esc(caption))


def _activation_figure(activations: dict[str, Any]) -> str:
    fig, (zero_ax, dead_ax) = _figure(2, height=3.4)
    zero = _top_by(activations, "zero_fraction", TOP_LAYERS // 2 + 2)
    dead = _top_by(activations, "dead_fraction", TOP_LAYERS // 2 + 2)
    for name in zero:
        xs, ys = _xy(activations[name].get("zero_fraction"))
        zero_ax.plot(xs, ys, linewidth=1.1, label=_label(name, 30))
    for name in dead:
        xs, ys = _xy(activations[name].get("dead_fraction"))
        dead_ax.plot(xs, ys, linewidth=1.1, label=_label(name, 30))
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
    return _img(
        fig,
        "activation zero and dead fractions",
        "Left: share of activations that are exactly zero. Right: "
        "share of channels with no positive output anywhere in the batch (dead ReLU).",
    )


def _top_by(series: dict[str, Any], key: str, count: int) -> list[str]:
    scored = []
    for name, stats in series.items():
        values = [p[1] for p in (stats or {}).get(key) or [] if len(p) >= 2 and _finite(p[1])]
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
    fig, (ax,) = _figure(1, height=3.4 if count <= 12 else 4.2)
    positions = list(range(count))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], seen, width, color="#5b8fd1", label="seen")
    ax.bar([p + width / 2 for p in positions], wrong[:count], width, color="#d9534f", label="predicted wrong")
    if count <= 30:
        names = [_label(label, 24).strip() for label in labels[:count]]
        ax.set_xticks(positions, names, rotation=0 if count <= 6 else 90, fontsize=8)
    else:  # too many to name: the table below names the ones that matter
        ax.set_xlabel(f"{count} classes in label order", fontsize=9)
        ax.set_xlim(-1, count)
    ax.set_ylabel("training images (all epochs)", fontsize=9)
    ax.grid(axis="x", visible=False)
    _legend(ax)
    known = [n for n in seen if _finite(n) and n > 0]
    ratio = f"; most / fewest seen: {max(known) / min(known):.2f}" if known else ""
    return _img(
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
        if _finite(n) and _finite(w) and n > 0 and w > 0
    ]
    if not rows:
        return ""
    rows.sort(key=lambda row: (-row[0], str(row[1])))
    shown = rows[:count]
    table = _table(
        ["class", "seen", "wrong", "wrong share"],
        [[esc(label), f"{n:,}", f"{w:,}", fmt_share(share)] for share, label, n, w in shown],
        numeric=(1, 2, 3),
    )
    return f"<h4>Most often wrong while training ({len(shown)} of {len(seen)} classes)</h4>{table}"


# --- e) system usage ---


def _system_section(run: Run) -> str:
    if run.profiler is None:
        return _missing(run, "profiler.json")
    samples = _get(run.profiler, "system", "samples") or []
    if not samples:
        return _note("no system samples (the run was shorter than one sampling interval)")
    interval = _get(run.profiler, "system", "interval")
    cpu_means = [statistics.fmean(s["cpu_percent"]) for s in samples if s.get("cpu_percent")]
    gpus = [g for s in samples for g in s.get("gpu") or []]
    rows = [
        ("samples", f"{len(samples):,} every {esc(interval)} s"),
        (
            "CPU",
            f"mean {statistics.fmean(cpu_means):.0f}%, peak {max(cpu_means):.0f}% over "
            f"{len(samples[0].get('cpu_percent') or [])} cores"
            if cpu_means
            else "–",
        ),
        (
            "host memory",
            f"peak {max(_nan(s.get('memory_percent')) for s in samples):.0f}%, process RSS peak "
            f"{fmt_bytes(max(_nan(s.get('process_rss_bytes')) for s in samples))}",
        ),
    ]
    if gpus:
        utils = [g.get("utilization_percent") for g in gpus if _finite(g.get("utilization_percent"))]
        memory = [g.get("memory_used_bytes") for g in gpus if _finite(g.get("memory_used_bytes"))]
        rows.append(
            (
                "GPU",
                f"{run.profiler.get('gpu_count', '?')} GPU(s): utilisation mean "
                f"{statistics.fmean(utils) if utils else 0:.0f}%, memory peak {fmt_bytes(max(memory or [0]))}",
            )
        )
    else:
        rows.append(("GPU", "none (device " + esc(run.profiler.get("device")) + ")"))
    parts = [_kv_table(rows)]
    samples = _thin(samples)
    minutes = (samples[-1].get("t") or 0) > 600
    parts.append(_plot(lambda: _cpu_figure(samples, minutes), "CPU usage"))
    parts.append(_plot(lambda: _memory_io_figure(samples, minutes), "memory and I/O"))
    if gpus:
        parts.append(_plot(lambda: _gpu_figure(samples, minutes), "GPU usage"))
    allocator = run.profiler.get("gpu_memory") or []
    if allocator:
        parts.append(_plot(lambda: _allocator_figure(allocator), "GPU memory per step"))
    return "".join(parts)


def _times(samples: list[dict[str, Any]], minutes: bool) -> list[float]:
    return [_nan(s.get("t")) / (60 if minutes else 1) for s in samples]


def _time_axis(ax: Any, minutes: bool) -> None:
    ax.set_xlabel("minutes since start" if minutes else "seconds since start", fontsize=9)


def _cpu_figure(samples: list[dict[str, Any]], minutes: bool) -> str:
    fig, (mean_ax, core_ax) = _figure(2)
    times = _times(samples, minutes)
    mean_ax.plot(
        times,
        [statistics.fmean(s["cpu_percent"]) if s.get("cpu_percent") else math.nan for s in samples],
        label="mean over cores",
        color="#0072b2",
    )
    mean_ax.plot(
        times, [_nan(s.get("cpu_iowait_percent")) for s in samples], label="I/O wait", color="#d55e00", linewidth=0.9
    )
    mean_ax.set(ylim=(0, 102))
    mean_ax.set_ylabel("%", fontsize=9)
    mean_ax.set_title("CPU utilisation", fontsize=10)
    _time_axis(mean_ax, minutes)
    _legend(mean_ax)
    cores = max((len(s.get("cpu_percent") or []) for s in samples), default=0)
    grid = [
        [_nan((s.get("cpu_percent") or [])[c]) if c < len(s.get("cpu_percent") or []) else math.nan for s in samples]
        for c in range(cores)
    ]
    extent = (times[0], times[-1] if len(times) > 1 else times[0] + 1, cores - 0.5, -0.5)
    image = core_ax.imshow(
        grid, aspect="auto", cmap="viridis", vmin=0, vmax=100, interpolation="nearest", extent=extent
    )
    core_ax.set_title("per core (%)", fontsize=10)
    core_ax.set_ylabel("core", fontsize=9)
    core_ax.grid(False)
    _time_axis(core_ax, minutes)
    fig.colorbar(image, ax=core_ax, fraction=0.05, pad=0.01)
    return _img(
        fig,
        "CPU utilisation",
        "Left: mean CPU utilisation over the cores this process may use, and I/O "
        "wait. Right: every core over time (yellow = busy).",
    )


def _memory_io_figure(samples: list[dict[str, Any]], minutes: bool) -> str:
    fig, (mem_ax, disk_ax, net_ax) = _figure(3)
    times = _times(samples, minutes)
    mem_ax.plot(times, [_nan(s.get("memory_percent")) for s in samples], color="#0072b2", label="host used %")
    mem_ax.set(ylim=(0, 102))
    mem_ax.set_ylabel("host memory %", fontsize=9)
    rss_ax = mem_ax.twinx()
    rss_ax.plot(
        times, [_nan(s.get("process_rss_bytes")) / 1e9 for s in samples], color="#cc79a7", label="process RSS (GB)"
    )
    rss_ax.set_ylabel("process RSS (GB)", fontsize=9)
    rss_ax.tick_params(labelsize=8)
    rss_ax.set_ylim(bottom=0)
    mem_ax.set_title("memory", fontsize=10)
    handles = mem_ax.get_legend_handles_labels()
    more = rss_ax.get_legend_handles_labels()
    mem_ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="lower right")
    for ax, keys, title in (
        (disk_ax, (("disk_read_bytes_per_s", "read"), ("disk_write_bytes_per_s", "write")), "disk (MB/s)"),
        (net_ax, (("net_recv_bytes_per_s", "received"), ("net_sent_bytes_per_s", "sent")), "network (MB/s)"),
    ):
        for key, label in keys:
            ax.plot(times, [_nan(s.get(key)) / 1e6 for s in samples], linewidth=1, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        _legend(ax)
    for ax in (mem_ax, disk_ax, net_ax):
        _time_axis(ax, minutes)
    return _img(
        fig,
        "memory, disk and network",
        "Host memory in use and this process's resident memory; disk and network throughput.",
    )


def _gpu_figure(samples: list[dict[str, Any]], minutes: bool) -> str:
    fig, (util_ax, mem_ax) = _figure(2)
    times = _times(samples, minutes)
    count = max(len(s.get("gpu") or []) for s in samples)
    for index in range(count):
        rows = [(s.get("gpu") or [])[index] if index < len(s.get("gpu") or []) else {} for s in samples]
        util_ax.plot(times, [_nan(g.get("utilization_percent")) for g in rows], linewidth=1, label=f"GPU {index}")
        line = mem_ax.plot(
            times, [_nan(g.get("memory_used_bytes")) / 1e9 for g in rows], linewidth=1, label=f"GPU {index} used"
        )
        totals = [g.get("memory_total_bytes") for g in rows if _finite(g.get("memory_total_bytes"))]
        if totals:
            mem_ax.axhline(
                max(totals) / 1e9, color=line[0].get_color(), linestyle="--", linewidth=0.8, label=f"GPU {index} total"
            )
    util_ax.set(ylim=(0, 102))
    util_ax.set_title("GPU utilisation (%)", fontsize=10)
    mem_ax.set_title("GPU memory (GB, from NVML)", fontsize=10)
    mem_ax.set_ylim(bottom=0)
    for ax in (util_ax, mem_ax):
        _time_axis(ax, minutes)
        ax.legend(fontsize=7, loc="lower right")
    return _img(fig, "GPU utilisation and memory", "Per GPU, sampled through NVML.")


def _allocator_figure(rows: list[dict[str, Any]]) -> str:
    fig, (ax,) = _figure(1, height=2.8)
    rows = _thin(rows)
    steps = [_nan(r.get("global_step")) for r in rows]
    for key, label in (
        ("allocated_bytes", "allocated"),
        ("reserved_bytes", "reserved"),
        ("max_allocated_bytes", "peak allocated"),
    ):
        ax.plot(steps, [_nan(r.get(key)) / 1e9 for r in rows], linewidth=1.1, label=label)
    ax.set_ylabel("GB", fontsize=9)
    ax.set_xlabel("global step", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.set_title("PyTorch CUDA allocator", fontsize=10)
    _legend(ax)
    return _img(
        fig,
        "GPU memory per step",
        "Memory held by tensors (allocated), by PyTorch's cache (reserved), "
        "and the peak so far; a steady climb means tensors are being kept across steps.",
    )


# --- f) step time ---


def _steps_section(run: Run) -> str:
    if run.profiler is None:
        return _missing(run, "profiler.json")
    summary = _get(run.profiler, "steps", "summary") or {}
    series = _get(run.profiler, "steps", "series") or []
    if not summary.get("steps"):
        return _note("no training step was timed")
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
        ("throughput", f"{_nan(summary.get('images_per_second')):,.1f} images/s per process"),
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
    parts = [_kv_table(rows), f'<div class="sharebar">{bar}</div>']
    if series:
        parts.append(_plot(lambda: _step_figure(series, summary), "the step times"))
    if outliers:
        shown = sorted(outliers, key=lambda o: -_nan(o.get("step_seconds")))[:15]
        table = _table(
            ["global step", "epoch", "step time"],
            [[esc(o.get("global_step")), esc(o.get("epoch")), fmt_seconds(o.get("step_seconds"))] for o in shown],
            numeric=(0, 1, 2),
        )
        parts.append(f"<h3>Slowest outlier steps ({len(shown)} of {len(outliers)})</h3>{table}")
    return "".join(parts)


def _step_figure(series: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    fig, (time_ax, hist_ax) = _figure(2, gridspec_kw={"width_ratios": [2.2, 1]})
    rows = sorted(series, key=lambda r: _nan(r.get("global_step")))
    thinned = _thin(rows)
    steps = [_nan(r.get("global_step")) for r in thinned]
    stacks = [[_nan(r.get(part)) * 1e3 for r in thinned] for part in PART_NAMES]
    time_ax.stackplot(
        steps, stacks, labels=list(PART_NAMES.values()), colors=list(PART_COLOURS.values()), alpha=0.85, linewidth=0
    )
    outliers = summary.get("outliers") or []
    slow = {o.get("global_step") for o in outliers}
    usual = sorted(
        r["step_seconds"] * 1e3 for r in rows if r.get("global_step") not in slow and _finite(r.get("step_seconds"))
    )
    threshold = summary.get("outlier_threshold_seconds")
    # The axis fits the usual steps (the warm-up and outliers would flatten them); outliers sit at the top edge.
    top = max(usual[int(0.99 * (len(usual) - 1))] * 1.6 if usual else 1.0, _nan(threshold) * 1e3 * 1.25 or 0)
    top = top if math.isfinite(top) and top > 0 else None
    if top:
        time_ax.set_ylim(0, top)
    if _finite(threshold):
        time_ax.axhline(threshold * 1e3, color="#c62828", linestyle=":", linewidth=0.9, label="outlier threshold")
    if outliers:
        values = [_nan(o.get("step_seconds")) * 1e3 for o in outliers]
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
        for outlier in sorted(outliers, key=lambda o: -_nan(o.get("step_seconds")))[:8]:
            value = _nan(outlier.get("step_seconds")) * 1e3
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
            if _finite(summary.get(key)):
                hist_ax.axvline(
                    summary[key] * 1e3,
                    color="#333",
                    linestyle=style,
                    linewidth=1,
                    label=f"{label} {fmt_seconds(summary[key])}",
                )
    hist_ax.set_title("step time distribution (outliers left out)", fontsize=10)
    hist_ax.set_xlabel("ms per step", fontsize=9)
    _legend(hist_ax)
    return _img(
        fig,
        "step time breakdown",
        "Left: each step's data wait, forward+backward and optimizer time, stacked; red triangles mark outlier steps "
        "(at the top edge, with their time, when they are off the scale). Right: how the other steps' times are "
        "distributed.",
    )


# --- g) data loading ---


def _data_section(run: Run) -> str:
    if run.profiler is None:
        return _missing(run, "profiler.json")
    profiler = run.profiler
    summary = _get(profiler, "steps", "summary") or {}
    series = _get(profiler, "steps", "series") or []
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
        ("data wait share", f"<b>{fmt_share(_get(summary, 'share', 'data_seconds'))}</b> of step time"),
        (
            "median data wait",
            f"{fmt_seconds(median_wait)} per step"
            + (f" (median step {fmt_seconds(median_step)})" if _finite(median_step) else ""),
        ),
    ]
    parts = [_kv_table(rows)]
    verdicts = [r for r in run.rules if _is_data_rule(r)]
    if verdicts:
        parts.append("<h3>What the data-loading rules say</h3>" + _rules_table(verdicts))
    else:
        parts.append(
            _note("no data-loading rule (Dataloader, CPUBottleneck, IOBottleneck) ran: check --profiler-rules")
        )
    return "".join(parts)


def _is_data_rule(rule: dict[str, Any]) -> bool:
    name = str(rule.get("rule") or "").lower().replace("_", "").replace("-", "")
    return name in DATA_RULES


# --- h) top operators ---


def _operators_section(run: Run) -> str:
    if run.profiler is None:
        return _missing(run, "profiler.json")
    torch_profiler = run.profiler.get("torch_profiler")
    if not torch_profiler:
        return _note(
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
        parts.append(_table(headers, rows, numeric=range(1, 7)))
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
    return max(0.0, min(1.0, share)) if _finite(share) else 0.0


def _ms(value: Any) -> str:
    return fmt_seconds(value / 1e3) if _finite(value) else "–"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python training/report.py OUTPUT_DIR", file=sys.stderr)
        return 2
    try:
        print(write_report(Path(args[0])))
    except NoRunFiles as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
