"""What the debugger and profiler cost: train.py's step time with both on (the default) against both off.

Each run is train.py in its own process on the same data, weights and seed; runs alternate off, on, off, on …
so that a machine getting slower or faster over time hits both alike. A step's time is measured the same way in
both (data wait + forward/backward + optimizer, plus every callback, from the trainer's own clock), and the
debugger's sampled steps, the torch.profiler window and the system sampler all fall inside it. It prints each
run, then mean and median step time per setting and the on/off ratios; the report's drawing time (once per run,
after training) is printed apart.

    .venv/bin/python bench/debugger_profiler_overhead.py                   # dogs-stanford3, Lite0, 2 epochs x 2 runs
    .venv/bin/python bench/debugger_profiler_overhead.py --repeats 3 --epochs 1 --data DIR --model timm/NAME --weights W
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SETTINGS = {
    "off": ["--debugger", "off", "--profiler", "off", "--report", "off"],
    "on": [],  # the defaults: debugger every 20 steps, profiler with its torch.profiler window, report.html
}


def child(argv: list[str], result: Path) -> None:
    """In the run's own process: train with a clock on every step (each callback's time included)."""
    sys.path.insert(0, str(ROOT / "training"))
    import train

    class Clock:
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.last = 0.0

        def on_step_end(self, trainer, step) -> None:  # called first: from the end of one to the next
            now = time.perf_counter()
            if self.last:
                self.steps.append(now - self.last)
            self.last = now

        def on_epoch_end(self, trainer, row) -> bool:
            self.last = 0.0  # validation is not a step
            return False

    clock = Clock()
    started = time.perf_counter()
    train.main(argv, callbacks=[clock])
    result.write_text(json.dumps({"steps": clock.steps, "wall": time.perf_counter() - started}))


def run(setting: str, args: argparse.Namespace, out: Path) -> dict:
    result = out / "result.json"
    flags = [
        "--data",
        str(args.data),
        "--model",
        args.model,
        "--weights",
        str(args.weights),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--num-workers",
        str(args.num_workers),
        "--early-stopping-patience",
        "0",
        "--model-dir",
        str(out / "model"),
        "--output-data-dir",
        str(out / "output"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
        "--resume",
        "false",
        *SETTINGS[setting],
    ]
    command = [sys.executable, __file__, "--child", str(result), "--", *flags]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        sys.exit(f"{setting} run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "dogs-stanford3")
    parser.add_argument("--model", default="timm/tf_efficientnet_lite0")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "tf_efficientnet_lite0_in1k.pth")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "debugger_profiler_overhead")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child([a for a in rest if a != "--"], args.child)
        return
    steps: dict[str, list[float]] = {"off": [], "on": []}
    walls: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(args.repeats):
        for setting in ("off", "on"):
            measured = run(setting, args, args.out / f"{setting}-{repeat}")
            steps[setting] += measured["steps"]
            walls[setting].append(measured["wall"])
            print(
                f"run {repeat + 1} {setting:>3}: {len(measured['steps'])} steps, mean step "
                f"{statistics.mean(measured['steps']):.3f} s, median {statistics.median(measured['steps']):.3f} s, "
                f"whole run {measured['wall']:.1f} s",
                flush=True,
            )
    on, off = steps["on"], steps["off"]
    setup = f"{args.epochs} epochs x {args.repeats} runs per setting, batch {args.batch_size}"
    print(f"\n{args.model} on {args.data.name}, {setup}")
    print(f"{'':>22}{'off':>10}{'on':>10}{'on/off':>10}")
    for name, function in (("mean step (s)", statistics.mean), ("median step (s)", statistics.median)):
        print(f"{name:>22}{function(off):>10.3f}{function(on):>10.3f}{function(on) / function(off):>10.3f}")
    mean_wall_off, mean_wall_on = statistics.mean(walls["off"]), statistics.mean(walls["on"])
    print(f"{'whole run (s)':>22}{mean_wall_off:>10.1f}{mean_wall_on:>10.1f}{mean_wall_on / mean_wall_off:>10.3f}")
    on_json = json.loads((args.out / "on-0" / "output" / "debugger.json").read_text())
    profiler_json = json.loads((args.out / "on-0" / "output" / "profiler.json").read_text())
    print(
        f"self-reported in run 1: debugger {on_json['seconds']:.2f} s, profiler {profiler_json['seconds']:.2f} s "
        f"(sampler and torch.profiler export included); report: {args.out / 'on-0' / 'output' / 'report.html'}"
    )


if __name__ == "__main__":
    main()
