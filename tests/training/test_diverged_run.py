"""A run whose loss diverges is stopped and ships no model (issue 13, item 6).

The guard's rules on their own (training/divergence.py), then real train.py runs on generated images: the
issue's run (resnet18 from scratch at --lr 1e6 on two classes) exits with code 3, says why on stderr and
writes no model; a NaN loss stops the epoch with the debugger off, and with the debugger's exploding_tensor
on; two processes stop together; the same network at a sane rate is not flagged and writes its artifact.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import divergence
import train
import trainer
from divergence import DivergenceGuard, TrainingDiverged, loss_problem
from tests.image_datasets import COLOURS, make_dataset

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = ROOT / "training" / "train.py"
LN2 = math.log(2)


# -- the rules ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_fires(value):
    assert loss_problem("valid loss", value, 2, num_classes=3, best=(0.5, 1)) == f"valid loss {value} at epoch 2"
    assert loss_problem("train loss", value, 1, num_classes=3) is not None


def test_orders_of_magnitude_above_chance_fire_from_the_first_epoch():
    problem = loss_problem("train loss", 7.07e7, 1, num_classes=2)
    assert problem == "train loss 7.07e+07 at epoch 1 is 1e+08× the chance-level loss ln(2) = 0.693"
    assert loss_problem("train loss", 101 * LN2, 1, num_classes=2) is not None
    assert loss_problem("train loss", 99 * LN2, 1, num_classes=2) is None  # a bad start, not a blow-up


def test_orders_of_magnitude_above_the_lowest_loss_fire_above_the_floor():
    # 2 classes: floor 10 × ln 2 = 6.93. Learned to 0.05, then 8.0: 160× its lowest and above the floor.
    problem = loss_problem("valid loss", 8.0, 4, num_classes=2, best=(0.05, 2))
    assert problem == "valid loss 8 at epoch 4 is 1.6e+02× its lowest, 0.05 at epoch 2"
    assert loss_problem("valid loss", 4.0, 4, num_classes=2, best=(0.01, 2)) is None  # 400× but below the floor
    assert loss_problem("valid loss", 8.0, 4, num_classes=2, best=(0.1, 2)) is None  # above the floor, only 80×


def test_tiny_losses_that_wobble_do_not_fire():
    # Overfitting takes a tiny loss up by 100× and more: still far below chance level.
    for value, best in [(0.2, (0.001, 3)), (0.5, (1e-6, 2)), (1e-3, (1e-9, 5)), (0.69, (0.0, 1))]:
        assert loss_problem("valid loss", value, 6, num_classes=2, best=best) is None


def test_a_healthy_run_never_fires():
    guard = DivergenceGuard(num_classes=3)
    rows = [(1.3, 1.2), (0.9, 1.0), (0.5, 0.7), (0.2, 0.6), (0.05, 0.8), (0.01, 1.4), (0.004, 2.5)]  # overfits
    for epoch, (train_loss, valid_loss) in enumerate(rows, 1):
        for step in range(5):
            assert not guard.observe_step(train_loss * (1 + 0.1 * step), epoch * 5 + step, epoch)
        assert guard.check_epoch({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss}) is None
    assert guard.best == {"train_loss": (0.004, 7), "valid_loss": (0.6, 4)}


def test_the_guard_spells_out_the_first_finding_and_lists_the_others():
    guard = DivergenceGuard(num_classes=2)
    assert guard.check_epoch({"epoch": 1, "train_loss": 0.69, "valid_loss": 0.6}) is None
    reason = guard.check_epoch({"epoch": 2, "train_loss": 1.4e8, "valid_loss": math.nan})
    assert reason == (
        "diverged: train loss 1.4e+08 at epoch 2 is 2e+08× its lowest, 0.69 at epoch 1 (also valid loss nan)"
    )
    assert guard.best == {"train_loss": (0.69, 1), "valid_loss": (0.6, 1)}  # a diverged epoch is no reference


def test_a_non_finite_step_is_named_with_its_step():
    guard = DivergenceGuard(num_classes=2)
    assert not guard.observe_step(0.7, 1, 1)
    assert guard.observe_step(math.nan, 2, 1)
    assert guard.observe_step(math.inf, 3, 1)  # the first one is kept
    reason = guard.check_epoch({"epoch": 1, "train_loss": math.nan, "valid_loss": 0.7})
    assert reason == "diverged: the training loss was nan at step 2 in epoch 1"


def test_a_resumed_run_keeps_its_earlier_epochs_as_references():
    guard = DivergenceGuard(num_classes=2)
    guard.remember([{"epoch": 1, "train_loss": 0.5, "valid_loss": 0.4}, {"epoch": 2, "train_loss": 0.02}])
    assert guard.best == {"train_loss": (0.02, 2), "valid_loss": (0.4, 1)}
    assert guard.check_epoch({"epoch": 3, "train_loss": 7.5, "valid_loss": 0.5}).startswith(
        "diverged: train loss 7.5 at epoch 3 is 3.8e+02× its lowest, 0.02 at epoch 2"
    )


def test_the_advice_names_the_rate_and_clipping_when_it_was_off():
    assert divergence.advice(1e6, 1.0) == "lower --lr (it was 1e+06)"
    assert divergence.advice(0.5, 0.0) == "lower --lr (it was 0.5) and set --grad-clip 1.0"
    assert trainer.TrainingDiverged is TrainingDiverged  # what train.py's __main__ catches


# -- real runs ----------------------------------------------------------------------------------------------
TWO_CLASSES = {name: COLOURS[name] for name in list(COLOURS)[:2]}


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("two"), {"train": 8, "valid": 4, "test": 4}, classes=TWO_CLASSES)


def run_args(data: Path, out: Path, *extra: str, model: str = "resnet18") -> list[str]:
    return [
        "--data", str(data), "--model", model, "--weights", "none", "--image-size", "32", "--batch-size", "8",
        "--num-workers", "0", "--epochs", "3",
        "--model-dir", str(out / "model"), "--output-data-dir", str(out / "output"),
        "--checkpoint-dir", str(out / "checkpoints"), "--report", "off",
        *extra,
    ]  # fmt: skip


def run_script(args: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "training"), "OMP_NUM_THREADS": "1"}
    command = [*(launcher or [sys.executable]), str(TRAIN_PY), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)


def assert_no_model(out: Path) -> dict:
    """Nothing deployable was written; metrics.json says the run diverged. Returns metrics.json."""
    assert not list(out.rglob("model.pth")) and not list(out.rglob("model.tar.gz"))
    assert not (out / "model").exists() or not any((out / "model").iterdir())
    assert not (out / "checkpoints" / "last.pt").exists()  # a resumed run starts from the last healthy epoch
    metrics = json.loads((out / "output" / "metrics.json").read_text())
    assert metrics["diverged"] is True
    return metrics


def test_the_issues_run_stops_with_exit_code_3_and_writes_no_model(two_classes, tmp_path):
    """resnet18 from scratch at --lr 1e6, debugger on (the default): the loss goes to 7e7 in the first epoch."""
    result = run_script(run_args(two_classes, tmp_path, "--lr", "1e6"))
    assert result.returncode == 3, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("train.py: diverged: train loss ") and line.endswith("lower --lr (it was 1e+06)"), line
    assert "× the chance-level loss ln(2) = 0.693" in line
    assert "Traceback" not in result.stderr
    assert "epoch=1;" in result.stdout and "epoch=2;" not in result.stdout  # stopped after the first epoch
    assert "done in" not in result.stdout
    metrics = assert_no_model(tmp_path)
    assert metrics["stop_reason"] == line.removeprefix("train.py: ")
    assert [row["epoch"] for row in metrics["history"]] == [1]
    assert metrics["history"][0]["train_loss"] > 1e4
    debugger = json.loads((tmp_path / "output" / "debugger.json").read_text())
    assert debugger["epochs"][0]["epoch"] == 1  # the debugger saw the epoch before the run stopped


def nan_args(data: Path, out: Path, *extra: str) -> list[str]:
    """A rate that sends the weights to Inf in the first step, with no clipping: the loss is NaN soon after."""
    return run_args(
        data, out, "--lr", "1e30", "--grad-clip", "0", "--warmup-epochs", "0", "--batch-size", "2", *extra,
        model="timm/test_efficientnet",
    )  # fmt: skip


class StepCounter:
    """A trainer callback that only counts the steps trained."""

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer, step) -> None:
        self.steps += 1

    def on_epoch_end(self, trainer, row) -> bool:
        return False


def test_a_nan_loss_stops_the_epoch_with_the_debugger_off(two_classes, tmp_path):
    counter = StepCounter()
    with pytest.raises(TrainingDiverged, match=r"^diverged: the training loss was nan at step \d+ in epoch 1") as info:
        train.main(nan_args(two_classes, tmp_path, "--debugger", "off"), callbacks=[counter])
    assert info.value.epoch == 1
    assert "set --grad-clip 1.0" in info.value.reason
    bad_step = int(info.value.reason.split(" at step ")[1].split()[0])
    assert counter.steps == bad_step < 8  # the epoch's 8 steps were cut at the NaN one
    metrics = assert_no_model(tmp_path)
    (row,) = metrics["history"]
    assert math.isnan(row["train_loss"]) and math.isnan(row["valid_loss"])
    assert not (tmp_path / "output" / "debugger.json").exists()


def test_a_nan_loss_stopped_by_exploding_tensor_is_a_diverged_run(two_classes, tmp_path):
    """The debugger's rule stops at the NaN step (it sees the losses only here): diverged all the same."""
    args = nan_args(
        two_classes, tmp_path, "--debugger-collections", "losses", "--debugger-rules", "none,exploding_tensor=stop"
    )
    with pytest.raises(TrainingDiverged) as info:
        train.main(args)
    reason = info.value.reason
    assert reason.startswith("diverged: the training loss was nan at step")
    assert "stopped by the debugger: exploding_tensor at step" in reason
    metrics = assert_no_model(tmp_path)
    assert metrics["stop_reason"] == reason
    debugger = json.loads((tmp_path / "output" / "debugger.json").read_text())
    assert debugger["stopped_by"]["rule"] == "exploding_tensor"


