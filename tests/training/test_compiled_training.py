"""--compile on: train.py trains through torch.compile (Inductor, here on the CPU) and saves the eager model's
weights under their own names, so the artifact loads and predicts what the run measured.

    .venv/bin/python -m pytest tests/training/test_compiled_training.py
"""

from __future__ import annotations

from pathlib import Path

import torch

import inference
import train
from tests.image_datasets import make_dataset
from tests.support import quick_args


def test_a_compiled_run_learns_and_writes_a_loadable_artifact(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"train": 16, "valid": 8, "test": 8}, size=40)
    summary = train.main(quick_args(data, tmp_path / "out", "--epochs", "3", "--compile", "on"))
    history = summary["history"]
    assert summary["compiled"] is True
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    weights = torch.load(tmp_path / "out" / "model" / "model.pth", map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in key for key in weights)  # the eager module's names, not the compiled wrapper's
    model = inference.model_fn(str(tmp_path / "out" / "model"))
    assert list(model.labels) == summary["labels"]
