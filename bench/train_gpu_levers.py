"""Training throughput per lever, one at a time on top of the last (a ladder), measured by train.py itself.

Each rung is one ``training/train.py`` run in its own process (fresh CUDA context and compile cache), ResNet50 by
default with random weights (speed only), the backbone trainable from the first step, one epoch of ``--steps``
steps, the profiler on and the debugger off. Rungs, each adding one lever to the one before:

    baseline      0 loader workers, fp32, NCHW, eager, Pillow decoding in the loader
    workers       --num-workers = the machine's cores (max 16); pinned memory comes with them on a GPU
    bf16          --amp on (bfloat16 autocast where the GPU has it, else fp16 with a loss scaler)
    channels_last --channels-last on
    compile       --compile on (torch.compile'd training steps)
    decode        --decode device (JPEG batches decoded by nvJPEG and augmented on the GPU)

Per rung it prints images/s (the batch over the median steady step: warm-up and the first step of the epoch,
where compiling happens, are left out), the ratio to the baseline, mean and p95 GPU utilisation over the
steady steps (NVML samples every 0.25 s), the share of step time spent waiting for data, and the profiler's
verdicts that fired (LowGPUUtilization, Dataloader, CPUBottleneck, ...). Results go to
bench/results/train_gpu_levers.json.

The working tree travels to the device machine without ../shared, so ``--generate N`` writes N photo-like
500x375 JPEGs in 10 classes to a temporary dataset (the default when ``--data`` is absent); ``--data DIR``
takes a real ImageFolder root (train/ valid/ test/).

    .venv/bin/python bench/train_gpu_levers.py                               # on a GPU machine
    .venv/bin/python bench/train_gpu_levers.py --data ../shared/data/dogs-imagewoof10 --steps 40
    .venv/bin/python bench/train_gpu_levers.py --model timm/test_efficientnet --image-size 32 \\
        --generate 96 --steps 8 --batch-size 8                               # a CPU smoke run of the ladder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "train_gpu_levers.json"
CLASSES = 10


def ladder(workers: int) -> list[tuple[str, dict[str, str]]]:
    return [
        (
            "baseline",
            {"--num-workers": "0", "--amp": "off", "--channels-last": "off", "--compile": "off", "--decode": "cpu"},
        ),
        ("workers", {"--num-workers": str(workers)}),
        ("bf16", {"--amp": "on"}),
        ("channels_last", {"--channels-last": "on"}),
        ("compile", {"--compile": "on"}),
        ("decode", {"--decode": "device"}),
    ]


def generate(root: Path, train_images: int, seed: int = 0) -> Path:
    """Photo-like JPEGs (smooth colour fields with noise and a shape per class), 500x375, quality 90."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    counts = {"train": train_images, "valid": max(CLASSES, train_images // 8), "test": max(CLASSES, train_images // 8)}
    for split, count in counts.items():
        for i in range(count):
            label = i % CLASSES
            folder = root / split / f"{label:03d}.class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            phase = rng.uniform(0, 6.28, 3)
            base = 127 + 100 * np.sin(x[..., None] / (20 + 8 * label) + y[..., None] / 37 + phase)
            pixels = np.clip(base + rng.normal(0, 12, (375, 500, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def run_rung(name: str, flags: dict[str, str], args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        "--data", str(data),
        "--model", args.model,
        "--weights", "none",
        "--epochs", "1",
        "--unfreeze-epoch", "0",
        "--max-steps-per-epoch", str(args.steps),
        "--batch-size", str(args.batch_size),
        "--verify-images", "false",
        "--early-stopping-patience", "0",
        "--debugger", "off",
        "--profiler", "on",
        "--profiler-interval", "0.25",
        "--report", "off",
        "--mlflow", "off",
        "--feature-cache", "off",
        "--model-dir", str(out / "model"),
        "--output-data-dir", str(out / "output"),
        "--checkpoint-dir", str(out / "checkpoints"),
        *(["--image-size", str(args.image_size)] if args.image_size else []),
    ]  # fmt: skip
    for flag, value in flags.items():
        command += [flag, value]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        return {"rung": name, "flags": flags, "failed": True, "wall_seconds": round(wall, 1), "tail": tail}
    profile = json.loads((out / "output" / "profiler.json").read_text())
    metrics = json.loads((out / "output" / "metrics.json").read_text())
    steps = profile["steps"]["summary"]
    utilisation = steady_utilisation(profile)
    fired = [rule["rule"] for rule in profile.get("rules", []) if rule["status"] == "fired"]
    return {
        "rung": name,
        "flags": flags,
        "images_per_second": args.batch_size / steps["median_step_seconds"],
        "median_step_seconds": steps["median_step_seconds"],
        "data_wait_share": steady_data_share(profile),
        "gpu_utilisation_mean": statistics.fmean(utilisation) if utilisation else None,
        "gpu_utilisation_p95": sorted(utilisation)[int(0.95 * (len(utilisation) - 1))] if utilisation else None,
        "fired": fired,
        "verdicts": {rule["rule"]: rule["evidence"] for rule in profile.get("rules", [])},
        "decode": metrics.get("decode"),
        "device": metrics.get("environment", {}).get("device"),
        "wall_seconds": round(wall, 1),
    }


def steady_data_share(profile: dict[str, Any], warm_steps: int = 3) -> float | None:
    """Waiting for data over step time, over the steps after the first ``warm_steps`` (compiling, warm-up)."""
    steady = profile["steps"]["series"][warm_steps:]
    whole = sum(step["step_seconds"] for step in steady)
    return sum(step["data_seconds"] for step in steady) / whole if whole else None


def steady_utilisation(profile: dict[str, Any], warm_steps: int = 3) -> list[float]:
    """GPU utilisation samples taken while the steady steps ran: the step series has no clock, so each step's end
    is placed by summing step times from the sampler's start (the loop's gaps between steps are small)."""
    series = profile["steps"]["series"]
    samples = profile["system"]["samples"]
    values = [(s["t"], gpu["utilization_percent"]) for s in samples for gpu in s.get("gpu", [])]
    if not series or not values:
        return [v for _, v in values]
    ends, clock = [], 0.0
    for step in series:
        clock += step["step_seconds"]
        ends.append(clock)
    start = ends[min(warm_steps, len(ends)) - 1]
    steady = [v for t, v in values if start <= t <= ends[-1]]
    return steady or [v for _, v in values]


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r["images_per_second"] for r in rows if not r.get("failed")), None)
    lines = [
        f"{'rung':<14} {'img/s':>8} {'x base':>7} {'GPU mean':>9} {'GPU p95':>8} {'data wait':>10}  fired",
    ]
    for r in rows:
        if r.get("failed"):
            lines.append(f"{r['rung']:<14} FAILED after {r['wall_seconds']} s:\n{r['tail']}")
            continue
        mean = "-" if r["gpu_utilisation_mean"] is None else f"{r['gpu_utilisation_mean']:.0f}%"
        p95 = "-" if r["gpu_utilisation_p95"] is None else f"{r['gpu_utilisation_p95']:.0f}%"
        wait = "-" if r["data_wait_share"] is None else f"{100 * r['data_wait_share']:.0f}%"
        lines.append(
            f"{r['rung']:<14} {r['images_per_second']:>8.1f} {r['images_per_second'] / base:>6.2f}x "
            f"{mean:>9} {p95:>8} {wait:>10}  {', '.join(r['fired']) or '-'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="an ImageFolder root (train/ valid/ test/); default: generated")
    parser.add_argument("--generate", type=int, default=2048, help="train images to generate without --data")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=0, help="crop size (0: the model's own, 224)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="training steps per rung")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--rungs", nargs="*", help="only these rungs (each still on top of the ones before it)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gpu-levers-") as scratch:
        data = args.data or generate(Path(scratch) / "data", args.generate)
        rows: list[dict[str, Any]] = []
        flags: dict[str, str] = {}
        for name, lever in ladder(args.workers):
            flags = {**flags, **lever}
            if args.rungs and name not in args.rungs and name != "baseline":
                continue
            row = run_rung(name, dict(flags), args, data, Path(scratch) / name)
            rows.append(row)
            print(table(rows).splitlines()[-1] if len(rows) > 1 else table(rows), flush=True)
    print()
    print(table(rows))
    result = {
        "bench": "train_gpu_levers",
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "data": str(args.data) if args.data else f"generated: {args.generate} train JPEGs, 500x375",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS}")
    return 1 if any(r.get("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
