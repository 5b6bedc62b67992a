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


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_build_gives_the_functions_makefile_a_python_with_pip() -> None:
    """``make build`` runs sam build, whose makefile builder runs functions/router/Makefile: it installs the Lambda's
    wheels with the SAM CLI venv's pip (any Python with pip; never the Lambda's own version)."""
    done = subprocess.run(
        ["make", "-n", "-C", str(REPO_ROOT), "build"], capture_output=True, text=True, check=True, env=os.environ
    )
    sam_build = [line for line in done.stdout.splitlines() if "sam build" in line]
    assert len(sam_build) == 1, done.stdout
    assert f"PYTHON={REPO_ROOT}/.venv-sam/bin/python " in sam_build[0]
