"""The run's files: read metrics.json, debugger.json and profiler.json (and open_set.json) from an output dir.

Any of the three files may be missing or unreadable: ``Run.notes`` says which and why (and how to get it), and the
report shows the rest. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCES = ("metrics.json", "debugger.json", "profiler.json")
DECISIONS = "open_set.json"  # optional: written after training; older runs have none (no section, no note)
MISSING_HINTS = {
    "metrics.json": "no metrics.json: the run did not finish (train.py writes it at the end of a run; see the log)",
    "debugger.json": "debugger off (no debugger.json): run train.py with --debugger on",
    "profiler.json": "profiler off (no profiler.json): run train.py with --profiler on",
}
STATUS_ORDER = {"fired": 0, "ok": 1, "not_applicable": 2}


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

    def why_missing(self, name: str) -> str:
        """Why one of the three files is not in the report: unreadable (from ``notes``), or how to get it."""
        return self.notes.get(name, MISSING_HINTS[name])


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
