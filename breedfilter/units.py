"""The two deployment units, ``functions/router/`` (the Lambda) and ``training/`` (the SageMaker source dir): where
they are, and the one way the rest of breedfilter imports their code.

Each unit is imported as its platform imports it: Lambda puts the CodeUri folder on ``sys.path`` and imports
``app``; SageMaker runs ``train.py`` and imports ``inference`` from the source dir, top level. This module is the
only code in ``breedfilter/`` that touches ``sys.path`` or ``importlib`` (tests/cli/test_one_door.py keeps it so);
the units publish what the CLI needs as public names.

    python -m breedfilter.units       # prints where the units are
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUTER_DIR = REPO_ROOT / "functions" / "router"
TRAINING_DIR = REPO_ROOT / "training"


def _on_path(folder: Path) -> None:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def router_module(name: str) -> ModuleType:
    """A module of the router's code package (``app``, ``routing.endpoint``…), imported as Lambda imports it."""
    _on_path(ROUTER_DIR)
    return importlib.import_module(name)


def training_module(name: str) -> ModuleType:
    """A module of training/ (``inference``, ``artifact``, ``train``…), imported as SageMaker imports it."""
    _on_path(TRAINING_DIR)
    return importlib.import_module(name)


def lambda_handler(code_dir: str | Path, handler: str) -> Any:
    """``module.function`` from a CodeUri folder (relative to the repository), as Lambda loads a handler."""
    folder = Path(code_dir)
    _on_path(folder if folder.is_absolute() else REPO_ROOT / folder)
    module_name, _, function_name = handler.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


@cache
def train_options() -> ModuleType:
    """training/options.py (train.py's parser) loaded from its file alone, under a name of its own: the CLI reads
    train.py's flags without putting training/ on the path (options.py needs the standard library only)."""
    spec = importlib.util.spec_from_file_location("breedfilter_train_options", TRAINING_DIR / "options.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    print(f"router:   {ROUTER_DIR}\ntraining: {TRAINING_DIR}")
