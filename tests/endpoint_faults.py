"""A model wrapper for tests: answers like the wrapped model, after a scripted series of faults."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from breedfilter.twin.predictor import BadInput, ModelFailure, Predictor, Throttled


class ScriptedModel:
    """``script(...)`` queues faults consumed one per call: "throttle", "fail" (503), ("sleep", s), "reject"."""

    def __init__(self, model: Predictor):
        self.model = model
        self._faults: deque[Any] = deque()
        self._lock = threading.Lock()
        self.calls: list[str] = []  # content types, one per call that reached the model

    def script(self, *faults: Any) -> None:
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.calls.clear()

    @property
    def identity(self) -> dict[str, str]:
        return self.model.identity

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            self.calls.append(content_type)
        if fault == "throttle":
            raise Throttled()
        if fault == "fail":
            raise ModelFailure("model server overloaded", status=503)
        if fault == "reject":
            raise BadInput("scripted rejection", status=422)
        if isinstance(fault, tuple) and fault[0] == "sleep":
            time.sleep(fault[1])
        return self.model(body, content_type)
