"""The contract between the twin's endpoint server and the models it serves.

A ``Predictor`` answers ``predictor(body, content_type)`` with the endpoint contract's JSON (DESIGN.md: top-k
``predictions``, ``known``, ``unknown_score``, ``threshold``, ``model``) and names itself with ``identity``
(``{"name": …, "version": …}``). It raises ``BadInput`` for input it cannot classify (the container's 4xx),
``ModelFailure`` when it breaks (5xx) and ``Throttled`` when over capacity. ``ArtifactModel`` (a trained
model.tar.gz through training/inference.py) and ``ColourModel`` (the stand-in for router tests) are the two.

    used by breedfilter/twin/endpoint_server.py and the predictors; not run on its own
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from breedfilter import units

# SageMaker real-time InvokeEndpoint's payload limit: the router's settings own the number (it bounds
# MAX_IMAGE_BYTES there); the twin's runtime enforces the same one.
MAX_BODY_BYTES: int = units.router_module("routing.settings").INVOKE_ENDPOINT_MAX_BYTES


@runtime_checkable
class Predictor(Protocol):
    """What the twin's endpoint serves."""

    @property
    def identity(self) -> dict[str, str]:
        """``{"name": …, "version": …}``: the model, as the answer's ``model`` field names it."""
        ...

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
        """The endpoint contract's answer for one request body."""
        ...


class BadInput(Exception):
    """The input cannot be classified: the model answers 4xx with a JSON reason."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ModelFailure(Exception):
    """The model failed (a 5xx from the container, wrapped as ModelError by sagemaker-runtime)."""

    def __init__(self, reason: str, status: int = 500):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Throttled(Exception):
    """The endpoint is over capacity: sagemaker-runtime answers ThrottlingException."""
