"""Records of one batch that name the same object are routed one after the other, not at once.

S3 may notify twice, and a redelivery can share a batch with its original: routed concurrently, the second would
find the first's decision in progress (IdempotencyAlreadyInProgressError) and go back to the queue, spending a
receive. Routed after it, the second finds the results item and only confirms the delete (a ``duplicate``).

    used by app.py; not run on its own
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SourceLocks:
    """One lock per source id, for one invocation."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def holding(self, source_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(source_id, threading.Lock())
        with lock:
            yield
