"""Decide where an image goes, from its size, its sniffed type and the endpoint's answer. Pure: no I/O.

``<label>/<key>`` when the model knows the image (it is of one of its labels) and the top probability reaches
the threshold; ``review/<key>`` otherwise (top-k kept): reason ``unknown_label`` for an image of none of the
labels, ``below_threshold`` for one the model is unsure of; ``rejected/<key>`` for bad input (empty, too
large, not an image, unsupported, refused by the model). The threshold is the model's own (in each answer)
unless CONFIDENCE_THRESHOLD sets a number; an answer without one falls back to 0.6. A revision of a key whose
readable name holds another revision's copy gets its own, ``<prefix>/<dir>/<stem>~<rev><ext>``
(``destination_key(..., revision=)``; routing.pipeline decides which).

    python -m routing.decision     # from functions/router: prints an example decision
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from routing.endpoint import Prediction
from routing.settings import FALLBACK_CONFIDENCE_THRESHOLD
from routing.sniff import Sniffed

SORTED, REVIEW, REJECTED = "SORTED", "REVIEW", "REJECTED"
REVIEW_PREFIX, REJECTED_PREFIX = "review", "rejected"
MAX_S3_KEY_BYTES = 1024
REVISION_MARK = "~"  # prefix/dir/stem~<rev>.ext: the copy of a revision whose readable name another holds
REVISION_TAG_CHARS = 12

# Reasons for REJECTED, stable codes users can query on.
EMPTY = "empty"
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
MODEL_REJECTED = "model_rejected"
# Reasons for REVIEW.
BELOW_THRESHOLD = "below_threshold"
UNKNOWN_LABEL = "unknown_label"

# Where the applied threshold came from (the item's threshold_source).
THRESHOLD_FROM_MODEL = "model"  # the answer's own threshold (CONFIDENCE_THRESHOLD=model)
THRESHOLD_FROM_SETTING = "setting"  # CONFIDENCE_THRESHOLD set to a number
THRESHOLD_DEFAULT = "default"  # CONFIDENCE_THRESHOLD=model, but the answer carried none
THRESHOLD_WORDING = {
    THRESHOLD_FROM_MODEL: "the model's own",
    THRESHOLD_FROM_SETTING: "set by CONFIDENCE_THRESHOLD",
    THRESHOLD_DEFAULT: "the router's fallback: the model's answer carries no threshold",
}


@dataclass(frozen=True)
class Decision:
    """Where one image goes and why. Every decision has status, prefix, size and time; a model's answer adds the
    top guess, top-k, known/unknown_score, the threshold applied and the model; REJECTED and REVIEW add a reason
    code and a detail. The results item and the sorted copy's metadata are made from it; the idempotency store
    keeps it (Powertools' DataclassSerializer), so every field is JSON."""

    status: str
    prefix: str
    size_bytes: int
    decided_at: str
    format: str | None = None
    label: str | None = None  # SORTED only: the by-label index lists it
    reason: str | None = None
    detail: str | None = None
    top_label: str | None = None
    confidence: float | None = None
    top_k: list[dict[str, Any]] | None = None
    known: bool | None = None
    unknown_score: float | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    endpoint_latency_ms: float | None = None

    @property
    def shown_label(self) -> str | None:
        """The label (SORTED), or the top guess (REVIEW, REJECTED by the model has none): what logs show."""
        return self.label or self.top_label

    @property
    def category(self) -> str:
        """The metric's ``label`` dimension: the label (SORTED), the top guess (REVIEW below the threshold), or
        the reason (REVIEW of an image of none of the labels, whose top guess means little; REJECTED)."""
        guess = None if self.known is False else self.top_label
        return self.label or guess or self.reason or "none"

    def fields(self) -> dict[str, Any]:
        """The fields that are set, as a dict (the results item's decision part)."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def label_prefix(label: str) -> str:
    """A label as one safe key segment; never one of the reserved prefixes."""
    segment = label.strip().replace("/", "_") or "unlabelled"
    if segment.lower() in (REVIEW_PREFIX, REJECTED_PREFIX):
        segment = f"label-{segment}"
    return segment


def reject(reason: str, detail: str, *, size: int, sniffed: Sniffed | None = None) -> Decision:
    return Decision(
        status=REJECTED,
        reason=reason,
        detail=detail,
        prefix=REJECTED_PREFIX,
        size_bytes=size,
        format=sniffed.format if sniffed else None,
        decided_at=now_iso(),
    )


def applied_threshold(prediction: Prediction, setting: float | None) -> tuple[float, str]:
    """The threshold to apply and its source: the setting when it is a number, else the model's own from the
    answer, else FALLBACK_CONFIDENCE_THRESHOLD (an answer from an artifact that carries no threshold)."""
    if setting is not None:
        return setting, THRESHOLD_FROM_SETTING
    if prediction.threshold is not None:
        return prediction.threshold, THRESHOLD_FROM_MODEL
    return FALLBACK_CONFIDENCE_THRESHOLD, THRESHOLD_DEFAULT


def from_prediction(
    prediction: Prediction, *, threshold: float | None, top_k: int, size: int, sniffed: Sniffed
) -> Decision:
    """SORTED only for a known image whose top probability reaches the threshold; REVIEW otherwise.

    ``threshold`` is the setting: a number overrides the model's own, None applies it (see applied_threshold).
    """
    top = prediction.predictions[0]
    applied, source = applied_threshold(prediction, threshold)
    confident = prediction.known and top["probability"] >= applied
    if confident:
        reason = None
        detail = f"threshold {applied:.6g}: {THRESHOLD_WORDING[source]}" if source == THRESHOLD_DEFAULT else None
    elif not prediction.known:
        reason, detail = UNKNOWN_LABEL, unknown_detail(prediction)
    else:
        reason = BELOW_THRESHOLD
        detail = f"top probability {top['probability']:.6g} < threshold {applied:.6g} ({THRESHOLD_WORDING[source]})"
    return Decision(
        status=SORTED if confident else REVIEW,
        prefix=label_prefix(top["label"]) if confident else REVIEW_PREFIX,
        size_bytes=size,
        decided_at=now_iso(),
        format=sniffed.format,
        label=top["label"] if confident else None,
        reason=reason,
        detail=detail,
        top_label=top["label"],
        confidence=round(top["probability"], 6),
        top_k=[{**p, "probability": round(p["probability"], 6)} for p in prediction.predictions[:top_k]],
        known=prediction.known,
        unknown_score=None if prediction.unknown_score is None else round(prediction.unknown_score, 6),
        threshold=round(applied, 6),
        threshold_source=source,
        model_name=prediction.model["name"],
        model_version=prediction.model["version"],
        endpoint_latency_ms=round(prediction.latency_ms, 1),
    )


def unknown_detail(prediction: Prediction) -> str:
    """Why an image the model does not know goes to review; its top guess is kept in the decision."""
    said = "the model answered known=false"
    if prediction.unknown_score is None:
        return f"not any of the model's labels ({said})"
    return f"not any of the model's labels ({said}, unknown score {prediction.unknown_score:.6g})"


def destination_key(prefix: str, key: str, revision: str | None = None) -> str:
    """``prefix/key``; with ``revision`` (``v:<versionId>`` or ``e:<etag>``) the revision's own name,
    ``prefix/dir/stem~<rev>.ext`` (``<rev>``: revision_tag), used when another revision holds ``prefix/key``.
    A key too long for S3 once prefixed keeps its name's hash (``prefix/_long-keys/<sha256>``, ``~<rev>`` added
    for a revision); the item keeps the key."""
    tag = revision_tag(revision) if revision is not None else None
    candidate = f"{prefix}/{key if tag is None else with_revision_tag(key, tag)}"
    if len(candidate.encode()) <= MAX_S3_KEY_BYTES:
        return candidate
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}/_long-keys/{digest}" + ("" if tag is None else f"{REVISION_MARK}{tag}")


def revision_tag(revision: str) -> str:
    """A short name for a revision, the same on every redelivery: 12 hex digits of its sha256 (48 bits, so two
    revisions of one key and label collide with odds of about n^2 / 5.6e14)."""
    return hashlib.sha256(revision.encode()).hexdigest()[:REVISION_TAG_CHARS]


def with_revision_tag(key: str, tag: str) -> str:
    """``dir/stem.ext`` -> ``dir/stem~tag.ext``: the file keeps its folder and its extension (and so its type)."""
    folder, slash, name = key.rpartition("/")
    stem, ext = posixpath.splitext(name)
    return f"{folder}{slash}{stem}{REVISION_MARK}{tag}{ext}"


if __name__ == "__main__":
    example = Prediction(
        [{"label": "Beagle", "index": 3, "probability": 0.91}], {"name": "m", "version": "1"}, 42.0, threshold=0.7
    )
    decided = from_prediction(example, threshold=None, top_k=3, size=1234, sniffed=Sniffed("jpeg", "", True))
    print(json.dumps(decided.fields()))
