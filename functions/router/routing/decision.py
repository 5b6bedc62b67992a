"""Decide where an image goes, from its size, its sniffed type and the endpoint's answer. Pure: no I/O.

``<label>/<key>`` when the top probability reaches the threshold, ``review/<key>`` below it (top-k kept),
``rejected/<key>`` for bad input (empty, too large, not an image, unsupported, refused by the model).

    python -m routing.decision     # from functions/router: prints an example decision
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from routing.endpoint import Prediction
from routing.sniff import Sniffed

SORTED, REVIEW, REJECTED = "SORTED", "REVIEW", "REJECTED"
REVIEW_PREFIX, REJECTED_PREFIX = "review", "rejected"
MAX_S3_KEY_BYTES = 1024

# Reasons for REJECTED, stable codes users can query on.
EMPTY = "empty"
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
MODEL_REJECTED = "model_rejected"
BELOW_THRESHOLD = "below_threshold"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def label_prefix(label: str) -> str:
    """A label as one safe key segment; never one of the reserved prefixes."""
    segment = label.strip().replace("/", "_") or "unlabelled"
    if segment.lower() in (REVIEW_PREFIX, REJECTED_PREFIX):
        segment = f"label-{segment}"
    return segment


def reject(reason: str, detail: str, *, size: int, sniffed: Sniffed | None = None) -> dict[str, Any]:
    return {
        "status": REJECTED,
        "reason": reason,
        "detail": detail,
        "prefix": REJECTED_PREFIX,
        "size_bytes": size,
        "format": sniffed.format if sniffed else None,
        "decided_at": now_iso(),
    }


def from_prediction(
    prediction: Prediction, *, threshold: float, top_k: int, size: int, sniffed: Sniffed
) -> dict[str, Any]:
    top = prediction.predictions[0]
    confident = top["probability"] >= threshold
    decision: dict[str, Any] = {
        "status": SORTED if confident else REVIEW,
        "top_label": top["label"],
        "confidence": round(top["probability"], 6),
        "top_k": [{**p, "probability": round(p["probability"], 6)} for p in prediction.predictions[:top_k]],
        "prefix": label_prefix(top["label"]) if confident else REVIEW_PREFIX,
        "model_name": prediction.model["name"],
        "model_version": prediction.model["version"],
        "endpoint_latency_ms": round(prediction.latency_ms, 1),
        "size_bytes": size,
        "format": sniffed.format,
        "decided_at": now_iso(),
    }
    if confident:
        decision["label"] = top["label"]
    else:
        decision["reason"] = BELOW_THRESHOLD
        decision["detail"] = f"top probability {top['probability']:.6g} < threshold {threshold:.6g}"
    return decision


def destination_key(prefix: str, key: str) -> str:
    """``prefix/key``; a key too long for S3 once prefixed keeps its name's hash (the item keeps the key)."""
    candidate = f"{prefix}/{key}"
    if len(candidate.encode()) <= MAX_S3_KEY_BYTES:
        return candidate
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}/_long-keys/{digest}"


if __name__ == "__main__":
    example = Prediction([{"label": "Beagle", "index": 3, "probability": 0.91}], {"name": "m", "version": "1"}, 42.0)
    print(json.dumps(from_prediction(example, threshold=0.6, top_k=3, size=1234, sniffed=Sniffed("jpeg", "", True))))
