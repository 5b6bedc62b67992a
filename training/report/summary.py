"""The terminal summary: a few lines on a run for ``breedfilter report`` (job, result, decisions, the rules that
fired, the step time split, the top operators, what is missing). Needs no matplotlib.
"""

from __future__ import annotations

from pathlib import Path

from .decisions import summary_line
from .markup import fmt_accuracy, fmt_seconds, fmt_share
from .rules import rule_title, step_and_epoch
from .run import STATUS_ORDER, load
from .steps import PART_NAMES
from .values import get


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
        planned = get(metrics, "hyperparameters", "epochs")
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
        lines.append(summary_line(run.open_set))
    rules = run.rules
    if rules:
        counts = {status: sum(r.get("status") == status for r in rules) for status in STATUS_ORDER}
        lines.append(f"rules: {counts['fired']} fired, {counts['ok']} ok, {counts['not_applicable']} not applicable")
        for rule in rules:
            if rule.get("status") == "fired":
                lines.append(f"  FIRED {rule_title(rule)}: {rule.get('evidence')} -> {rule.get('recommendation')}")
    stopped = run.stopped_by
    if stopped:
        lines.append(f"stopped by rule {stopped.get('rule')}{step_and_epoch(stopped)}")
    summary = get(profiler, "steps", "summary") or {}
    if summary.get("steps"):
        split = " / ".join(f"{name} {fmt_share(get(summary, 'share', part))}" for part, name in PART_NAMES.items())
        lines.append(
            f"step time: median {fmt_seconds(summary.get('median_step_seconds'))} "
            f"(p90 {fmt_seconds(summary.get('p90_step_seconds'))}, max {fmt_seconds(summary.get('max_step_seconds'))})"
            f": {split}; {summary.get('images_per_second', 0):.1f} images/s; "
            f"{len(summary.get('outliers') or [])} outlier steps"
        )
    operators = get(profiler, "torch_profiler", "top_operators") or []
    if operators:
        lines.append(
            "top operators: " + ", ".join(f"{op.get('name')} {fmt_share(op.get('self_share'))}" for op in operators[:3])
        )
    lines.extend(run.notes.values())
    return lines
