"""MLflow tracking and the model registry on real train.py runs (timm's tiny test network on generated images).

Nothing external: the default run writes an embedded SQLite store in its output dir; the registry tests share
one store file between runs, as a team's tracking server would be shared.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import model_registry
import train
from breedfilter import cli
from observability import mlflow_tracking
from tests.image_datasets import make_dataset
from tests.support import quick_args


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 16, "valid": 8, "test": 8}, size=40)


def test_a_run_is_recorded_in_an_embedded_store_by_default(dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the conftest's shared store: not the default
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    summary = train.main(quick_args(dataset, tmp_path, "--epochs", "2", "--report", "on"))
    output = tmp_path / "output"
    store = output / "mlflow.db"
    assert store.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("breedfilter")
    assert experiment.artifact_location == (output / "mlartifacts").resolve().as_uri()  # beside the store
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model"] == "timm/test_efficientnet" and float(params["lr"]) == 0.01
    assert params["train_images"] == "48" and params["classes"] == "3"
    # Every epoch's numbers, at step = epoch, exactly as the summary has them.
    history = client.get_metric_history(run.info.run_id, "valid_accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (row["epoch"], row["valid_accuracy"]) for row in summary["history"]
    ]
    assert run.data.metrics["test_accuracy"] == summary["test"]["accuracy"]
    assert run.data.metrics["ece_after"] == pytest.approx(summary["decisions"]["ece_after"])
    # The debugger's and profiler's verdicts as tags, one per rule, with how many fired.
    debugger = json.loads((output / "debugger.json").read_text())
    for verdict in debugger["rules"]:
        assert run.data.tags[f"debugger.{verdict['rule']}"] == verdict["status"]
    assert run.data.tags["debugger.fired"] == str(sum(v["status"] == "fired" for v in debugger["rules"]))
    assert any(key.startswith("profiler.") for key in run.data.tags)
    assert run.data.tags["model_version"] == summary["model_version"]
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "metrics.json", "confusion_matrix.png", "debugger.json", "open_set.json"} <= files
    # The artifact as a logged model: the same files as model.tar.gz, linked to the run and its test metrics.
    (model,) = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert model.source_run_id == run.info.run_id and model.status.to_proto() == 2  # READY
    logged = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        packaged = {name for name in tar.getnames() if "/" not in name}
    assert packaged - {"code"} <= logged and "code" in logged
    assert any(m.key == "test_accuracy" for m in model.metrics)


def test_off_means_no_store(dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train.main(quick_args(dataset, tmp_path, "--epochs", "1", "--mlflow", "off"))
    assert not (tmp_path / "output" / "mlflow.db").exists()
    assert not (tmp_path / "output" / "mlartifacts").exists()


def test_an_unreachable_tracking_server_stops_the_run_before_training(dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries, not needed to see a refusal
    args = quick_args(dataset, tmp_path, "--epochs", "1", "--mlflow-uri", "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(mlflow_tracking.TrackingUnavailable, match=r"MLflow tracking at http://127.0.0.1:9: "):
        train.main(args)
    assert not (tmp_path / "model").exists() and not (tmp_path / "checkpoints" / "last.pt").exists()


def test_register_model_needs_mlflow(dataset, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        train.main(quick_args(dataset, tmp_path, "--register-model", "dogs", "--mlflow", "off"))
    assert "--register-model registers the model MLflow logged" in capsys.readouterr().err


def test_the_gate_checks_test_accuracy_and_the_unknown_share_when_measured() -> None:
    gate = model_registry.Gate(min_test_accuracy=0.8, max_unknown_sorted=0.05)
    assert model_registry.judge(gate, {"test_accuracy": 0.9, "unknown_sorted_share": 0.01}).passed
    unmeasured = model_registry.judge(gate, {"test_accuracy": 0.9})
    assert unmeasured.passed and "not measured" in unmeasured.text()
    low = model_registry.judge(gate, {"test_accuracy": 0.79, "unknown_sorted_share": 0.0})
    assert not low.passed and "test accuracy 0.7900 < 0.8" in low.text()
    sorts_unknowns = model_registry.judge(gate, {"test_accuracy": 0.95, "unknown_sorted_share": 0.2})
    assert not sorts_unknowns.passed and "unknown images sorted 0.2000 > 0.05" in sorts_unknowns.text()
    assert not model_registry.judge(gate, {"test_accuracy": None}).passed  # no test split: never registered


def _registered_run(dataset: Path, out: Path, store: str, *extra: str, epochs: int = 6) -> dict[str, Any]:
    return train.main(
        quick_args(dataset, out, "--epochs", str(epochs), "--mlflow-uri", store, "--register-model", "dogs", *extra)
    )


def test_only_a_run_that_passes_the_gate_becomes_the_approved_version(dataset, tmp_path, capsys) -> None:
    store = f"sqlite:///{tmp_path / 'team.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    first = _registered_run(dataset, tmp_path / "a", store, "--gate-min-test-accuracy", "0.5")
    assert first["test"]["accuracy"] >= 0.5
    v1 = model_registry.approved(client, "dogs")
    assert str(v1.version) == "1"
    assert v1.tags["model_data_url"] == str((tmp_path / "a" / "model.tar.gz").resolve())
    assert v1.tags["gate.verdict"].startswith("passed: test accuracy")
    # A run whose model does not learn (a rate of 1e-9 from a zero head: every image gets the same answer) is
    # tagged with its failed verdict and adds no version; the alias stays.
    weak = _registered_run(dataset, tmp_path / "b", store, "--gate-min-test-accuracy", "0.5", "--lr", "1e-9", epochs=1)
    assert weak["test"]["accuracy"] < 0.5
    assert [str(v.version) for v in client.search_model_versions("name = 'dogs'")] == ["1"]
    (weak_run,) = client.search_runs(
        [client.get_experiment_by_name("breedfilter").experiment_id], "tags.`gate.verdict` LIKE 'failed%'"
    )
    assert weak_run.data.tags["gate.verdict"].startswith("failed: test accuracy")
    assert str(model_registry.approved(client, "dogs").version) == "1"
    # The next run that passes becomes version 2 and takes the alias.
    _registered_run(dataset, tmp_path / "c", store, "--gate-min-test-accuracy", "0.5")
    assert str(model_registry.approved(client, "dogs").version) == "2"
    capsys.readouterr()
    assert cli.main(["model", "approved", "--name", "dogs", "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert "dogs version 2 (alias approved)" in printed
    assert f"aws s3 cp {(tmp_path / 'c' / 'model.tar.gz').resolve()} s3://BUCKET/models/dogs-v2/model.tar.gz" in printed
    assert (
        "sam deploy --parameter-overrides" in printed
        and "ModelDataUrl=s3://BUCKET/models/dogs-v2/model.tar.gz" in printed
    )


def test_a_sagemaker_job_registers_where_its_model_tar_gz_will_be(dataset, tmp_path, capsys, monkeypatch) -> None:
    """As `breedfilter train --register-model` launches it: the job fills its own name into --model-data-url."""
    monkeypatch.setenv("SM_TRAINING_ENV", json.dumps({"job_name": "breedfilter-20261206101500"}))
    store = f"sqlite:///{tmp_path / 'team.db'}"
    url = "s3://bucket/breedfilter/jobs/{job_name}/output/model.tar.gz"
    _registered_run(dataset, tmp_path, store, "--gate-min-test-accuracy", "0", "--model-data-url", url)
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("breedfilter").experiment_id])
    assert run.info.run_name == "breedfilter-20261206101500"  # tuning trials are told apart by their job names
    assert cli.main(["model", "approved", "--name", "dogs", "--tracking-uri", store, "--region", "eu-west-1"]) == 0
    printed = capsys.readouterr().out
    assert "ModelDataUrl=s3://bucket/breedfilter/jobs/breedfilter-20261206101500/output/model.tar.gz" in printed
    assert ".dkr.ecr.eu-west-1.amazonaws.com/" in printed


def test_model_commands_say_what_is_missing(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # no out/train/output/mlflow.db here
    assert cli.main(["model", "approved"]) == 1
    assert "no tracking store: out/train/output/mlflow.db does not exist" in capsys.readouterr().err
    store = f"sqlite:///{tmp_path / 'empty.db'}"
    assert cli.main(["model", "approved", "--name", "nothing", "--tracking-uri", store]) == 1
    assert "no approved version of 'nothing'" in capsys.readouterr().err
