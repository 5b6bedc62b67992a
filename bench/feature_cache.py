"""Cached backbone features for frozen-backbone epochs: epoch time and accuracy with and without the cache.

Three train.py runs of the same frozen-backbone recipe (``--recipe naive``: every epoch trains the head only)
on real photos with real pretrained weights (EfficientNet-Lite0, ../shared/weights), one after the other:

- off:  ``--feature-cache off`` — every epoch decodes, augments and runs the backbone (augmented views);
- cold: the cache empty — one pass computes the features of un-augmented train and valid images, then every
  epoch trains the head on them;
- warm: the same again (a second run, or another tuning trial on the same data and weights) — the features
  are read.

It prints each run's time in its epochs, the cache's compute/read time, the whole run's wall time and the
test accuracy, with ratios against "off". Results go to bench/results/feature_cache.json.

    .venv/bin/python bench/feature_cache.py                          # dogs-imagewoof10, 3 epochs (~10 min on 2 cores)
    .venv/bin/python bench/feature_cache.py --epochs 2 --data DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run(label: str, data: Path, out: Path, cache: Path, epochs: int, extra: list[str]) -> dict:
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        "--data",
        str(data),
        "--model",
        "timm/tf_efficientnet_lite0",
        "--weights",
        str(SHARED / "weights" / "tf_efficientnet_lite0_in1k.pth"),
        "--recipe",
        "naive",
        "--epochs",
        str(epochs),
        "--early-stopping-patience",
        "0",
        "--verify-images",
        "false",
        "--num-workers",
        "1",
        "--debugger",
        "off",
        "--profiler",
        "off",
        "--report",
        "off",
        "--mlflow",
        "off",
        "--package",
        "false",
        "--unknown-method",
        "msp",
        "--tensorboard-dir",
        "none",
        "--feature-cache-dir",
        str(cache),
        "--model-dir",
        str(out / "model"),
        "--output-data-dir",
        str(out / "output"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
        "--resume",
        "false",
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{label}: train.py failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "output" / "metrics.json").read_text())
    epochs_seconds = sum(row["epoch_seconds"] for row in summary["history"])
    cache_info = summary.get("feature_cache") or {}
    row = {
        "run": label,
        "epoch_seconds": [row["epoch_seconds"] for row in summary["history"]],
        "epochs_total_s": epochs_seconds,
        "cache_compute_s": cache_info.get("computed_seconds", 0.0),
        "cache_read_s": cache_info.get("read_seconds", 0.0),
        "training_s": epochs_seconds + cache_info.get("computed_seconds", 0.0) + cache_info.get("read_seconds", 0.0),
        "wall_s": wall,
        "best_valid_accuracy": summary["best_valid_accuracy"],
        "test_accuracy": summary["test"]["accuracy"],
    }
    print(
        f"{label:5s}: epochs {', '.join(f'{s:.1f}' for s in row['epoch_seconds'])} s; cache compute "
        f"{row['cache_compute_s']:.1f} s, read {row['cache_read_s']:.1f} s; training {row['training_s']:.1f} s; "
        f"wall {wall:.0f} s; valid {row['best_valid_accuracy']:.4f}, test {row['test_accuracy']:.4f}",
        flush=True,
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "dogs-imagewoof10")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/feature_cache.json")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="feature-cache-bench-") as tmp:
        work = Path(tmp)
        rows = [
            run("off", args.data, work / "off", work / "cache", args.epochs, ["--feature-cache", "off", *extra]),
            run("cold", args.data, work / "cold", work / "cache", args.epochs, extra),
            run("warm", args.data, work / "warm", work / "cache", args.epochs, extra),
        ]
    off = rows[0]
    print(f"\n{'run':5s} {'training s':>10} {'vs off':>7} {'per epoch s':>11} {'test acc':>9}")
    for row in rows:
        per_epoch = row["epochs_total_s"] / len(row["epoch_seconds"])
        print(
            f"{row['run']:5s} {row['training_s']:>10.1f} {off['training_s'] / row['training_s']:>6.1f}x "
            f"{per_epoch:>11.2f} {row['test_accuracy']:>9.4f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "bench": "feature_cache",
                "data": str(args.data),
                "epochs": args.epochs,
                "recipe": "naive (every epoch frozen), timm/tf_efficientnet_lite0, ImageNet weights",
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "rows": rows,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
