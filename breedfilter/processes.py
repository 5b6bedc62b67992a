"""Child processes in their own session: start one, stop its whole group (loader workers too), say how it ended.

from breedfilter.processes import spawn_group, stop_group, exit_text
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence


def spawn_group(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start ``command`` in its own session, its output (stdout and stderr, text) on ``process.stdout``.

    Its own session: a terminal's Ctrl-C reaches only us, and we stop the child and its loader workers
    ourselves (``stop_group``), so nothing is left running headless.
    """
    return subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=dict(env),
        start_new_session=True,
    )


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
