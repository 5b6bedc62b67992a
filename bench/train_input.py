"""Training input pipeline on its own: images/s per loader worker count, ours against a naive ImageFolder + PIL
loader, paired (which goes first alternates by round), on real photos.

- ours: train.py's loader — training/imagefolder.py's dataset (JPEG draft decoding at the smallest scale that
  still covers RandomResizedCrop's 8% area) with imaging.train_transform (``--augment standard``), the
  network's own preprocessing (ResNet50: resize 232, crop 224);
- naive: what most published solutions train with — ``torchvision.datasets.ImageFolder`` with
  ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, full-size PIL decoding.

Both yield float32 [B, 3, 224, 224] batches of 32 in a shuffled order; nothing else runs. The first batch of
each window (worker start-up) is left out. Every window records how many cores other processes kept busy; a
window above ``--max-other-load`` cores is printed but left out of the medians. It also prints how many loader
cores a GPU would need at the measured per-core rate to feed ResNet50 training at NVIDIA's published ~2,470
images/s (one A100, mixed precision). Results go to bench/results/train_input.json.

    .venv/bin/python bench/train_input.py                                  # ../shared/data/dogs-imagewoof10/train
    .venv/bin/python bench/train_input.py --workers 0 1 2 --images 384 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import architectures  # noqa: E402
import imagefolder  # noqa: E402
import imaging  # noqa: E402

A100_RESNET50_IMAGES_PER_S = 2470  # NVIDIA's ResNet50 v1.5 reference, AMP, one A100 (DALI input)


def ours(root: Path) -> torch.utils.data.Dataset:
    pre = architectures.default_preprocessing("resnet50")
    split = imagefolder.index_dataset({"train": root}, required=("train",), verify_images=False).splits["train"]
    draft = max(pre.resize, int(pre.crop / 0.08**0.5) + 1)  # as train.py decodes for RandomResizedCrop
    return imagefolder.ImageFolderDataset(split, imaging.train_transform(pre, augment="standard"), (draft, draft))


def naive(root: Path) -> torch.utils.data.Dataset:
    from torchvision import datasets, transforms

    return datasets.ImageFolder(
        str(root),
        transforms.Compose(
            [
                transforms.RandomResizedCrop(224),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        ),
    )


def cpu_seconds_of_others(started: tuple[float, float], pids: list[int]) -> float:
    """Busy CPU seconds of every process but this one and its loader workers (``pids``) since ``started``."""
    busy_now, own_now = _busy(), _own(pids)
    return max(0.0, (busy_now - started[0]) - (own_now - started[1]))


def _busy() -> float:
    with Path("/proc/stat").open() as stat:
        fields = [float(v) for v in stat.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own(pids: list[int]) -> float:
    times = os.times()
    return times.user + times.system + sum(_process_seconds(pid) for pid in pids)


def _process_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def window(dataset: torch.utils.data.Dataset, workers: int, images: int, batch: int, seed: int) -> dict[str, float]:
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[: images + batch].tolist()
    loader = DataLoader(
        Subset(dataset, order),
        batch_size=batch,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up and the first batch: not counted
    pids = [worker.pid for worker in getattr(iterator, "_workers", [])]
    started, others = time.perf_counter(), (_busy(), _own(pids))
    count = 0
    for _, targets in iterator:
        count += len(targets)
        if count >= images:
            break
    seconds = time.perf_counter() - started
    result = {
        "images": count,
        "seconds": seconds,
        "images_per_s": count / seconds,
        "other_cores": cpu_seconds_of_others(others, pids) / seconds,
    }
    del iterator  # workers stop
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/dogs-imagewoof10/train")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=384, help="counted per window")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-other-load", type=float, default=0.3, help="cores busy elsewhere that void a window")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train_input.json")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not a directory (an ImageFolder split: CLASS/IMAGE)")
    torch.set_num_threads(1)  # the loader's own work: each worker (or the main process) on one core
    loaders = {"ours": ours(args.data), "naive": naive(args.data)}
    windows: dict[str, dict[int, list[dict[str, float]]]] = {k: {w: [] for w in args.workers} for k in loaders}
    for round_ in range(args.rounds):
        for workers in args.workers:
            names = list(loaders) if round_ % 2 == 0 else list(reversed(loaders))
            for name in names:
                measured = window(loaders[name], workers, args.images, args.batch_size, seed=round_)
                noisy = measured["other_cores"] > args.max_other_load
                measured["noisy"] = noisy
                windows[name][workers].append(measured)
                print(
                    f"round {round_ + 1} workers {workers} {name:5s}: {measured['images_per_s']:7.1f} img/s "
                    f"(others kept {measured['other_cores']:.2f} cores busy{', left out' if noisy else ''})",
                    flush=True,
                )
    rows = []
    for workers in args.workers:
        row: dict[str, float | int | None] = {"workers": workers}
        for name in loaders:
            kept = [w["images_per_s"] for w in windows[name][workers] if not w["noisy"]]
            row[name] = statistics.median(kept) if kept else None
        row["ratio"] = row["ours"] / row["naive"] if row["ours"] and row["naive"] else None
        rows.append(row)
    print(f"\n{'workers':>7} {'naive img/s':>12} {'ours img/s':>11} {'ours/naive':>10}")
    for row in rows:
        cells = [f"{row[k]:.1f}" if row[k] else "-" for k in ("naive", "ours")]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
        print(f"{row['workers']:>7} {cells[0]:>12} {cells[1]:>11} {ratio:>10}")
    single = next((r for r in rows if r["workers"] == 0), None)
    if single and single["ours"]:
        need = A100_RESNET50_IMAGES_PER_S / single["ours"]
        print(
            f"\none core decodes and augments {single['ours']:.0f} img/s (ours; naive {single['naive'] or 0:.0f}): "
            f"feeding ResNet50 at {A100_RESNET50_IMAGES_PER_S} img/s (one A100, AMP) takes ~{need:.0f} such cores; "
            "an ml.g5.2xlarge has 8 vCPUs, an ml.p4d.24xlarge 96 for 8 GPUs"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": "train_input",
        "data": str(args.data),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "images_per_window": args.images,
        "rows": rows,
        "windows": windows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
