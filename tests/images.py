"""Small images the tests make themselves (no downloads, nothing from outside the repository)."""

from __future__ import annotations

import io

from PIL import Image

# For the stand-in colour model: red, green and blue are its labels; grey has no colour (none of its labels);
# purple is torn between red and blue (known, below its threshold); rose is mostly red (known, about 0.87).
COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 200, 30),
    "blue": (25, 30, 210),
    "grey": (128, 128, 128),
    "purple": (160, 30, 160),
    "rose": (170, 30, 130),
}


def image_bytes(colour: str = "red", fmt: str = "JPEG", size: tuple[int, int] = (48, 40), mode: str = "RGB") -> bytes:
    image = Image.new("RGB", size, COLOURS[colour])
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    whole = image_bytes("red", size=(256, 256))
    return whole[: len(whole) // 3]


HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
TEXT_AS_JPG = b"this is a text file that somebody named photo.jpg\n"
