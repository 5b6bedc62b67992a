"""Our fine-tuning recipe against the naive one most published solutions use, side by side, on real photos.

Both runs train the same pretrained network on the same data for the same number of epochs, each with
train.py in its own process; only ``--recipe`` differs (naive: frozen backbone, one fixed learning rate, no
schedule). It prints test accuracy, best validation accuracy and wall time of each, and the ratios.

    .venv/bin/python bench/finetune_vs_naive.py                       # dogs-stanford3, Lite0, 5 epochs
    .venv/bin/python bench/finetune_vs_naive.py --epochs 3 --data DIR --model timm/NAME --weights PATH
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run(recipe: str, args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        "--data",
        str(args.data),
        "--model",
        args.model,
        "--weights",
        str(args.weights),
        "--recipe",
        recipe,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--num-workers",
        str(args.num_workers),
        "--early-stopping-patience",
        "0",
        "--resume",
        "false",
        "--seed",
        str(args.seed),
        "--model-dir",
        str(out / recipe / "model"),
        "--output-data-dir",
        str(out / recipe / "output"),
        "--checkpoint-dir",
        str(out / recipe / "checkpoints"),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - started
    metrics = json.loads((out / recipe / "output" / "metrics.json").read_text())
    return {
        "recipe": recipe,
        "test_accuracy": metrics["test"]["accuracy"],
        "best_valid_accuracy": metrics["best_valid_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "wall_seconds": wall,
        "history": metrics["history"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "dogs-stanford3")
    parser.add_argument("--model", default="timm/tf_efficientnet_lite0")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "tf_efficientnet_lite0_in1k.pth")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "finetune_vs_naive")
    args = parser.parse_args()

    results = [run("naive", args, args.out), run("finetune", args, args.out)]
    naive, ours = results
    print(
        f"\n{args.model} on {args.data.name}, {args.epochs} epochs, batch {args.batch_size}, CPU threads "
        f"{os.cpu_count()}"
    )
    print(f"{'recipe':<10} {'test acc':>9} {'best valid':>11} {'best epoch':>11} {'wall s':>8}")
    for r in results:
        print(
            f"{r['recipe']:<10} {r['test_accuracy']:>9.3f} {r['best_valid_accuracy']:>11.3f} "
            f"{r['best_epoch']:>11} {r['wall_seconds']:>8.1f}"
        )
    print(
        f"finetune / naive: test error {(1 - ours['test_accuracy']) / max(1e-9, 1 - naive['test_accuracy']):.2f}×, "
        f"wall time {ours['wall_seconds'] / naive['wall_seconds']:.2f}×"
    )
    for r in results:
        curve = " ".join(f"{row['valid_accuracy']:.3f}" for row in r["history"])
        print(f"{r['recipe']} valid accuracy per epoch: {curve}")
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
