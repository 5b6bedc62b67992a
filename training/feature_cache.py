"""Cached backbone features for frozen-backbone epochs.

While the backbone is frozen (the finetune recipe's first epoch, every epoch of ``--recipe naive``), each
epoch recomputes the same backbone forward pass for the same images. Here it is computed once — the inputs
of the classification head for every train and valid image — and the frozen epochs train and validate the
head on those tensors (train.py, trainer.py). The cache is a file per key in ``--feature-cache-dir``, so a
second run, or another tuning trial, on the same data and weights reads it instead of computing it.

What the cached features are, honestly:
- features of **un-augmented** images (the eval transform: resize, centre crop), computed with the network
  in eval mode — so frozen epochs see no augmentation, and no dropout or stochastic depth *inside* the
  backbone; dropout between the backbone and the head's Linear (EfficientNet's classifier) is skipped too.
  With ``--feature-cache off`` frozen epochs see augmented images, as before (bench/feature_cache.py
  measures both: epoch time and accuracy);
- keyed by everything that changes them: the architecture, every backbone weight (the head is excluded:
  it is what trains), the preprocessing, the precision (autocast dtype) and memory format, torch's version,
  and the data — each image file's bytes and its class index, in order. A change to any of them is a new key;
  an old file is never read for new inputs.
- not used under DistributedDataParallel (each process would need all features; the run says so).

    python bench/feature_cache.py --data ../shared/data/dogs-imagewoof10   # epoch time and accuracy, on and off
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import architectures

log = logging.getLogger("train")
FORMAT = "breedfilter-features-1"


@dataclass
class Features:
    """One split's head inputs [N, D] (float32, CPU) and class indices [N]."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.numel())


@dataclass
class FrozenFeatures:
    """What frozen-backbone epochs train and validate on, and where it came from."""

    train: Features
    valid: Features
    key: str
    path: Path
    computed_seconds: float  # 0.0 when read from the cache
    read_seconds: float


def cache_key(
    model: nn.Module,
    architecture: str,
    preprocessing: dict[str, Any],
    splits: dict[str, list[tuple[Path, int]]],
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
) -> str:
    """A sha256 over everything the features depend on (see the module's docstring)."""
    digest = hashlib.sha256()

    def text(value: Any) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
        digest.update(b"\0")

    text([FORMAT, architecture, preprocessing, str(autocast_dtype), channels_last, torch.__version__])
    head = {id(p) for p in architectures.head_module(model).parameters()}
    head_names = {name for name, p in model.named_parameters() if id(p) in head}
    for name, tensor in model.state_dict().items():
        if name in head_names:
            continue
        text([name, list(tensor.shape), str(tensor.dtype)])
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes() if tensor.numel() else b"")
    for split in sorted(splits):
        text(split)
        for path, target in splits[split]:
            text(target)
            digest.update(file_digest(Path(path)))
    return digest.hexdigest()


def file_digest(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def compute(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
) -> Features:
    """The head's inputs for every image the loader yields, in its order (the model in eval mode)."""
    head = architectures.head_module(model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _module, args: captured.append(args[0].detach().float().cpu()))
    targets: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    )
    try:
        with torch.inference_mode():
            for images, batch_targets in loader:
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast:
                    model(images)
                targets.append(batch_targets.cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if len(captured) != len(targets):
        raise RuntimeError(f"the head ran {len(captured)} times for {len(targets)} batches: cannot cache its inputs")
    return Features(torch.cat(captured).flatten(1).clone(), torch.cat(targets).long())


def load_or_compute(
    directory: Path, key: str, make: dict[str, Any], describe: dict[str, Any] | None = None
) -> FrozenFeatures:
    """Read ``directory/KEY.pt``, or compute each split with ``make[split]()`` and write it (atomically)."""
    path = Path(directory) / f"{key[:40]}.pt"
    started = time.perf_counter()
    stored = _read(path, key)
    if stored is not None:
        read = time.perf_counter() - started
        log.info(
            "feature cache: read %s (%d train, %d valid) in %.1f s",
            path,
            len(stored["train"]),
            len(stored["valid"]),
            read,
        )
        return FrozenFeatures(stored["train"], stored["valid"], key, path, 0.0, read)
    splits = {name: build() for name, build in make.items()}
    computed = time.perf_counter() - started
    _write(path, key, splits, describe or {})
    log.info(
        "feature cache: computed %d train and %d valid features in %.1f s, wrote %s",
        len(splits["train"]),
        len(splits["valid"]),
        computed,
        path,
    )
    return FrozenFeatures(splits["train"], splits["valid"], key, path, computed, 0.0)


def _read(path: Path, key: str) -> dict[str, Features] | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: computed again and replaced
        log.warning("feature cache: ignoring unreadable %s (%s)", path, exc)
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        log.warning("feature cache: %s is not this run's features; computing them again", path)
        return None
    return {name: Features(split["inputs"], split["targets"]) for name, split in data["splits"].items()}


def _write(path: Path, key: str, splits: dict[str, Features], describe: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "key": key,
            "splits": {name: {"inputs": f.inputs, "targets": f.targets} for name, f in splits.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        Path(tmp).replace(path)
        about = {**describe, "key": key, "splits": {n: list(f.inputs.shape) for n, f in splits.items()}}
        path.with_suffix(".json").write_text(json.dumps(about, indent=1, default=str) + "\n", encoding="utf-8")
    except OSError as exc:  # a full or read-only disk: this run still has its features in memory
        log.warning("feature cache: could not write %s (%s); this run uses them without caching", path, exc)


class FeatureLoader:
    """Batches of (head inputs, targets) with the train loader's sampler, so shuffling follows (seed, epoch)."""

    def __init__(self, features: Features, batch_size: int, sampler: Any) -> None:
        self.features, self.batch_size, self.sampler = features, batch_size, sampler
        self.generator = None  # trainer.py reseeds a loader's generator when it has one

    def __iter__(self):
        order = list(iter(self.sampler)) if self.sampler is not None else list(range(len(self.features)))
        for start in range(0, len(order), self.batch_size):
            index = torch.tensor(order[start : start + self.batch_size], dtype=torch.long)
            yield self.features.inputs[index], self.features.targets[index]

    def __len__(self) -> int:
        count = len(self.sampler) if self.sampler is not None else len(self.features)
        return (count + self.batch_size - 1) // self.batch_size
