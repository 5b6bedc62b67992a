"""Child processes run in their own session: stop the whole group (loader workers too), and say how one ended.

from breedfilter.processes import stop_group, exit_text
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_group(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process's group (started with ``start_new_session=True``), SIGKILL it after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def exit_text(code: int) -> str:
    """``exited with 1``, or ``was killed by SIGKILL (out of memory? …)`` for a negative return code."""
    if code >= 0:
        return f"exited with {code}"
    name = signal.Signals(-code).name
    hint = " (out of memory? the kernel's OOM killer sends it; try a smaller batch size)" if name == "SIGKILL" else ""
    return f"was killed by {name}{hint}"
