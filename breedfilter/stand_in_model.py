"""A stand-in model for the router's tests: it names an image's dominant colour (red, green or blue).

It decodes with Pillow exactly as a real model must (bad bytes and truncated files are a 4xx), so the router's
tests exercise real decoding in milliseconds and without torch; only the "classifier" is trivial. The demo,
``breedfilter local up`` and the end-to-end tests serve a trained ``model.tar.gz`` through
``training/inference.py`` instead (``breedfilter.artifact_model``).

    python -m breedfilter.stand_in_model IMAGE...     # prints each image's prediction
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat, UnidentifiedImageError

from breedfilter.endpoint_server import BadInput

LABELS = ("red", "green", "blue")
MODEL = {"name": "stand-in-colour", "version": "0"}


class ColourModel:
    """``predict(body, content_type)`` -> the endpoint contract's answer; ``BadInput`` for undecodable bytes."""

    def __init__(self, top_k: int = 3, sharpness: float = 12.0):
        self.top_k = top_k
        self.sharpness = sharpness

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
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
        return {"predictions": ranked[: self.top_k], "model": dict(MODEL)}


if __name__ == "__main__":
    model = ColourModel()
    for name in sys.argv[1:]:
        print(name, json.dumps(model(Path(name).read_bytes(), "application/x-image")))
