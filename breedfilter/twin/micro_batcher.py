"""Dynamic batching for the twin's endpoint server: what Ray Serve's ``@serve.batch`` does on the cloud path.

Request threads each hand one item to ``MicroBatcher``; one worker thread runs ``run(items)`` on up to
``max_batch`` of them at a time and hands each thread its own result (or the exception). A forming batch waits
at most ``max_wait_s`` for more, and only while some caller is still preparing its item (``arriving``): a lone
request is never delayed. A batch that raises is retried one item at a time, so one bad item fails alone.
One worker means one forward pass at a time, using every core torch is given, while the request threads decode
and transform the next images.

    used by breedfilter/twin/artifact_model.py; not run on its own
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Pending(Generic[T]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """``batcher.arriving()`` while preparing an item, then ``batcher(item)`` -> its result."""

    def __init__(
        self, run: Callable[[list[T]], list[R]], *, max_batch: int, max_wait_s: float, name: str = "micro-batcher"
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, not {max_batch} and {max_wait_s}")
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batch_sizes: Counter[int] = Counter()  # how many batches of each size ran (benchmarks read it)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._arriving = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around a caller's preparation of its item and its call: a forming batch may wait for it meanwhile."""
        with self._lock:
            self._arriving += 1
        self._local.arriving = True
        try:
            yield
        finally:
            if self._local.arriving:  # it never handed an item over (a refusal, another path)
                self._local.arriving = False
                with self._lock:
                    self._arriving -= 1

    def __call__(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        pending: _Pending[T] = _Pending(item)
        with self._lock:  # queued and no longer arriving, at once: the worker never waits for it in vain
            self._queue.put(pending)
            if getattr(self._local, "arriving", False):
                self._local.arriving = False
                self._arriving -= 1
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._worker.join(timeout=5)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            self._resolve(batch)
            if stop:
                return

    def _gather(self, first: _Pending[T]) -> tuple[list[_Pending[T]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            with self._lock:  # what is queued, and who may still come, seen together
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
                    expected = self._arriving
            if item is None:
                left = deadline - time.monotonic()
                if left <= 0 or expected == 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _resolve(self, batch: list[_Pending[T]]) -> None:
        self.batch_sizes[len(batch)] += 1
        try:
            results = self._run([pending.item for pending in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function answered {len(results)} results for {len(batch)} items")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            for pending in batch:  # find the item that fails; the others still get answers
                self._resolve([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
            pending.done.set()
