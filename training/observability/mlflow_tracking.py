"""MLflow tracking for a training run: one MLflow run per train.py run (rank 0 only, so a distributed run logs once).

It records the options as parameters, every epoch's metrics (step = epoch), the test and decision metrics, the
debugger's and profiler's rule verdicts (tags ``debugger.RULE`` / ``profiler.RULE`` = fired|ok|not_applicable),
the run's files (report.html, metrics.json, debugger.json, profiler.json, open_set.json, the two PNGs) and the
model directory as an MLflow *logged model* (weights, labels.json, config.json, code/: the same files as
model.tar.gz). training/model_registry.py then registers that logged model when it passes the gate.

Where it logs:
- ``--mlflow-uri`` or ``MLFLOW_TRACKING_URI`` when set: any tracking server, or a SageMaker managed MLflow
  ARN (``arn:aws:sagemaker:REGION:ACCOUNT:mlflow-tracking-server/NAME``; needs the sagemaker-mlflow plugin);
- otherwise an embedded store: ``sqlite:///OUTPUT_DATA_DIR/mlflow.db`` with artifacts in OUTPUT_DATA_DIR/mlartifacts
  (on SageMaker that lands in the job's output.tar.gz).

    python training/train.py --data DIR                     # then: mlflow ui --backend-store-uri sqlite:///out/train/output/mlflow.db
    python training/train.py --data DIR --mlflow off        # no MLflow at all

A tracking store that cannot be reached fails the run at the start (before hours of training); a failure while
logging later is logged and never fails a finished training run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("train")

EMBEDDED_DB = "mlflow.db"
EMBEDDED_ARTIFACTS = "mlartifacts"
DEFAULT_EXPERIMENT = "breedfilter"
RUN_FILES = (
    "report.html",
    "metrics.json",
    "debugger.json",
    "profiler.json",
    "open_set.json",
    "training_curves.png",
    "confusion_matrix.png",
)
MODEL_TYPE = "breedfilter-artifact"  # the logged model's type: a SageMaker PyTorch model directory


class TrackingUnavailable(Exception):
    """The tracking store named by --mlflow-uri / MLFLOW_TRACKING_URI cannot be used: one line saying why."""


def tracking_uri(option: str, output_dir: Path, env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The store this run logs to: the option, else MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    uri = option or env.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    return embedded_uri(output_dir)


def embedded_uri(output_dir: Path) -> str:
    return f"sqlite:///{(Path(output_dir) / EMBEDDED_DB).resolve()}"


def is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:///") and uri.endswith("/" + EMBEDDED_DB)


def artifact_location(uri: str) -> str | None:
    """A new experiment's artifacts: beside a local SQLite store (MLflow's own default is ./mlruns in whatever
    directory the run started from); a server's own artifact store otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / EMBEDDED_ARTIFACTS).resolve().as_uri()


def ensure_experiment(client: Any, uri: str, name: str) -> str:
    """The experiment's id, created when missing (artifacts beside a local SQLite store). Safe when several
    processes ask at once (parallel tuning trials): the loser of the race reads the winner's."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def prepare(uri: str, experiment: str) -> str:
    """Create the store (a new SQLite file gets its schema) and the experiment before parallel runs use them."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return ensure_experiment(MlflowClient(tracking_uri=uri), uri, experiment)


