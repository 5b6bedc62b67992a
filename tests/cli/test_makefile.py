"""What the Makefile gives every recipe: the SAM CLI's telemetry off, under the variable the SAM CLI reads.

.venv/bin/python -m pytest tests/cli/test_makefile.py
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from breedfilter.units import REPO_ROOT


def recipe_environment(name: str) -> str:
    """The value a recipe of the project's Makefile sees for ``name`` (make's own evaluation, no target run)."""
    probe = f'print-{name}: ; @printf "%s" "$${{{name}}}"'
    environ = {k: v for k, v in os.environ.items() if "TELEMETRY" not in k}  # the Makefile alone decides
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO_ROOT), "--eval", probe, f"print-{name}"],
        capture_output=True, text=True, check=True, env=environ,
    )  # fmt: skip
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_sam_cli_telemetry_is_off_for_every_recipe() -> None:
    assert recipe_environment("SAM_CLI_TELEMETRY") == "0"
