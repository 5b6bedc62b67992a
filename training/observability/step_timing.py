"""Per-step timing for the profiler: where a training step's time goes, and which steps were outliers.

``StepTimer`` is a trainer callback that keeps each step's split (data wait, forward + backward, optimizer)
from ``trainer.StepInfo``. ``summary()`` gives totals and shares, percentiles, and the outliers: steps
slower than median + ``k`` × MAD (robust to the slow first steps that warm-up causes), as SageMaker's
StepOutlier rule reports them.

    used by train.py's profiler (python training/train.py --profiler true …); not run on its own
"""

from __future__ import annotations

import statistics
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

PARTS = ("data_seconds", "forward_backward_seconds", "optimizer_seconds")


@dataclass
class StepTimer:
    steps: list[dict[str, float]] = field(default_factory=list)

    def on_step_end(self, trainer: Any, step: Any) -> None:
        self.steps.append(
            {
                "epoch": step.epoch + 1,  # 1-based, as epoch rows count
                "step": step.step,
                "global_step": step.global_step,
                "batch_size": step.batch_size,
                "data_seconds": step.data_seconds,
                "forward_backward_seconds": step.forward_backward_seconds,
                "optimizer_seconds": step.optimizer_seconds,
                "step_seconds": step.data_seconds + step.compute_seconds,
            }
        )

    def summary(self, outlier_mads: float = 5.0, skip_first: int = 1, exclude: Collection[int] = ()) -> dict[str, Any]:
        return summarise(self.steps, outlier_mads, skip_first, exclude)


def summarise(
    steps: list[dict[str, float]], outlier_mads: float = 5.0, skip_first: int = 1, exclude: Collection[int] = ()
) -> dict[str, Any]:
    """Totals, shares and percentiles of the step times, and the outlier steps. Not outliers by design: each epoch's
    first ``skip_first`` steps (loader workers start) and the global steps in ``exclude`` (warm-up, a profiled
    window); they still count in the totals."""
    if not steps:
        return {"steps": 0}
    totals = {part: sum(s[part] for s in steps) for part in PARTS}
    whole = sum(totals.values()) or 1e-12
    durations = [s["step_seconds"] for s in steps]
    steady = [s for s in steps if s["step"] >= skip_first and s["global_step"] not in exclude] or steps
    median = statistics.median(s["step_seconds"] for s in steady)
    mad = statistics.median(abs(s["step_seconds"] - median) for s in steady)
    threshold = median + outlier_mads * max(mad, 0.05 * median)
    outliers = [s for s in steady if s["step_seconds"] > threshold]
    images = sum(s["batch_size"] for s in steps)
    return {
        "steps": len(steps),
        "total_seconds": whole,
        "seconds": totals,
        "share": {part: totals[part] / whole for part in PARTS},
        "median_step_seconds": median,
        "p90_step_seconds": _percentile(durations, 0.9),
        "max_step_seconds": max(durations),
        "images_per_second": images / whole,
        "outlier_threshold_seconds": threshold,
        "outliers": [
            {"global_step": s["global_step"], "epoch": s["epoch"], "step_seconds": s["step_seconds"]} for s in outliers
        ],
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
