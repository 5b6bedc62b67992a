"""The one tuning search space (training/search_space.json), as Optuna distributions and as SageMaker ranges.

The file names train.py flags and how to search each: ``float`` (``low``, ``high``, ``log``), ``int`` (``low``,
``high``, ``log``) or ``categorical`` (``choices``), plus the objective (a metric train.py prints, and whether
to maximise it). ``load`` checks it against train.py's own parser, so a typo fails before any job starts.
``canonical`` forms let a test prove that what SageMaker receives is what the local tuner samples from.

    python -m breedfilter.search_space [FILE]      # prints the space as both tuners see it
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from breedfilter import metrics, units

DEFAULT_PATH = units.TRAINING_DIR / "search_space.json"
KINDS = ("float", "int", "categorical")


class SearchSpaceError(ValueError):
    """The search space file is unreadable or wrong; the message says where and why."""


@dataclass(frozen=True)
class Parameter:
    name: str  # train.py's option name with underscores (SageMaker's convention; train.py takes both)
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.kind == "float" or float(value).is_integer())

    def canonical(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"name": self.name, "type": self.kind, "choices": list(self.choices)}
        return {"name": self.name, "type": self.kind, "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[Parameter, ...]
    objective: str = "best_valid_accuracy"
    direction: str = "maximize"
    source: Path = field(default=DEFAULT_PATH)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def canonical(self) -> list[dict[str, Any]]:
        return sorted((p.canonical() for p in self.parameters), key=lambda c: c["name"])

    def without(self, names: Sequence[str]) -> SearchSpace:
        """The space less the parameters given fixed values (on the command line: static hyperparameters)."""
        return replace(self, parameters=tuple(p for p in self.parameters if p.name not in set(names)))


# -- loading and checking ---------------------------------------------------------------------------------
def load(path: Path | str | None = None) -> SearchSpace:
    path = Path(path) if path else DEFAULT_PATH
    try:
        raw = read_json(path)
    except OSError as exc:
        raise SearchSpaceError(f"{path}: cannot read the search space ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SearchSpaceError(f"{path}: not JSON ({exc})") from exc
    return parse(raw, path)


def parse(raw: Any, path: Path = DEFAULT_PATH) -> SearchSpace:
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict) or not raw["parameters"]:
        raise SearchSpaceError(f'{path}: expected {{"objective": {{...}}, "parameters": {{name: {{...}}, ...}}}}')
    objective = raw.get("objective") or {}
    metric = objective.get("metric", "best_valid_accuracy")
    direction = objective.get("direction", "maximize")
    if metric not in metrics.NAMES:
        raise SearchSpaceError(f"{path}: objective metric {metric!r} is not one train.py prints {metrics.NAMES}")
    if metric.startswith("test_"):
        raise SearchSpaceError(f"{path}: tuning on {metric} would leak the test split into the choice; use valid_")
    if direction not in ("maximize", "minimize"):
        raise SearchSpaceError(f"{path}: objective direction must be maximize or minimize, not {direction!r}")
    known = train_option_names()
    parameters = []
    for name, spec in raw["parameters"].items():
        key = name.removeprefix("--").replace("-", "_")
        if key not in known:
            raise SearchSpaceError(f"{path}: {name!r} is not a train.py option (python training/train.py --help)")
        parameters.append(_parameter(key, spec, path))
    return SearchSpace(tuple(parameters), metric, direction, path)


def _parameter(name: str, spec: Any, path: Path) -> Parameter:
    where = f"{path}: parameter {name}"
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise SearchSpaceError(f"{where}: needs a type, one of {KINDS}")
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: categorical needs a non-empty list of choices")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise SearchSpaceError(f"{where}: choices repeat")
        if any(not isinstance(c, str | int | float | bool) for c in choices):
            raise SearchSpaceError(f"{where}: choices must be numbers, strings or booleans")
        return Parameter(name, kind, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    number = int if kind == "int" else (int, float)
    if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool) or isinstance(high, bool):
        raise SearchSpaceError(f"{where}: {kind} needs numeric low and high" + (" (integers)" if kind == "int" else ""))
    if not low < high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: a log scale needs low > 0 (got {low})")
    if kind == "float":
        low, high = float(low), float(high)
    return Parameter(name, kind, low, high, log)


def train_options_module() -> Any:
    """training/options.py (train.py's parser), loaded from its file: stdlib only, no torch."""
    return units.train_options()


def given_train_flags(tokens: Sequence[str]) -> dict[str, Any]:
    """The train.py options these tokens set, as train.py's own parser reads them (abbreviations such as
    ``--batch 64`` resolved, values typed and checked), keyed by option name; raises SearchSpaceError."""
    try:
        return train_options_module().explicit_flags(tokens)
    except ValueError as exc:
        raise SearchSpaceError(f"train.py flags: {exc}") from None


def flag_text(value: Any) -> str:
    """A flag's value as train.py reads it back (training/options.py says how)."""
    return train_options_module().flag_text(value)


def read_json(path: Path) -> Any:
    """JSON from a file in UTF-8, -16 or -32, with or without a BOM (PowerShell's ``>`` writes UTF-16)."""
    return json.loads(Path(path).read_bytes())


@cache
def train_option_names() -> frozenset[str]:
    """train.py's option names (argparse dests)."""
    return train_options_module().option_names()


# -- Optuna ---------------------------------------------------------------------------------------------
def to_optuna(space: SearchSpace) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in space.parameters:
        if p.kind == "categorical":
            out[p.name] = CategoricalDistribution(p.choices)
        elif p.kind == "int":
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[p.name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out


def from_optuna(distributions: dict[str, Any]) -> list[dict[str, Any]]:
    """Canonical form of the distributions an Optuna trial was sampled from."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out = []
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            out.append(Parameter(name, "categorical", choices=tuple(dist.choices)).canonical())
        else:
            kind = "int" if isinstance(dist, IntDistribution) else "float"
            out.append(Parameter(name, kind, dist.low, dist.high, dist.log).canonical())
    return sorted(out, key=lambda c: c["name"])


# -- SageMaker ------------------------------------------------------------------------------------------
def to_sagemaker(space: SearchSpace) -> dict[str, Any]:
    """``{name: ContinuousParameter | IntegerParameter | CategoricalParameter}`` for HyperparameterTuner."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    out: dict[str, Any] = {}
    for p in space.parameters:
        scaling = "Logarithmic" if p.log else "Linear"
        if p.kind == "categorical":
            out[p.name] = CategoricalParameter(list(p.choices))
        elif p.kind == "int":
            out[p.name] = IntegerParameter(int(p.low), int(p.high), scaling_type=scaling)
        else:
            out[p.name] = ContinuousParameter(float(p.low), float(p.high), scaling_type=scaling)
    return out


def from_sagemaker(parameter_ranges: dict[str, Any]) -> list[dict[str, Any]]:
    """Canonical form of a CreateHyperParameterTuningJob request's ``ParameterRanges`` (values are strings)."""
    out = []
    for r in parameter_ranges.get("ContinuousParameterRanges", []):
        log = r.get("ScalingType") == "Logarithmic"
        out.append(Parameter(r["Name"], "float", float(r["MinValue"]), float(r["MaxValue"]), log).canonical())
    for r in parameter_ranges.get("IntegerParameterRanges", []):
        log = r.get("ScalingType") == "Logarithmic"
        out.append(Parameter(r["Name"], "int", int(r["MinValue"]), int(r["MaxValue"]), log).canonical())
    for r in parameter_ranges.get("CategoricalParameterRanges", []):
        out.append(Parameter(r["Name"], "categorical", choices=tuple(_json_or_str(v) for v in r["Values"])).canonical())
    return sorted(out, key=lambda c: c["name"])


def _json_or_str(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m breedfilter.search_space", description=__doc__.split("\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    try:
        space = load(args.file)
    except SearchSpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{space.source}: {space.direction} {space.objective}")
    for c in space.canonical():
        print("  " + json.dumps(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
