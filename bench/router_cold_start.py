"""How much the router adds to a Lambda cold start: importing ``app`` vs importing bare boto3 (the baseline any
Python function on AWS pays), each in a fresh interpreter, several times; medians and their ratio.

    .venv/bin/python bench/router_cold_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import sys, time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
CASES = {
    "baseline: import boto3": "import boto3",
    "router: import app (Powertools, routing/)": f"sys.path.insert(0, {str(ROOT / 'functions/router')!r}); import app",
    "router without the X-Ray SDK (measured part)": "import boto3, aws_lambda_powertools.utilities.batch, "
    "aws_lambda_powertools.utilities.idempotency, aws_lambda_powertools.logging",
}


def measure(stmt: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(stmt=stmt)], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            return float("nan")
        times.append(float(out.stdout.strip()))
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    results = {name: measure(stmt, args.runs) for name, stmt in CASES.items()}
    baseline = results["baseline: import boto3"]
    print(f"median import time over {args.runs} fresh interpreters (ms), ratio to the baseline")
    for name, ms in results.items():
        print(f"  {name:45s} {ms:8.1f} ms   x{ms / baseline:.2f}")


if __name__ == "__main__":
    main()
