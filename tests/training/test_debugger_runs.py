"""The debugger and profiler on real train.py runs with planted faults, and on a healthy run (no false alarms).

Each run is train.py (timm's tiny test network, 32-pixel crops) on images the test generates; the fault is
planted in the real run: a huge learning rate, a network initialised to zeros, a tiny dataset with no signal to
learn (so it can only be memorised), a data set that sleeps in ``__getitem__``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

import architectures
import imagefolder
import train
from tests.image_datasets import make_dataset
from tests.support import quick_args, run_train_py

GREY = {"a": (128, 128, 128), "b": (128, 128, 128), "c": (128, 128, 128)}  # classes with nothing to tell apart


def outputs(out: Path) -> tuple[dict, dict]:
    output = out / "output"
    return json.loads((output / "debugger.json").read_text()), json.loads((output / "profiler.json").read_text())


def verdicts(document: dict) -> dict[str, dict]:
    return {v["rule"]: v for v in document["rules"]}


def fired(document: dict) -> set[str]:
    return {v["rule"] for v in document["rules"] if v["status"] == "fired"}


def test_a_healthy_run_raises_no_rule_and_writes_every_output(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 24, "valid": 8, "test": 8}, size=40)
    out = tmp_path / "run"
    # loader workers: with none, decoding would take a third of this tiny network's steps (the Dataloader rule says so)
    flags = ("--epochs", "3", "--debugger-interval", "3", "--num-workers", "2", "--report", "on")
    summary = train.main(quick_args(data, out, *flags))
    debugger, profiler = outputs(out)
    assert fired(debugger) == set(), [v["evidence"] for v in debugger["rules"] if v["status"] == "fired"]
    assert fired(profiler) == set(), [v["evidence"] for v in profiler["rules"] if v["status"] == "fired"]
    assert summary["stop_reason"] == "" and len(summary["history"]) == 3
    assert set(verdicts(debugger)) == {
        "vanishing_gradient",
        "exploding_tensor",
        "loss_not_decreasing",
        "overfit",
        "overtraining",
        "poor_weight_initialization",
        "class_imbalance",
        "dead_relu",
    }
    assert all(v["evidence"] for v in debugger["rules"] + profiler["rules"])  # every verdict says what it checked
    steps = 3 * 9  # 72 images / batch 8 per epoch
    assert [point[0] for point in debugger["losses"]] == list(range(1, steps + 1))
    assert debugger["records"] == len(range(3, steps + 1, 3)) + 1  # every 3rd step and step 1
    assert debugger["classes"]["seen"] == [72, 72, 72]  # 24 per class per epoch, 3 epochs
    assert debugger["layers"] and debugger["activations"]
    assert profiler["steps"]["summary"]["steps"] == steps
    assert profiler["torch_profiler"]["steps"] == [6, 8]
    assert profiler["torch_profiler"]["top_operators"][0]["self_cpu_ms"] > 0
    trace = out / "output" / profiler["torch_profiler"]["trace"]
    assert trace.stat().st_size > 0
    assert profiler["init_seconds"] > 0 and profiler["system"]["samples"] is not None
    assert (out / "output" / "report.html").is_file()
    events = list((out / "output" / "tensorboard").glob("events.out.tfevents.*"))
    assert any(path.name.endswith(".debugger") for path in events)
    assert summary["environment"]["torch"] == torch.__version__


def test_a_huge_learning_rate_fires_exploding_tensor_and_stops_training(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 24, "valid": 4}, size=40)
    out = tmp_path / "run"
    flags = ("--epochs", "3", "--optimizer", "sgd", "--lr", "1e12", "--momentum", "0", "--debugger-interval", "5")
    with pytest.raises(train.trainer_module.TrainingDiverged):  # the loss went NaN: a diverged run
        train.main(quick_args(data, out, *flags))
    summary = json.loads((out / "output" / "metrics.json").read_text())
    assert summary["diverged"] is True and not (out / "model").exists()  # no model is written
    debugger, _ = outputs(out)
    verdict = verdicts(debugger)["exploding_tensor"]
    assert verdict["status"] == "fired" and verdict["action"] == "stop"
    assert debugger["stopped_by"]["rule"] == "exploding_tensor"
    stopped_at = verdict["step"]
    assert stopped_at < 9  # within the first epoch of 9 steps
    assert debugger["losses"][-1][0] == stopped_at  # no step ran after the rule fired
    assert len(summary["history"]) == 1
    assert "exploding_tensor" in summary["stop_reason"] and f"step {stopped_at}" in summary["stop_reason"]
    assert verdict["evidence"]


def test_under_torchrun_a_stop_rule_stops_every_rank_at_the_same_step(tmp_path):
    """Rank 0 measures and decides; the decision is broadcast on sampled steps, so no rank waits for another."""
    data = make_dataset(tmp_path / "data", {"train": 24, "valid": 4}, size=40)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    flags = ("--epochs", "3", "--batch-size", "4", "--optimizer", "sgd", "--lr", "1e12", "--momentum", "0")
    result = run_train_py(quick_args(data, tmp_path / "run", *flags, "--debugger-interval", "2"), launcher=launcher)
    # both ranks ended (a rank left waiting would hang), with train.py's exit code for a diverged run
    assert result.returncode != 0 and "train.py: diverged: " in result.stderr, result.stderr[-3000:]
    debugger, _ = outputs(tmp_path / "run")
    verdict = debugger["stopped_by"]
    assert verdict["rule"] == "exploding_tensor"
    last = debugger["losses"][-1][0]
    assert verdict["step"] <= last < verdict["step"] + 2  # stopped at the first sampled step from there
    assert last % 2 == 0 or last == 1
    metrics = json.loads((tmp_path / "run" / "output" / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and "exploding_tensor" in metrics["stop_reason"] and metrics["diverged"]


def test_a_network_initialised_to_zero_fires_vanishing_gradient_and_poor_initialisation(tmp_path, monkeypatch):
    build = architectures.build_model

    def zeroed(*args, **kwargs):
        model = build(*args, **kwargs)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
        return model

    monkeypatch.setattr(architectures, "build_model", zeroed)
    monkeypatch.setattr(architectures, "init_head", lambda model, mode: None)
    data = make_dataset(tmp_path / "data", {"train": 16, "valid": 4}, size=40)
    out = tmp_path / "run"
    train.main(quick_args(data, out, "--epochs", "2", "--debugger-interval", "2"))
    debugger, _ = outputs(out)
    assert {"vanishing_gradient", "poor_weight_initialization"} <= fired(debugger)
    vanishing = verdicts(debugger)["vanishing_gradient"]
    assert vanishing["tensor"] and vanishing["step"] >= 1 and vanishing["action"] == "log"
    assert debugger["stopped_by"] is None  # log-only rules let the run finish


def test_a_tiny_dataset_with_nothing_to_learn_is_memorised_and_fires_overfit(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 3, "valid": 12}, size=40, classes=GREY)
    out = tmp_path / "run"
    flags = ("--epochs", "25", "--lr", "0.01", "--batch-size", "9", "--augment", "none", "--weight-decay", "0")
    summary = train.main(quick_args(data, out, *flags, "--debugger-rules", "none,overfit=stop"))
    debugger, _ = outputs(out)
    history = summary["history"]
    assert history[-1]["train_accuracy"] == 1.0  # memorised
    verdict = verdicts(debugger)["overfit"]
    assert verdict["status"] == "fired" and verdict["epoch"] == len(history) < 25  # and stopped there
    assert "overfit" in summary["stop_reason"]


def test_a_slow_dataset_fires_the_dataloader_rule_with_a_recommendation(tmp_path, monkeypatch):
    original = imagefolder.ImageFolderDataset.__getitem__

    def slow(self, index):
        time.sleep(0.1)  # 0.8 s a batch of 8: far above the tiny network's step, even on a loaded machine
        return original(self, index)

    monkeypatch.setattr(imagefolder.ImageFolderDataset, "__getitem__", slow)
    data = make_dataset(tmp_path / "data", {"train": 16, "valid": 2}, size=40)
    out = tmp_path / "run"
    train.main(quick_args(data, out, "--epochs", "1", "--debugger", "off", "--profiler-steps", "off"))
    assert not (out / "output" / "debugger.json").exists()
    profiler = json.loads((out / "output" / "profiler.json").read_text())
    verdict = verdicts(profiler)["Dataloader"]
    assert verdict["status"] == "fired"
    assert "--num-workers" in verdict["recommendation"]
    assert profiler["steps"]["summary"]["share"]["data_seconds"] > 0.5
    assert profiler["torch_profiler"] is None


def test_collections_and_their_own_intervals_are_chosen_per_run(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 16, "valid": 2}, size=40)
    out = tmp_path / "run"
    collections = ("--debugger-collections", "losses,gradients:2,activations:3", "--debugger-interval", "20")
    train.main(quick_args(data, out, "--epochs", "1", "--profiler", "off", *collections))
    debugger = json.loads((out / "output" / "debugger.json").read_text())
    assert debugger["intervals"] == {"losses": 20, "gradients": 2, "activations": 3}
    layer = next(iter(debugger["layers"].values()))  # 48 images / batch 8: steps 1-6
    assert [point[0] for point in layer["grad_norm"]] == [1, 2, 4, 6] and layer["weight_norm"] == []
    activation = next(iter(debugger["activations"].values()))
    assert [point[0] for point in activation["zero_fraction"]] == [1, 3, 6]
    assert len(debugger["losses"]) == 6 and debugger["classes"]["seen"] == [0, 0, 0]  # inputs not collected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--debugger-rules", "exploding=stop"), "unknown rule 'exploding'"),
        (("--debugger-rules", "overfit=halt"), "the action must be one of log, stop, off"),
        (("--profiler-rules", "Dataloader.nope=1"), "Dataloader has no threshold 'nope'"),
        (("--debugger-collections", "weights,moods"), "unknown debugger collection(s) moods"),
        (("--profiler-steps", "six"), "write FIRST:COUNT"),
    ],
)
def test_bad_debugger_and_profiler_flags_fail_before_training(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(quick_args(tmp_path / "no-data-needed", tmp_path / "run", *flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