def test_two_processes_stop_together(tmp_path):
    """torchrun, 2 processes of 16 steps an epoch: the NaN loss (step 3) ends the epoch at the ranks' next
    mid-epoch check (step 10); both exit with 3. The debugger only records the losses (no rule to stop)."""
    data = make_dataset(tmp_path / "data", {"train": 16, "valid": 4}, classes=TWO_CLASSES)
    watch = ("--debugger-rules", "none", "--debugger-collections", "losses", "--profiler", "off")
    args = nan_args(data, tmp_path / "out", *watch, "--batch-size", "1")
    args[args.index("--model") + 1] = "timm/test_efficientnet_gn"  # GroupNorm: batches of one image
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_script(args, launcher=launcher)
    assert result.returncode != 0
    assert "2 process(es)" in result.stdout
    diverged = [line for line in result.stderr.splitlines() if line.startswith("train.py: diverged: ")]
    assert diverged, result.stderr[-3000:]
    assert re.search(r"exitcode\s*:\s*3\b", result.stderr), result.stderr[-3000:]
    metrics = assert_no_model(tmp_path / "out")
    bad_step = int(metrics["stop_reason"].split(" at step ")[1].split()[0])
    losses = json.loads((tmp_path / "out" / "output" / "debugger.json").read_text())["losses"]
    assert bad_step < trainer.DIVERGENCE_CHECK_STEPS == losses[-1][0] < 16
    assert math.isnan(float(losses[bad_step - 1][1]))  # debugger.json writes NaN as a string


def test_the_same_network_at_a_sane_rate_is_not_flagged(two_classes, tmp_path):
    result = run_script(run_args(two_classes, tmp_path, "--lr", "0.01"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "diverged" not in result.stdout + result.stderr
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert "diverged" not in metrics and len(metrics["history"]) == 3
    assert (tmp_path / "model" / "model.pth").is_file() and (tmp_path / "model.tar.gz").is_file()