def run_name(option: str, job_name: str, env: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The option, else MLFLOW_RUN_NAME, else the SageMaker job's name (tuning trials are told apart by it)."""
    return option or env.get("MLFLOW_RUN_NAME") or job_name or None


class MlflowRun:
    """One MLflow run, used as a trainer callback (``on_epoch_end``) and told the run's outputs at the end."""

    def __init__(self, uri: str, experiment: str, name: str | None, output_dir: Path) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackingUnavailable(
                "MLflow tracking needs the mlflow package (pip install mlflow), or --mlflow off"
            ) from exc
        self.output_dir = Path(output_dir)
        if is_embedded(uri):
            self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            self.experiment_id = ensure_experiment(self.client, uri, experiment)
            self.run_id = self.client.create_run(
                self.experiment_id, run_name=name, tags={"project": "breedfilter"}
            ).info.run_id
        except Exception as exc:
            raise TrackingUnavailable(
                f"MLflow tracking at {uri}: {_first_line(exc)} (or train with --mlflow off)"
            ) from exc
        self.model_id: str | None = None
        self.finished = False
        log.info("mlflow: run %s in experiment %r at %s", self.run_id, experiment, uri)

    # -- during the run ---------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(key, _param_text(value)) for key, value in sorted(params.items())]
        self.safely("parameters", lambda: self.client.log_batch(self.run_id, params=flat))

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        """Trainer callback: the epoch's numbers as metrics at step = epoch. Never asks to stop."""
        self.log_metrics(row, step=int(row["epoch"]))
        return False

    def log_metrics(self, values: dict[str, Any], step: int | None = None, model_id: str | None = None) -> None:
        from mlflow.entities import Metric

        stamp = _now_ms()
        metrics = [
            Metric(key, float(value), stamp, step or 0, model_id=model_id)
            for key, value in values.items()
            if _number(value) and key != "epoch"
        ]
        if metrics:
            self.safely("metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    # -- at the end -------------------------------------------------------------------------------------
    def log_outputs(self, summary: dict[str, Any], model_dir: Path | None, model_name: str) -> dict[str, Any]:
        """The summary's final numbers, the rule verdicts, the run's files and the model as a logged model.
        Returns the final numbers (``test_accuracy``, ``unknown_sorted_share`` when measured…): the gate's input."""
        final = {
            "best_valid_accuracy": summary.get("best_valid_accuracy"),
            "best_valid_loss": summary.get("best_valid_loss"),
            "best_epoch": summary.get("best_epoch"),
            "wall_seconds": summary.get("wall_seconds"),
            **{f"test_{k}": (summary.get("test") or {}).get(k) for k in ("accuracy", "loss")},
            **decision_metrics(self.output_dir, summary),
        }
        tags = {**rule_tags(self.output_dir), "model_version": str(summary.get("model_version", ""))}
        if summary.get("stop_reason"):
            tags["stop_reason"] = str(summary["stop_reason"])[:5000]
        for key, value in tags.items():
            self.safely(f"tag {key}", lambda k=key, v=value: self.client.set_tag(self.run_id, k, v))
        for name in RUN_FILES:
            path = self.output_dir / name
            if path.is_file():
                self.safely(name, lambda p=path: self.client.log_artifact(self.run_id, str(p)))
        if model_dir is not None and Path(model_dir).is_dir():
            self.model_id = self.safely("the logged model", lambda: self._log_model(Path(model_dir), model_name))
        # Once, at the last epoch's step, linked to the logged model when there is one.
        history = summary.get("history") or [{}]
        self.log_metrics(final, step=int(history[-1].get("epoch") or 0), model_id=self.model_id)
        return final

    def _log_model(self, model_dir: Path, name: str) -> str:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        model = self.client.create_logged_model(
            self.experiment_id,
            name=name,
            source_run_id=self.run_id,
            params={"architecture": str(config.get("architecture")), "version": str(config.get("version"))},
            tags={"breedfilter.version": str(config.get("version")), "breedfilter.name": str(config.get("name"))},
            model_type=MODEL_TYPE,
        )
        self.client.log_model_artifacts(model.model_id, str(model_dir))
        self.client.finalize_logged_model(model.model_id, "READY")
        log.info("mlflow: logged model %s (%s version %s)", model.model_id, name, config.get("version"))
        return model.model_id

    def finish(self, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED (a diverged or crashed run) or KILLED."""
        if self.finished:
            return
        self.finished = True
        self.safely("the run's end", lambda: self.client.set_terminated(self.run_id, status=status))

    def safely(self, what: str, action: Any) -> Any:
        try:
            return action()
        except Exception as exc:  # diagnostics never fail a training run
            log.warning("mlflow: could not log %s: %s", what, _first_line(exc))
            return None


def decision_metrics(output_dir: Path, summary: dict[str, Any]) -> dict[str, float | None]:
    """The decisions' numbers: calibration, thresholds and, when --unknowns was measured, the unknown images'
    share that would be SORTED (the registry gate reads it) and the detector's AUROC."""
    decisions = summary.get("decisions") or {}
    values: dict[str, float | None] = {
        "ece_before": decisions.get("ece_before"),
        "ece_after": decisions.get("ece_after"),
        "probability_threshold": decisions.get("probability_threshold"),
    }
    unknowns = _read_json(Path(output_dir) / "open_set.json").get("unknowns") or {}
    if unknowns:
        values["unknown_sorted_share"] = unknowns.get("sorted_share")
        values["unknown_auroc"] = unknowns.get("auroc")
        values["unknown_count"] = unknowns.get("count")
    return values


def rule_tags(output_dir: Path) -> dict[str, str]:
    """``debugger.RULE`` / ``profiler.RULE`` -> fired|ok|not_applicable, and how many rules fired in each."""
    tags: dict[str, str] = {}
    for source in ("debugger", "profiler"):
        rules = _read_json(Path(output_dir) / f"{source}.json").get("rules") or []
        for verdict in rules:
            tags[f"{source}.{verdict.get('rule')}"] = str(verdict.get("status"))
        if rules:
            tags[f"{source}.fired"] = str(sum(1 for v in rules if v.get("status") == "fired"))
    return tags


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a parameter value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
