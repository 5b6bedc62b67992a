"""The profiler's step timing: a real train.py run split into data wait, forward + backward and optimizer,
and outlier steps found by median + k x MAD (a planted slow step is found; steady steps raise nothing)."""

from __future__ import annotations

import math

import pytest

import train
from observability import step_timing
from tests.image_datasets import make_dataset
from tests.support import quick_args


def test_a_real_run_is_split_into_data_compute_and_optimizer(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 12, "valid": 4, "test": 4}, size=40)
    timer = step_timing.StepTimer()
    summary = train.main(quick_args(data, tmp_path / "run", "--epochs", "2"), callbacks=[timer])
    steps_per_epoch = math.ceil(3 * 12 / 8)
    assert summary["best_epoch"] in (1, 2)
    assert [s["global_step"] for s in timer.steps] == list(range(1, 2 * steps_per_epoch + 1))
    assert all(s[part] > 0 for s in timer.steps for part in step_timing.PARTS)
    report = timer.summary()
    assert report["steps"] == 2 * steps_per_epoch
    assert sum(report["share"].values()) == pytest.approx(1.0)
    assert report["total_seconds"] == pytest.approx(sum(s["step_seconds"] for s in timer.steps))
    assert report["images_per_second"] > 0
    assert report["median_step_seconds"] <= report["p90_step_seconds"] <= report["max_step_seconds"]


def steps(durations: list[float]) -> list[dict[str, float]]:
    return [
        {
            "epoch": 1,
            "step": i,
            "global_step": i + 1,
            "batch_size": 8,
            "data_seconds": d * 0.2,
            "forward_backward_seconds": d * 0.7,
            "optimizer_seconds": d * 0.1,
            "step_seconds": d,
        }
        for i, d in enumerate(durations)
    ]


def test_a_planted_slow_step_is_an_outlier_and_warm_up_is_not():
    durations = [3.0] + [0.10, 0.11, 0.09, 0.10, 0.12, 0.10] * 5
    durations[17] = 0.9
    report = step_timing.summarise(steps(durations))
    assert [o["global_step"] for o in report["outliers"]] == [18]  # step 0's warm-up is not counted
    assert report["share"]["forward_backward_seconds"] == pytest.approx(0.7)


def test_steady_steps_raise_no_outlier():
    report = step_timing.summarise(steps([0.100, 0.101, 0.099, 0.100] * 10))
    assert report["outliers"] == []
    assert step_timing.summarise([]) == {"steps": 0}
