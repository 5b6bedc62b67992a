"""Cached backbone features for frozen-backbone epochs: the key follows everything the features depend on, and
a run on cached features trains the head exactly as a run that recomputes the backbone each epoch.

Real train.py runs on generated images with timm's tiny test network (no augmentation, so both kinds of run
see the same pixels).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import architectures
import feature_cache
import imagefolder
import train
from tests.image_datasets import make_dataset
from tests.support import quick_args

MODEL = "timm/test_efficientnet"
PRE = {"resize": 36, "crop": 32, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 12, "valid": 6}, size=40)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.build_model(MODEL, 3, "none")


def _splits(root: Path) -> dict[str, list[tuple[Path, int]]]:
    index = imagefolder.index_dataset(imagefolder.split_dirs_from_root(root), required=("train", "valid"))
    return {name: index.splits[name].samples for name in ("train", "valid")}


def _key(model: torch.nn.Module, splits: dict, pre: dict = PRE, dtype: torch.dtype | None = None) -> str:
    return feature_cache.cache_key(model, MODEL, pre, splits, dtype, False)


def test_the_key_changes_with_weights_preprocessing_precision_and_data_but_not_the_head(dataset, tmp_path) -> None:
    splits = _splits(dataset)
    model = _model()
    key = _key(model, splits)
    assert _key(_model(), splits) == key  # the same inputs: the same key
    head = architectures.head_module(model)
    with torch.no_grad():
        head.weight.add_(1.0)  # the head is what trains: its weights are not part of the features
    assert _key(model, splits) == key
    with torch.no_grad():
        next(p for p in model.parameters() if p is not head.weight and p is not head.bias).add_(1e-3)
    assert _key(model, splits) != key  # any backbone weight
    assert _key(_model(), splits, {**PRE, "crop": 28}) != key  # preprocessing
    assert _key(_model(), splits, dtype=torch.bfloat16) != key  # precision
    relabelled = {**splits, "train": [(path, (target + 1) % 3) for path, target in splits["train"]]}
    assert _key(_model(), relabelled) != key  # a class index
    # One image's bytes, same name and size class: a new key.
    copy = tmp_path / "data"
    make_dataset(copy, {"train": 12, "valid": 6}, size=40)
    assert _key(_model(), _splits(copy)) == key  # generated again, byte for byte: the same
    victim = next((copy / "train").rglob("*.jpg"))
    with Image.open(victim) as image:
        image.rotate(90).save(victim)
    assert _key(_model(), _splits(copy)) != key


def _frozen_run(dataset: Path, out: Path, *extra: str) -> dict:
    return train.main(
        quick_args(
            dataset,
            out,
            "--epochs",
            "3",
            "--unfreeze-epoch",
            "2",  # epochs 1 and 2 frozen, 3 fine-tunes
            "--augment",
            "none",
            "--debugger",
            "off",
            "--profiler",
            "off",
            "--mlflow",
            "off",
            "--feature-cache-dir",
            str(out.parent / "features"),
            *extra,
        )
    )


def test_cached_frozen_epochs_train_the_head_as_recomputed_ones_do(dataset, tmp_path) -> None:
    plain = _frozen_run(dataset, tmp_path / "plain", "--feature-cache", "off")
    cached = _frozen_run(dataset, tmp_path / "cached")
    assert plain["feature_cache"] is None and cached["feature_cache"]["computed_seconds"] > 0
    assert [row["cached_features"] for row in cached["history"]] == [True, True, False]
    for a, b in zip(plain["history"], cached["history"], strict=True):
        for metric in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
            assert b[metric] == pytest.approx(a[metric], rel=1e-4, abs=1e-5), (a["epoch"], metric)
    # A second run (a tuning trial, say) on the same data and weights reads the features instead.
    again = _frozen_run(dataset, tmp_path / "again", "--lr", "0.02")
    assert again["feature_cache"]["computed_seconds"] == 0.0
    assert again["feature_cache"]["path"] == cached["feature_cache"]["path"]
    # Another crop size is another key: computed, in a file of its own.
    other = _frozen_run(dataset, tmp_path / "other", "--image-size", "28")
    assert other["feature_cache"]["computed_seconds"] > 0
    assert other["feature_cache"]["path"] != cached["feature_cache"]["path"]


def test_no_frozen_epoch_no_features(dataset, tmp_path) -> None:
    summary = _frozen_run(dataset, tmp_path / "run", "--unfreeze-epoch", "0")
    assert summary["feature_cache"] is None
    assert not (tmp_path / "features").exists()


def test_a_torn_cache_file_is_computed_again(dataset, tmp_path) -> None:
    first = _frozen_run(dataset, tmp_path / "first")
    path = Path(first["feature_cache"]["path"])
    path.write_bytes(path.read_bytes()[:100])  # a crash mid-write elsewhere, or a full disk
    second = _frozen_run(dataset, tmp_path / "second")
    assert second["feature_cache"]["computed_seconds"] > 0
    assert [r["valid_loss"] for r in second["history"]] == pytest.approx([r["valid_loss"] for r in first["history"]])
