"""Call the SageMaker endpoint and classify its failures.

Throttling, 5xx and timeouts are retried by botocore (standard mode) inside one call; what is still failing
afterwards raises ``EndpointUnavailable`` and the message goes back to the queue. A model's 4xx (SageMaker
wraps it in ``ModelError`` with ``OriginalStatusCode``) means the input is bad: ``EndpointRejected``, which
the router turns into a ``rejected/`` decision, never a retry.

    python -m routing.endpoint ENDPOINT_NAME IMAGE     # from functions/router: prints the answer
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from routing.settings import CONNECT_TIMEOUT_SECONDS

POINTER_CONTENT_TYPE = "application/json"  # {"s3_uri": ..., "version_id" | "etag": ...}


class EndpointRejected(Exception):
    """The model refused the input (a 4xx): bad input, a decision rather than a retry."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"endpoint rejected the input ({status}): {reason}")
        self.status = status
        self.reason = reason


class EndpointUnavailable(Exception):
    """Throttled, timed out, 5xx, not in service, or an answer outside the contract: retry later."""


@dataclass(frozen=True)
class Prediction:
    """The endpoint's answer for one image. Answers from before open-set recognition lack the last three fields:
    such an image is known, with no unknown score and no threshold of the model's own."""

    predictions: list[dict[str, Any]]  # [{"label", "index", "probability"}...] best first
    model: dict[str, str]  # {"name", "version"}
    latency_ms: float
    known: bool = True  # False: the image is of none of the model's labels (another breed, a cat, an object)
    unknown_score: float | None = None  # the model's open-set score (higher: less like any label)
    threshold: float | None = None  # the model's own probability threshold, chosen at training


def make_client(timeout_seconds: float, max_attempts: int) -> Any:
    """A sagemaker-runtime client; ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` points it at a local server."""
    config = Config(
        connect_timeout=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds),
        read_timeout=timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": max_attempts},  # the first call included
    )
    return boto3.client("sagemaker-runtime", config=config)


class EndpointClient:
    def __init__(self, client: Any, endpoint_name: str):
        self._client = client
        self.endpoint_name = endpoint_name

    def classify(self, body: bytes, content_type: str) -> Prediction:
        """The image in the request body (up to InvokeEndpoint's payload limit)."""
        return self._invoke(body, content_type)

    def classify_s3(
        self, bucket: str, key: str, *, version_id: str | None = None, etag: str | None = None
    ) -> Prediction:
        """An image too large for a request body, by S3 pointer: the endpoint reads that exact revision itself
        (its role may read the inbox; training/inference.py caps the size and the pixels as for a body)."""
        pointer: dict[str, str] = {"s3_uri": f"s3://{bucket}/{key}"}
        if version_id and version_id != "null":
            pointer["version_id"] = version_id
        elif etag:
            pointer["etag"] = etag  # an unversioned inbox: the endpoint reads only these bytes (If-Match)
        return self._invoke(json.dumps(pointer).encode(), POINTER_CONTENT_TYPE)

    def _invoke(self, body: bytes, content_type: str) -> Prediction:
        started = time.perf_counter()
        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                Body=body,
                ContentType=content_type,
                Accept="application/json",
            )
            payload = response["Body"].read()
        except ClientError as exc:
            raise _classify_client_error(exc) from exc
        except BotoCoreError as exc:  # timeouts and connection errors, after botocore's own retries
            raise EndpointUnavailable(f"endpoint {self.endpoint_name!r} unreachable: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        return parse_answer(payload, latency_ms)


def _classify_client_error(exc: ClientError) -> Exception:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    if code == "ModelError":
        status = int(exc.response.get("OriginalStatusCode") or 0)
        original = exc.response.get("OriginalMessage") or error.get("Message", "")
        if 400 <= status < 500 and status not in (408, 429):
            return EndpointRejected(status, reason_from(original))
        return EndpointUnavailable(f"model answered {status or 'an error'}: {original}")
    return EndpointUnavailable(f"{code or 'error'} from InvokeEndpoint: {error.get('Message', exc)}")


def reason_from(original: str) -> str:
    """The model's JSON ``{"error": ...}``/``{"reason": ...}`` body, or the text's first line.

    SageMaker's inference toolkit sends the error's message followed by a newline and the traceback, so the
    JSON is decoded from the start of the text and whatever follows it is dropped.
    """
    text = (original or "").strip()
    try:
        parsed, _ = json.JSONDecoder().raw_decode(text)
    except (TypeError, ValueError):
        return text.splitlines()[0][:500] if text else ""
    if isinstance(parsed, dict):
        for field in ("reason", "error", "message"):
            if parsed.get(field):
                return str(parsed[field])[:500]
    return text.splitlines()[0][:500]


def parse_answer(payload: bytes, latency_ms: float) -> Prediction:
    """The contract's answer, ranked, with ``known``, ``unknown_score`` and ``threshold`` (an older model's answer
    lacks them: known, no score, no threshold); anything else is EndpointUnavailable (retried, then the DLQ)."""
    try:
        answer = json.loads(payload)
        ranked = sorted((_prediction(p) for p in answer["predictions"]), key=lambda p: p["probability"], reverse=True)
        model = answer.get("model") or {}
        model = {"name": str(model.get("name", "unknown")), "version": str(model.get("version", "unknown"))}
        known, unknown_score, threshold = _open_set_fields(answer)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:  # OverflowError: 1e400 as an int
        raise EndpointUnavailable(f"endpoint answer outside the contract: {exc!r}: {payload[:200]!r}") from exc
    if not ranked:
        raise EndpointUnavailable("endpoint answered with no predictions")
    return Prediction(
        predictions=ranked,
        model=model,
        latency_ms=latency_ms,
        known=known,
        unknown_score=unknown_score,
        threshold=threshold,
    )


def _open_set_fields(answer: dict[str, Any]) -> tuple[bool, float | None, float | None]:
    """``known`` (a bool; true when absent), ``unknown_score`` and ``threshold`` (finite numbers or null; the
    threshold within [0, 1]). Answers from before open-set recognition omit all three."""
    known = answer.get("known", True)
    if not isinstance(known, bool):
        raise TypeError(f"known must be true or false, got {known!r}")
    unknown_score = _optional_number(answer, "unknown_score")
    threshold = _optional_number(answer, "threshold")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} outside [0, 1]")
    return known, unknown_score, threshold


def _optional_number(answer: dict[str, Any], field: str) -> float | None:
    """A finite JSON number, or None when the field is absent or null (booleans and strings are refused)."""
    value = answer.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field} must be a number or null, got {value!r}")
    number = float(value)  # OverflowError for an integer beyond a float's range
    if not math.isfinite(number):
        raise ValueError(f"{field} {value} is not finite")
    return number


def _prediction(raw: dict[str, Any]) -> dict[str, Any]:
    label, probability = str(raw["label"]).strip(), float(raw["probability"])
    if not label:
        raise ValueError("empty label")
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        raise ValueError(f"probability {probability} outside [0, 1]")
    return {"label": label, "index": int(raw["index"]), "probability": probability}


if __name__ == "__main__":
    name, image = sys.argv[1], Path(sys.argv[2])
    answer = EndpointClient(make_client(20.0, 3), name).classify(image.read_bytes(), "application/x-image")
    print(json.dumps(answer.__dict__, indent=2))
