"""Which debugger and profiler rules run, with what action and thresholds: ``--debugger-rules`` and
``--profiler-rules`` as one comma-separated spec each.

    default                         every rule with its default action and thresholds (what an empty spec means)
    none                            no rule (then name the ones you want)
    overfit=stop                    a rule's action: log, stop (stop training, as SageMaker's StopTraining) or off
    overfit.ratio_threshold=0.5     a threshold, by the names the rule's defaults use
    none,exploding_tensor=stop      only that rule

Also ``--debugger-collections`` and ``--profiler-steps``. Light on purpose (no torch): train.py's option parser
checks every spec before the dataset loads.

    used by training/options.py, debugger.py and profiler.py; not run on its own
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("log", "stop", "off")
COLLECTIONS = ("losses", "gradients", "weights", "biases", "activations", "inputs")


@dataclass
class RuleSetting:
    action: str
    thresholds: dict[str, float] = field(default_factory=dict)


class RuleSpecError(ValueError):
    pass


def parse_rule_spec(spec: str, catalogue: Mapping[str, tuple[str, Mapping[str, float]]]) -> dict[str, RuleSetting]:
    """``catalogue``: rule name -> (default action, default thresholds). Returns the enabled rules only."""
    settings = {name: RuleSetting(action, dict(defaults)) for name, (action, defaults) in catalogue.items()}
    names = ", ".join(sorted(catalogue))
    for position, raw in enumerate(item.strip() for item in (spec or "").split(",")):
        if not raw or raw == "default":
            continue
        if raw == "none":
            if position:
                raise RuleSpecError(f"'none' must come first in a rule spec (got {spec!r})")
            for setting in settings.values():
                setting.action = "off"
            continue
        key, has_value, value = raw.partition("=")
        name, _, parameter = key.strip().partition(".")
        if name not in catalogue:
            raise RuleSpecError(f"unknown rule {name!r} in {spec!r}; rules: {names}")
        if not parameter:
            action = value.strip() if has_value else catalogue[name][0]
            if action not in ACTIONS:
                raise RuleSpecError(f"{raw!r}: the action must be one of {', '.join(ACTIONS)}")
            settings[name].action = action
            continue
        known = catalogue[name][1]
        if parameter not in known:
            choices = ", ".join(sorted(known)) or "none"
            raise RuleSpecError(f"{raw!r}: {name} has no threshold {parameter!r} (it has: {choices})")
        try:
            number = float(value)
        except ValueError:
            raise RuleSpecError(f"{raw!r}: {parameter} needs a number") from None
        if not has_value:
            raise RuleSpecError(f"{raw!r}: write {name}.{parameter}=NUMBER")
        settings[name].thresholds[parameter] = number
        if settings[name].action == "off":
            settings[name].action = catalogue[name][0]
    return {name: setting for name, setting in settings.items() if setting.action != "off"}


def verdict(
    rule: str,
    source: str,
    status: str,
    evidence: str,
    recommendation: str,
    thresholds: Mapping[str, float],
    action: str | None = None,
    step: int | None = None,
    epoch: int | None = None,
    tensor: str | None = None,
    count: int = 0,
) -> dict[str, Any]:
    """One rule's verdict as debugger.json and profiler.json hold it (``status``: fired, ok or not_applicable)."""
    assert status in ("fired", "ok", "not_applicable"), status
    return {
        "rule": rule,
        "source": source,
        "status": status,
        "action": action,
        "step": step,
        "epoch": epoch,
        "tensor": tensor,
        "evidence": evidence,
        "recommendation": recommendation,
        "thresholds": dict(thresholds),
        "count": count,
    }


def parse_collections(text: str) -> dict[str, int]:
    """``--debugger-collections``: ``all``, or names with an optional interval each, e.g.
    ``losses,gradients:10,weights:50,activations:100`` -> {name: interval}; 0 means ``--debugger-interval``."""
    chosen: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, has_interval, every = part.partition(":")
        names = COLLECTIONS if name == "all" else (name,)
        if name != "all" and name not in COLLECTIONS:
            raise RuleSpecError(
                f"unknown debugger collection(s) {name}; choose from {', '.join(COLLECTIONS)} or all "
                "(each may take :STEPS, e.g. gradients:10)"
            )
        try:
            interval = int(every) if has_interval else 0
        except ValueError:
            interval = -1
        if interval < 0 or (has_interval and interval == 0):
            raise RuleSpecError(f"{part!r}: the interval after ':' must be a whole number of steps, at least 1")
        chosen.update(dict.fromkeys(names, interval))
    return chosen or dict.fromkeys(COLLECTIONS, 0)


def parse_window(text: str) -> tuple[int, int]:
    """``--profiler-steps FIRST:COUNT`` (e.g. 6:3), or ``off`` for no torch.profiler window."""
    if text == "off":
        return (0, 0)
    first, _, count = text.partition(":")
    try:
        window = (int(first), int(count or 3))
    except ValueError:
        raise RuleSpecError(f"--profiler-steps {text!r}: write FIRST:COUNT, e.g. 6:3, or off") from None
    if window[0] < 1 or window[1] < 1:
        raise RuleSpecError(f"--profiler-steps {text!r}: FIRST and COUNT must be at least 1")
    return window
