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


class ColdStart:
    """A fresh execution environment for a Lambda code folder, as a new deployment gets on Lambda: ``load()``
    imports its modules anew (module-level clients, caches and Logger built from the current environment);
    ``close()`` puts back whatever this process had imported from the folder before. The local twin runs the
    router in one of these, so it never edits the Lambda module's globals and leaves no warm state behind."""

    def __init__(self, code_dir: str | Path, handler: str) -> None:
        folder = Path(code_dir)
        self.folder = (folder if folder.is_absolute() else REPO_ROOT / folder).resolve()
        self.handler = handler
        self._saved: dict[str, ModuleType] | None = None

    def _inside(self, module: ModuleType | None) -> bool:
        file = getattr(module, "__file__", None)
        return bool(file) and Path(file).resolve().is_relative_to(self.folder)

    def _take_out(self) -> dict[str, ModuleType]:
        taken = {name: module for name, module in sys.modules.items() if self._inside(module)}
        for name in taken:
            del sys.modules[name]
        return taken

    def load(self) -> Any:
        """The handler (``module.function``), from modules imported afresh."""
        if self._saved is None:
            self._saved = self._take_out()
        return lambda_handler(self.folder, self.handler)

    def close(self) -> None:
        if self._saved is not None:
            self._take_out()
            sys.modules.update(self._saved)
            self._saved = None


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
