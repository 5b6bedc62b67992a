"""Small labelled ImageFolder datasets the training tests generate themselves (no downloads).

Each class is a colour with a little noise and a random position of a bright square, so a small network
can learn it in a few steps but not from a single pixel.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"001.Red_Thing": (200, 40, 40), "002.Green_Thing": (40, 180, 60), "003.Blue_Thing": (40, 60, 200)}


def make_image(colour: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    jitter = [max(0, min(255, c + rng.randint(-40, 40))) for c in colour]
    image = Image.new("RGB", (size, size), tuple(jitter))
    draw = ImageDraw.Draw(image)
    side = size // 3
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    draw.rectangle([x, y, x + side, y + side], fill=(230, 230, 230))
    return image


def make_dataset(
    root: Path,
    per_split: dict[str, int] | None = None,
    size: int = 40,
    seed: int = 0,
    classes: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
    """``root/{train,valid,test}/<class>/<n>.jpg``; returns root."""
    per_split = per_split or {"train": 16, "valid": 6, "test": 6}
    rng = random.Random(seed)
    for split, count in per_split.items():
        for name, colour in (classes or COLOURS).items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                make_image(colour, size, rng).save(folder / f"{i:03d}.jpg", quality=90)
    return root
