"""A labelled image set the offline demo generates itself: circles, squares and triangles, as an ImageFolder tree.

The shape is the label; nothing else is. Every image draws its colours at random (a darker shape on a lighter
background: every channel of the shape at least ``MIN_CHANNEL_GAP`` below the background's, so the contrast is the
same kind in every image while the hues say nothing about the class), its size, position and (for squares and
triangles) rotation, then adds a few distractor dots, a little blur and pixel noise: a classifier has to learn the
shape, not the colours. The same seed always writes the same files (each image has its own random stream, so changing
the counts of one split leaves the images of the others as they were).

    python -m breedfilter.demo_dataset OUT_DIR                      # OUT_DIR/{train,valid,test}/<class>/<nnn>.jpg
    python -m breedfilter.demo_dataset OUT_DIR --train 200 --seed 1

The default counts (1,000 training images per class; 100 valid, 100 test) take about 4 s to write and let
``training/train.py`` train a small network from scratch to 99-100% test accuracy in about 40 s on two CPU cores
(with fewer images, or fully independent colours, it memorises colours instead):

    python training/train.py --data OUT_DIR --model timm/test_efficientnet --weights none --image-size 64 \
        --recipe finetune --unfreeze-epoch 0 --backbone-lr-ratio 1 --lr 3e-3 --augment none --epochs 3 \
        --early-stopping-patience 0 --num-workers 0

Only Pillow and the standard library: no downloads, no numpy.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
DEFAULT_COUNTS: dict[str, int] = {"train": 1000, "valid": 100, "test": 100}
"""Images per class in each split."""
JPEG_QUALITY = 90
MIN_CHANNEL_GAP = 100
"""Each of the shape's R, G, B values is at least this much below the background's."""
_SUPERSAMPLE = 3  # shapes are drawn at 3x and scaled down (box filter): antialiased edges
# Circumradius factors that give each shape about the area of a square (2 r^2): circle pi r^2, triangle 1.3 r^2.
_AREA_SCALE: dict[str, float] = {"circle": 0.8, "square": 1.0, "triangle": 1.24}


def draw(label: str, rng: random.Random, size: int = 96) -> Image.Image:
    """One ``size`` x ``size`` RGB image of a ``label`` shape (one of ``CLASSES``), its looks drawn from ``rng``.

    The shape stays inside the central 80% of the image (eval transforms that center-crop keep all of it).
    """
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}: one of {', '.join(CLASSES)}")
    _check_size(size)
    background, foreground = _colours(rng)
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), background)
    canvas = ImageDraw.Draw(image)

    _distractor_dots(canvas, rng, big, foreground)
    # Circumradius as a fraction of the side, scaled per class so the three shapes have about the same area
    # (size says nothing about the label); the centre stays far enough in that the shape fits the 80% middle.
    radius = rng.uniform(0.15, 0.27) * big * _AREA_SCALE[label]
    margin = 0.10 * big + radius
    cx, cy = rng.uniform(margin, big - margin), rng.uniform(margin, big - margin)
    if label == "circle":
        canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=foreground)
    else:
        sides = 4 if label == "square" else 3
        rotation = rng.uniform(0.0, 2.0 * math.pi)
        points = [
            (
                cx + radius * math.cos(rotation + 2.0 * math.pi * k / sides),
                cy + radius * math.sin(rotation + 2.0 * math.pi * k / sides),
            )
            for k in range(sides)
        ]
        canvas.polygon(points, fill=foreground)

    image = image.reduce(_SUPERSAMPLE)
    blur = rng.uniform(0.0, 1.0)
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return _add_noise(image, rng, strength=rng.uniform(0.04, 0.15))


def generate(
    root: Path,
    train: int = DEFAULT_COUNTS["train"],
    valid: int = DEFAULT_COUNTS["valid"],
    test: int = DEFAULT_COUNTS["test"],
    seed: int = 0,
    size: int = 96,
) -> Path:
    """Write ``root/{train,valid,test}/<class>/<nnn>.jpg`` (``train``/``valid``/``test`` images per class); ``root``.

    Deterministic for ``seed``: image ``i`` of a split's class comes from its own ``random.Random``.
    Existing files of the same names are overwritten; others under ``root`` are left alone.
    """
    root = Path(root)
    counts = {"train": train, "valid": valid, "test": test}
    for split, count in counts.items():
        if count < 0:
            raise ValueError(f"{split} count must be >= 0, not {count}")
    _check_size(size)
    for split, count in counts.items():
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            width = max(3, len(str(count - 1)))
            for i in range(count):
                rng = random.Random(f"{seed}/{split}/{label}/{i}")  # noqa: S311 (pictures, not secrets)
                draw(label, rng, size).save(folder / f"{i:0{width}d}.jpg", "JPEG", quality=JPEG_QUALITY)
    return root


def _check_size(size: int) -> None:
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, not {size}")


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, foreground): a random light colour and a random darker one, MIN_CHANNEL_GAP below in each channel.

    Independent random colours (a red shape on green here, a blue one on yellow there) are as fair, but a small
    network from scratch then needs many times the images and epochs before it stops memorising colours.
    """
    background = (rng.randint(150, 255), rng.randint(150, 255), rng.randint(150, 255))
    foreground = (
        rng.randint(0, background[0] - MIN_CHANNEL_GAP),
        rng.randint(0, background[1] - MIN_CHANNEL_GAP),
        rng.randint(0, background[2] - MIN_CHANNEL_GAP),
    )
    return background, foreground


def _distractor_dots(
    canvas: ImageDraw.ImageDraw, rng: random.Random, big: int, foreground: tuple[int, int, int]
) -> None:
    """A few small dots anywhere (some in the shape's colour), far smaller than any shape."""
    for _ in range(rng.randint(0, 6)):
        r = rng.uniform(0.008, 0.025) * big
        x, y = rng.uniform(r, big - r), rng.uniform(r, big - r)
        colour = foreground if rng.random() < 0.5 else (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        canvas.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def _add_noise(image: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """Blend in uniform per-pixel colour noise from ``rng`` (Pillow's own noise generator is not seedable)."""
    noise = Image.frombytes("RGB", image.size, rng.randbytes(image.size[0] * image.size[1] * 3))
    return Image.blend(image, noise, strength)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m breedfilter.demo_dataset",
        description="Write the demo's shapes image set (circle / square / triangle) as OUT_DIR/{train,valid,test}/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="dataset root to write")
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=int, default=DEFAULT_COUNTS[split], help=f"{split} images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        root = generate(args.out_dir, args.train, args.valid, args.test, seed=args.seed, size=args.size)
    except ValueError as exc:
        parser.error(str(exc))
    total = (args.train + args.valid + args.test) * len(CLASSES)
    print(f"wrote {total} images ({', '.join(CLASSES)}) to {root} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
