"""train.py end to end on images the tests generate: learning, resume, the artifact, DDP, bad data.

Runs use timm's tiny test networks (about 100k parameters) on 32-pixel crops, so each takes seconds on a CPU.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import artifact
import imagefolder
import imaging
import inference
import train
from tests.image_datasets import make_dataset
from tests.support import quick_args, run_train_py

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 16, "valid": 8, "test": 8}, size=40)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, dict]:
    """One full run shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("run")
    summary = train.main(quick_args(dataset, out, "--epochs", "6"))
    return out, summary


def test_training_lowers_the_loss_on_a_learnable_task(trained):
    _, summary = trained
    history = summary["history"]
    assert len(history) == 6
    # Chance on 3 classes: loss ln 3 = 1.10, accuracy 1/3.
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert min(row["valid_loss"] for row in history) < 0.8
    assert summary["best_valid_accuracy"] >= 0.8
    assert summary["test"]["accuracy"] >= 0.7
    assert history[-1]["lr"] > 0  # the rate the last steps trained at, not the schedule's end


def test_run_writes_metrics_plots_and_a_sagemaker_layout_artifact(trained):
    out, summary = trained
    metrics = json.loads((out / "output" / "metrics.json").read_text())
    assert metrics["labels"] == ["Red_Thing", "Green_Thing", "Blue_Thing"]
    assert metrics["counts"]["train"] == {"Red_Thing": 16, "Green_Thing": 16, "Blue_Thing": 16}
    assert set(metrics["test"]["per_class_accuracy"]) == set(metrics["labels"])
    assert sum(map(sum, metrics["test"]["confusion"])) == 24
    for png in ("training_curves.png", "confusion_matrix.png"):
        with Image.open(out / "output" / png) as image:
            assert image.format == "PNG" and image.width > 300
    with tarfile.open(out / "model.tar.gz") as tar:
        names = set(tar.getnames())
    timm_version = importlib.metadata.version("timm")
    vendored = {n for n in names if n.startswith(("code/timm/", f"code/timm-{timm_version}.dist-info/"))}
    assert "code/timm/__init__.py" in vendored  # a timm architecture carries its timm: nothing installed at start
    assert names - vendored == {
        "model.pth",
        "labels.json",
        "config.json",
        "code/inference.py",
        "code/imaging.py",
        "code/architectures.py",
        "code/open_set.py",
        "code/s3_pointer.py",
        "open_set.pt",
        "deployment.py",  # the same handlers on AWS's Ray Serve container
        "config.yaml",
    }
    config = artifact.read_config(out / "model.tar.gz")
    assert config["weights_sha256"] == artifact.sha256_file(out / "model" / "model.pth")
    assert config["preprocessing"] == {
        "resize": 34,
        "crop": 32,
        "interpolation": "bicubic",
        "mean": list(imaging.IMAGENET_MEAN),
        "std": list(imaging.IMAGENET_STD),
    }
    assert config["metrics"]["test_accuracy"] == summary["test"]["accuracy"]
    assert config["architecture"] == "timm/test_efficientnet"
    assert config["vendored"] == {"timm": timm_version}
    assert config["version"].endswith(config["weights_sha256"][:8])
    assert torch.load(out / "model" / "model.pth", weights_only=True)  # loads without pickle


def test_artifact_round_trip_predicts_what_evaluation_measured(trained, dataset, tmp_path):
    """train -> model.tar.gz -> model_fn -> predict: the same labels and the same test accuracy."""
    out, summary = trained
    model_dir = artifact.extract(out / "model.tar.gz", tmp_path / "unpacked")
    loaded = inference.model_fn(str(model_dir))
    labels = json.loads((model_dir / "labels.json").read_text())
    index = imagefolder.index_dataset(imagefolder.split_dirs_from_root(dataset), verify_images=False)
    correct = 0
    for path, target in index.splits["test"].samples:
        answer = json.loads(inference.output_fn(inference.predict_bytes(loaded, path.read_bytes(), "image/jpeg"), None))
        predictions = answer["predictions"]
        assert [p["label"] for p in predictions] == [labels[p["index"]] for p in predictions]
        assert answer["model"]["version"] == summary["model_version"]
        correct += predictions[0]["index"] == target
    assert correct / len(index.splits["test"].samples) == pytest.approx(summary["test"]["accuracy"])


class Interrupt(Exception):
    pass


