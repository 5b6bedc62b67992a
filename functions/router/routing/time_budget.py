"""Fail a record fast, rather than let Lambda time out the whole batch, when a hung endpoint could not finish
it in time. The first record of a batch always runs, so a tight configuration still progresses.

    used by app.py; not run on its own
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from routing.settings import Settings


class OutOfTime(RuntimeError):
    """Too little of the invocation is left to route another image safely: the record returns to the queue."""


@dataclass
class TimeBudget:
    """Admits the records of one invocation while its worst case still fits in the time left."""

    settings: Settings
    context: Any  # LambdaContext
    admitted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def admit(self) -> None:
        with self._lock:  # records are admitted from several threads
            self.admitted += 1
            first = self.admitted == 1
        if first:
            return
        left = self.context.get_remaining_time_in_millis() / 1000.0
        needed = self.settings.worst_case_seconds_per_image()
        if left < needed:
            raise OutOfTime(f"{left:.1f}s left in this invocation, {needed:.1f}s needed in the worst case")
