"""The Rules section: every verdict of the debugger's and the profiler's rules in one table, fired first; and how
a rule is named in the banner and the terminal summary (its step and epoch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .markup import esc, fmt_number, note
from .run import Run

STATUS_TEXT = {"fired": "fired", "ok": "ok", "not_applicable": "not applicable"}


def rules_section(run: Run) -> str:
    parts = [note(run.why_missing(name)) for name in ("debugger.json", "profiler.json") if name in run.notes]
    rules = run.rules
    if not rules:
        if run.debugger is not None or run.profiler is not None:
            parts.append(note("no rule ran (all rules were turned off with --debugger-rules / --profiler-rules)"))
        return "".join(parts)
    return "".join(parts) + rules_table(rules)


def rules_table(rules: Sequence[dict[str, Any]]) -> str:
    """The verdicts as one table: status, rule, step / epoch, tensor, evidence, recommendation."""
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


def step_and_epoch(rule: dict[str, Any]) -> str:
    """' at step 420, epoch 4' (either left out when the rule has none), or ''."""
    parts = [f"step {rule['step']}" if rule.get("step") is not None else "", ""]
    parts[1] = f"epoch {rule['epoch']}" if rule.get("epoch") is not None else ""
    text = ", ".join(p for p in parts if p)
    return f" at {text}" if text else ""


def rule_title(rule: dict[str, Any]) -> str:
    """'overfit (debugger, step 420, epoch 4, tensor)': a rule's name and where it fired."""
    title = f"{rule.get('rule')} ({rule.get('source')}{step_and_epoch(rule).replace(' at ', ', ')}"
    if rule.get("tensor"):
        title += f", {rule['tensor']}"
    return title + ")"