class InterruptAfter:
    """Plays a spot interruption: dies at the first step after ``epochs`` epochs were checkpointed."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_step_end(self, trainer, step):
        if step.epoch == self.epochs:
            raise Interrupt

    def on_epoch_end(self, trainer, row):
        return False


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model" / "model.pth", weights_only=True)


def _comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


def test_resume_from_checkpoint_gives_the_same_result_as_an_uninterrupted_run(dataset, tmp_path):
    args = ("--epochs", "3", "--augment", "standard", "--num-workers", "1")
    whole = train.main(quick_args(dataset, tmp_path / "whole", *args))
    with pytest.raises(Interrupt):
        train.main(quick_args(dataset, tmp_path / "cut", *args), callbacks=[InterruptAfter(epochs=2)])
    assert (tmp_path / "cut" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "cut" / "model").exists()
    resumed = train.main(quick_args(dataset, tmp_path / "cut", *args))
    assert _comparable(resumed["history"]) == _comparable(whole["history"])
    first, second = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # --resume false starts over instead.
    fresh = train.main(quick_args(dataset, tmp_path / "cut", "--epochs", "1", "--resume", "false"))
    assert len(fresh["history"]) == 1


def test_naive_recipe_trains_the_head_only(dataset, tmp_path):
    summary = train.main(
        quick_args(dataset, tmp_path, "--recipe", "naive", "--unfreeze-epoch", "-1", "--epochs", "1", "--seed", "5")
    )
    assert summary["hyperparameters"]["scheduler"] == "constant"
    assert summary["history"][0]["backbone_trainable"] is False
    torch.manual_seed(5)  # the same initialisation train.py made
    import architectures

    initial = architectures.build_model("timm/test_efficientnet", 3).state_dict()
    final = _weights(tmp_path)
    changed = {k for k in final if not torch.equal(final[k], initial[k])}
    assert changed == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("freeze_bn", ["true", "false"])
def test_freeze_bn_keeps_the_backbone_statistics_while_its_weights_train(dataset, tmp_path, freeze_bn):
    summary = train.main(quick_args(dataset, tmp_path, "--epochs", "1", "--seed", "3", "--freeze-bn", freeze_bn))
    assert summary["history"][0]["backbone_trainable"] is True
    torch.manual_seed(3)
    import architectures

    initial = architectures.build_model("timm/test_efficientnet", 3).state_dict()
    final = _weights(tmp_path)
    stats = [k for k in final if k.endswith(("running_mean", "running_var"))]
    assert stats
    kept = all(torch.equal(final[k], initial[k]) for k in stats)
    assert kept is (freeze_bn == "true")
    assert not torch.equal(final["conv_stem.weight"], initial["conv_stem.weight"])  # the backbone trained


def test_early_stopping_stops_when_validation_stalls(dataset, tmp_path):
    # A rate too small to move anything, statistics kept, a random head: validation cannot improve.
    args = quick_args(dataset, tmp_path, "--epochs", "8", "--lr", "1e-9", "--early-stopping-patience", "2")
    args += ["--freeze-bn", "true", "--head-init", "default"]
    summary = train.main(args)
    assert len(summary["history"]) < 8
    assert "early stopping" in summary["stop_reason"]
    # Run again (as after a crash once last.pt was written): nothing left to train, the same outcome.
    again = train.main(args)
    assert _comparable(again["history"]) == _comparable(summary["history"])
    assert again["stop_reason"] == summary["stop_reason"]


def test_resuming_with_other_settings_is_refused(dataset, tmp_path):
    train.main(quick_args(dataset, tmp_path, "--epochs", "1"))
    import checkpoints

    with pytest.raises(checkpoints.CheckpointMismatch, match="lr, optimizer"):
        train.main(quick_args(dataset, tmp_path, "--epochs", "1", "--lr", "0.5", "--optimizer", "sgd"))


def test_two_process_ddp_agrees_with_one_process(dataset, tmp_path):
    """torchrun, 2 processes × batch 4 on gloo == 1 process × batch 8: same batches, same gradients."""
    common = ("--epochs", "2", "--augment", "none", "--channels-last", "false")
    model = "timm/test_efficientnet_gn"  # GroupNorm: no per-process batch statistics
    one = run_train_py([*quick_args(dataset, tmp_path / "one", *common, "--batch-size", "8", model=model)])
    assert one.returncode == 0, one.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = run_train_py(
        [*quick_args(dataset, tmp_path / "two", *common, "--batch-size", "4", model=model)], launcher=launcher
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout
    h1 = json.loads((tmp_path / "one" / "output" / "metrics.json").read_text())
    h2 = json.loads((tmp_path / "two" / "output" / "metrics.json").read_text())
    for a, b in zip(h1["history"], h2["history"], strict=True):
        for key in ("train_loss", "valid_loss", "valid_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    assert h1["test"]["confusion"] == h2["test"]["confusion"]
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert all(torch.allclose(w1[k].float(), w2[k].float(), atol=1e-4) for k in w1)


def test_runs_as_a_sagemaker_job_from_its_environment(dataset, tmp_path):
    """SageMaker's contract: channels and dirs in SM_* variables, hyperparameters as flags (strings)."""
    root = tmp_path / "opt" / "ml"  # where /opt/ml would be: nothing may be written into the machine's own
    env = {
        "SM_CHANNEL_TRAIN": str(dataset / "train"),
        "SM_CHANNEL_VALID": str(dataset / "valid"),
        "SM_CHANNEL_TEST": str(dataset / "test"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "TRAINING_JOB_NAME": "bf-test-job",
    }
    hyperparameters = ["--model", "timm/test_efficientnet", "--weights", "none", "--epochs", "1", "--image_size", "32"]
    result = run_train_py([*hyperparameters, "--channels_last", "False", "--num-workers", "0"], env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "model" / "model.pth").is_file()
    assert (root / "model" / "code" / "inference.py").is_file()
    # TensorBoard and checkpoints where SageMaker collects them, relative to the job's own /opt/ml
    assert list((root / "output" / "tensorboard").rglob("events.out.tfevents.*"))
    assert (root / "checkpoints" / "bf-test-job" / "last.pt").is_file()
    assert not list(tmp_path.rglob("model.tar.gz"))  # SageMaker tars SM_MODEL_DIR itself
    metrics = json.loads((root / "output" / "data" / "metrics.json").read_text())
    assert metrics["test"]["count"] == 24 and metrics["hyperparameters"]["channels_last"] is False


def test_training_in_process_leaves_the_callers_logging_as_it_was(dataset, tmp_path, capsys):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    train.main(quick_args(dataset, tmp_path, "--epochs", "1", "--debugger", "off", "--profiler", "off"))
    assert "epoch=1;" in capsys.readouterr().out  # the run logged to stdout while it ran
    assert (list(root.handlers), root.level) == before
    logging.getLogger("after.the.run").warning("not for stdout")
    assert "not for stdout" not in capsys.readouterr().out


def test_mixed_precision_runs_where_asked(dataset, tmp_path):
    summary = train.main(quick_args(dataset, tmp_path, "--epochs", "1", "--amp", "on"))  # bfloat16 autocast on CPU
    assert summary["test"]["count"] == 24 and summary["history"][0]["train_loss"] > 0


def test_ddp_with_batchnorm_reports_the_metrics_of_the_model_it_saves(dataset, tmp_path):
    """BatchNorm statistics drift apart per process; evaluation must use the saved (rank 0) ones everywhere."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = quick_args(dataset, tmp_path, "--epochs", "1", "--batch-size", "4", "--freeze-bn", "false")
    result = run_train_py(args, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads((tmp_path / "output" / "metrics.json").read_text())["test"]
    loaded = inference.model_fn(str(tmp_path / "model"))
    index = imagefolder.index_dataset(imagefolder.split_dirs_from_root(dataset), verify_images=False)
    predicted = [
        inference.predict_bytes(loaded, path.read_bytes(), "image/jpeg")["predictions"][0]["index"]
        for path, _ in index.splits["test"].samples
    ]
    correct = sum(p == target for p, (_, target) in zip(predicted, index.splits["test"].samples, strict=True))
    assert correct / len(predicted) == pytest.approx(reported["accuracy"])


def test_metric_lines_are_printed_for_sagemaker(dataset, tmp_path):
    result = run_train_py(quick_args(dataset, tmp_path, "--epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"epoch=1; train_loss=[0-9.]+; .*valid_accuracy=[0-9.]+;", result.stdout)
    assert re.search(r"test_loss=[0-9.]+; test_accuracy=[0-9.]+;", result.stdout)
    assert "wrote " + str(tmp_path / "model.tar.gz") in result.stdout


def test_bad_data_fails_before_training_with_every_problem(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 2, "valid": 2}, size=16)
    (data / "train" / "001.Red_Thing" / "notes.jpg").write_text("not an image")
    (data / "valid" / "003.Blue_Thing").rename(data / "valid" / "004.Purple_Thing")
    result = run_train_py(quick_args(data, tmp_path / "out", "--epochs", "1"))
    assert result.returncode == 2
    assert "notes.jpg" in result.stderr and "003.Blue_Thing" in result.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()
    skipped = run_train_py(
        quick_args(make_dataset(tmp_path / "ok", {"train": 2, "valid": 2}, size=16), tmp_path / "o2")
    )
    assert skipped.returncode == 0, skipped.stderr[-2000:]


def test_offline_imagenet_weights_say_how_to_train_offline(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 1, "valid": 1}, size=16)
    args = quick_args(data, tmp_path / "out")
    args[args.index("--weights") + 1] = "imagenet"
    result = run_train_py(args, env_extra={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 2
    assert "--weights PATH" in result.stderr and "Traceback" not in result.stderr
