"""Optional: SageMaker Debugger's own hook, for accounts that still use SageMaker Debugger rules.

Only when BOTH hold: smdebug is importable, and SageMaker passed a hook config (a job launched with a
DebuggerHookConfig gets /opt/ml/input/config/debughookconfig.json; ``SMDEBUG_CONFIG_FILE_PATH`` names another
file). Then smdebug's hook is created from that config and registered on the model, and each step's loss is
saved as a scalar, so SageMaker's rule containers see the tensors they expect. Otherwise it does nothing and says
why once: smdebug is never required (it is unmaintained, and breaks on NumPy 2). Our own debugger
(debugger.py) runs either way.

    used by train.py (python training/train.py --smdebug auto|off); not run on its own
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("train")

CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"
DEFAULT_CONFIG = Path("/opt/ml/input/config/debughookconfig.json")


def config_path() -> Path | None:
    path = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    return path if path.is_file() else None


class SmdebugAdapter:
    """A trainer callback around smdebug's PyTorch hook; ``create()`` returns None where it does not apply."""

    def __init__(self, hook: Any, modes: Any) -> None:
        self.hook = hook
        self.modes = modes

    @classmethod
    def create(cls, model: Any) -> SmdebugAdapter | None:
        path = config_path()
        if path is None:
            return None  # no hook config: the job was not launched with SageMaker Debugger
        try:
            import smdebug.pytorch as smd
        except Exception as exc:  # ImportError, or smdebug failing on import (NumPy 2, missing dependencies)
            log.info(
                "smdebug hook config %s found but smdebug does not import (%s): using our debugger only", path, exc
            )
            return None
        try:
            hook = smd.Hook.create_from_json_file(str(path))
            hook.register_module(model)
        except Exception as exc:  # smdebug's own failure must not end a training run
            log.warning("smdebug: could not create the hook from %s (%s): using our debugger only", path, exc)
            return None
        log.info("smdebug: SageMaker Debugger hook registered from %s", path)
        return cls(hook, smd.modes)

    def on_step_end(self, trainer: Any, step: Any) -> bool:
        self.hook.set_mode(self.modes.TRAIN)
        self.hook.save_scalar("train_loss", step.loss, sm_metric=False)
        return False

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        self.hook.set_mode(self.modes.EVAL)
        for key in ("valid_loss", "valid_accuracy"):
            if isinstance(row.get(key), float):
                self.hook.save_scalar(key, row[key], sm_metric=False)
        return False
