"""training/ works as SageMaker uses it: a copy of the folder alone (with its observability/ and report/ wings)
runs train.py as the entry script, and the artifact's code/ holds the serving trio and nothing of the wings."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

from tests.image_datasets import make_dataset
from tests.support import ROOT, quick_args

# the serving trio and its modules, and the timm it was trained with (a timm architecture): nothing to pip-install
SERVING_CODE = {
    "inference.py",
    "imaging.py",
    "architectures.py",
    "open_set.py",
    "s3_pointer.py",
    "timm",
    f"timm-{importlib.metadata.version('timm')}.dist-info",
}


def test_a_copy_of_the_source_dir_trains_reports_and_packs_only_the_serving_code(tmp_path):
    code = tmp_path / "opt" / "ml" / "code"  # where SageMaker unpacks source_dir before running the entry script
    shutil.copytree(ROOT / "training", code, ignore=shutil.ignore_patterns("__pycache__"))
    data = make_dataset(tmp_path / "data", {"train": 8, "valid": 4, "test": 4}, size=32)
    args = quick_args(data, tmp_path / "run", "--epochs", "1", "--debugger-interval", "1")
    args[args.index("--report") + 1] = "on"  # the report wing draws report.html
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # nothing but the copy
    result = subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=code,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "run" / "output"
    assert (output / "report.html").is_file()
    assert json.loads((output / "debugger.json").read_text())["rules"]  # observability/ ran its rules
    assert json.loads((output / "profiler.json").read_text())["rules"]
    packed = {path.name for path in (tmp_path / "run" / "model" / "code").iterdir()}  # SageMaker tars model/
    assert packed == SERVING_CODE
