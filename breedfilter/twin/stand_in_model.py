"""A stand-in model for the router's tests: it names an image's dominant colour (red, green or blue).

It answers the endpoint contract in full: top-k probabilities, ``known`` (false for an image with no clear
colour, such as grey, white or black: none of its labels), an ``unknown_score`` (1 - the colour's saturation:
1.0 for grey) and its own ``threshold``. ``ColourModel(open_set=False)`` answers as artifacts from before
open-set recognition did, without those three fields; ``threshold=None`` leaves out only the threshold.

It decodes with Pillow exactly as a real model must (bad bytes and truncated files are a 4xx), so the router's
tests exercise real decoding in milliseconds and without torch; only the "classifier" is trivial. The demo,
``breedfilter local up`` and the end-to-end tests serve a trained ``model.tar.gz`` through
``training/inference.py`` instead (``breedfilter.twin.artifact_model``).

    python -m breedfilter.twin.stand_in_model IMAGE...     # prints each image's prediction
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat, UnidentifiedImageError

from breedfilter import units
from breedfilter.twin.predictor import BadInput, ModelFailure

LABELS = ("red", "green", "blue")
MODEL = {"name": "stand-in-colour", "version": "0"}
THRESHOLD = 0.6
MIN_SATURATION = 0.25  # below it (max - min channel mean, 0..1) the image has no colour: unknown


class ColourModel:
    """``predict(body, content_type)`` -> the endpoint contract's answer; ``BadInput`` for undecodable bytes."""

    def __init__(
        self,
        top_k: int = 3,
        sharpness: float = 12.0,
        *,
        threshold: float | None = THRESHOLD,
        min_saturation: float = MIN_SATURATION,
        open_set: bool = True,
    ):
        self.top_k = top_k
        self.sharpness = sharpness
        self.threshold = threshold
        self.min_saturation = min_saturation
        self.open_set = open_set

    @property
    def identity(self) -> dict[str, str]:
        return dict(MODEL)

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
        accepted = units.training_module("imaging").IMAGE_CONTENT_TYPES  # the real model's (Pillow only, no torch)
        media_type = content_type.split(";")[0].strip().lower()
        if media_type == "application/json":  # a photo by S3 pointer, read as the real model reads it
            body = _read_pointer(body)
        elif media_type not in accepted:
            raise BadInput(f"unsupported content type {content_type!r}; send one of {sorted(accepted)}", 415)
        try:
            with Image.open(io.BytesIO(body)) as image:
                image.draft("RGB", (64, 64))
                small = image.convert("RGB").resize((16, 16))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BadInput(f"cannot decode image: {exc}") from None
        means = [channel / 255.0 for channel in ImageStat.Stat(small).mean]
        exps = [math.exp(self.sharpness * m) for m in means]
        total = sum(exps)
        ranked = sorted(
            ({"label": LABELS[i], "index": i, "probability": exps[i] / total} for i in range(3)),
            key=lambda p: p["probability"],
            reverse=True,
        )
        answer: dict[str, Any] = {"predictions": ranked[: self.top_k], "model": self.identity}
        if self.open_set:
            saturation = max(means) - min(means)
            answer["known"] = saturation >= self.min_saturation
            answer["unknown_score"] = round(1.0 - saturation, 6)
            if self.threshold is not None:
                answer["threshold"] = self.threshold
        return answer


def _read_pointer(body: bytes) -> bytes:
    pointer = units.training_module("s3_pointer")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadInput(f"request body is not valid JSON: {exc}") from None
    if not pointer.is_pointer(payload):
        raise BadInput('the stand-in takes one image, or {"s3_uri": ...}; no batches', 415)
    try:
        return pointer.read(payload)
    except pointer.PointerError as exc:
        if exc.status >= 500:
            raise ModelFailure(exc.reason, exc.status) from None
        raise BadInput(exc.reason, exc.status) from None


if __name__ == "__main__":
    model = ColourModel()
    for name in sys.argv[1:]:
        print(name, json.dumps(model(Path(name).read_bytes(), "application/x-image")))
