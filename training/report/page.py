"""The report page: every section in order under one banner (rules that fired or stopped training, files that are
missing), as one self-contained HTML string; ``write_report`` writes it as OUTPUT_DIR/report.html.

    cd training && python -m report OUTPUT_DIR     # main(): writes OUTPUT_DIR/report.html and prints its path
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .curves import curves_section
from .debugger import debugger_section
from .decisions import decisions_section, has_decisions
from .job import job_summary_section
from .markup import CSS, esc
from .rules import rules_section, step_and_epoch
from .run import NoRunFiles, Run, load
from .steps import data_section, operators_section, steps_section
from .system import system_section

REPORT_NAME = "report.html"

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
        "summary": job_summary_section,
        "rules": rules_section,
        "decisions": decisions_section,
        "curves": curves_section,
        "debugger": debugger_section,
        "system": system_section,
        "steps": steps_section,
        "data": data_section,
        "operators": operators_section,
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
    sections = [(key, title) for key, title in SECTIONS if key != "decisions" or has_decisions(run)]
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
            f"{esc(step_and_epoch(stopped))}: {esc(stopped.get('evidence'))}<br>"
            f"Recommendation: {esc(stopped.get('recommendation'))}</p>"
        )
    if fired:
        names = ", ".join(f"<b>{esc(rule.get('rule'))}</b>{esc(step_and_epoch(rule))}" for rule in fired)
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


def write_report(output_dir: Path | str) -> Path:
    """Build OUTPUT_DIR/report.html from the run's JSON files and return its path."""
    run = load(output_dir)
    path = run.output_dir / REPORT_NAME
    path.write_text(render(run), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m report OUTPUT_DIR`` (in training/): write the page and print its path; 2 on a bad argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m report OUTPUT_DIR   (in training/)", file=sys.stderr)
        return 2
    try:
        print(write_report(Path(args[0])))
    except NoRunFiles as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
