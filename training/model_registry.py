"""The model registry step: a trained artifact becomes a new version of a registered model only when it passes
the gate, and the newest such version carries the alias ``approved`` (what ``breedfilter model approved``
turns into a ``sam deploy`` line).

The gate (stated in the run's log, on the run and on each version as tags):
- test accuracy at least ``--gate-min-test-accuracy`` (no test split: not registered);
- the share of unknown images the model would SORT at most ``--gate-max-unknown-sorted``, when that share was
  measured (``--unknowns DIR``); when it was not, the version says so (``gate.unknown_sorted_share:
  not measured``) instead of passing silently.

train.py calls it after MLflow has logged the model (``--register-model NAME``); it works on any MLflow
registry: the embedded SQLite store, a tracking server, or SageMaker managed MLflow (whose registered models
also appear in the SageMaker Model Registry).

    python training/train.py --data DIR --register-model breedfilter-dogs --unknowns DIR_OF_OTHER_IMAGES
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("train")

APPROVED = "approved"  # the alias on the newest version that passed the gate
MODEL_DATA_TAG = "model_data_url"  # where the version's model.tar.gz lies (s3://… for SageMaker, a path locally)


@dataclass(frozen=True)
class Gate:
    min_test_accuracy: float = 0.8
    max_unknown_sorted: float = 0.05

    def describe(self) -> str:
        return (
            f"test accuracy >= {self.min_test_accuracy:g} and, when measured, "
            f"unknown images sorted <= {self.max_unknown_sorted:g}"
        )


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # each check's outcome, in words
    measured: dict[str, float | None] = field(default_factory=dict)

    def text(self) -> str:
        return ("passed: " if self.passed else "failed: ") + "; ".join(self.reasons)


def judge(gate: Gate, metrics: dict[str, Any]) -> Verdict:
    """Check a run's final metrics (``test_accuracy``, ``unknown_sorted_share``) against the gate."""
    accuracy = metrics.get("test_accuracy")
    unknown = metrics.get("unknown_sorted_share")
    verdict = Verdict(True, measured={"test_accuracy": accuracy, "unknown_sorted_share": unknown})
    if accuracy is None:
        verdict.passed = False
        verdict.reasons.append("no test accuracy (train with a test/ split)")
    elif accuracy < gate.min_test_accuracy:
        verdict.passed = False
        verdict.reasons.append(f"test accuracy {accuracy:.4f} < {gate.min_test_accuracy:g}")
    else:
        verdict.reasons.append(f"test accuracy {accuracy:.4f} >= {gate.min_test_accuracy:g}")
    if unknown is None:
        verdict.reasons.append("unknown images sorted: not measured (train with --unknowns DIR)")
    elif unknown > gate.max_unknown_sorted:
        verdict.passed = False
        verdict.reasons.append(f"unknown images sorted {unknown:.4f} > {gate.max_unknown_sorted:g}")
    else:
        verdict.reasons.append(f"unknown images sorted {unknown:.4f} <= {gate.max_unknown_sorted:g}")
    return verdict


def gate_tags(gate: Gate, verdict: Verdict) -> dict[str, str]:
    measured = {
        f"gate.{key}": "not measured" if value is None else f"{value:.6g}" for key, value in verdict.measured.items()
    }
    return {"gate": gate.describe(), "gate.verdict": verdict.text()[:5000], **measured}


def register(
    client: Any,
    name: str,
    *,
    model_id: str,
    run_id: str,
    gate: Gate,
    verdict: Verdict,
    model_data_url: str = "",
    description: str = "",
) -> Any | None:
    """A new version of ``name`` from the logged model, aliased ``approved`` — only when the verdict passed.
    The run is tagged with the verdict either way. Returns the ModelVersion, or None when not registered."""
    tags = gate_tags(gate, verdict)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if not verdict.passed:
        log.info("registry: %s not registered; gate %s", name, verdict.text())
        return None
    _ensure_registered_model(client, name)
    logged = client.get_logged_model(model_id)
    version = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=run_id,
        model_id=model_id,
        tags={**tags, **({MODEL_DATA_TAG: model_data_url} if model_data_url else {})},
        description=description or None,
    )
    client.set_registered_model_alias(name, APPROVED, version.version)
    log.info("registry: %s version %s (alias %s); gate %s", name, version.version, APPROVED, verdict.text())
    return version


def approved(client: Any, name: str) -> Any:
    """The version aliased ``approved`` (raises mlflow's exception when there is none)."""
    return client.get_model_version_by_alias(name, APPROVED)


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"project": "breedfilter"})
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
