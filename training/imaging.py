"""Image decoding and preprocessing, shared by training, its evaluation and the endpoint.

One job: turn untrusted bytes into an RGB ``PIL.Image`` the same way everywhere (``decode_rgb``/``load_rgb``),
and turn that image into a model input the same way in ``train.py``'s evaluation and in ``inference.py``
(``eval_transform``; ``train_transform`` adds augmentation for training). ``Preprocessing`` is the
resize/crop/mean/std record stored in the model artifact's ``config.json``.

Decoding rejects what cannot be classified with ``ImageInputError`` (``.status``: 400 undecodable, 413 too many
pixels, 415 unsupported content type): empty or text bytes, unknown formats, truncated files, decompression
bombs (checked from the header, before any pixel is decoded). It honours EXIF orientation, takes the first frame
of animations, uses JPEG draft mode to decode big photos at a reduced scale that never goes below what the model
needs, and converts every Pillow mode to RGB (alpha onto white; 16-bit, 32-bit and float images scaled by their
range instead of clipped to white).

    python training/imaging.py IMAGE...     # prints each image's decoded RGB size, or why it is rejected

Decoding needs only Pillow (numpy for 16-bit/float images); the transforms import torch/torchvision when called.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

MAX_ASPECT_RATIO: float = 20.0
"""Longer side / shorter side at most: resizing the short side of a 1xN strip would allocate N times the crop."""
MAX_JPEG_SCANS: int = 100
"""A progressive JPEG has about 10 scans; thousands of repeated scans make a small file decode for minutes."""
MAX_PIXELS: int = 64_000_000
"""Default decompression-bomb cap: width * height of the (first frame of the) image, checked before decoding."""

# Formats Pillow may open: what cameras, phones, browsers and datasets produce. Everything else (EPS, which
# would run Ghostscript; TGA, which has no signature so any bytes may "decode"; PSD, FITS, ...) is refused before a
# decoder runs. Phones' MPO files open as JPEG; JPEG 2000 (JP2 files and raw codestreams) as JPEG2000. The router
# sends what it sniffs as one of these (functions/router/routing/sniff.py).
# The request content types the endpoint decodes as an image (inference.py answers 415 for anything else but
# JSON); the router sends one of them (routing/sniff.py) and the twin's stand-in model takes the same ones.
IMAGE_CONTENT_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "application/x-image", "application/octet-stream"}
)
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "AVIF", "JPEG2000", "PPM", "ICO")

INTERPOLATIONS: tuple[str, ...] = ("bilinear", "bicubic", "nearest")
AUGMENTATIONS: tuple[str, ...] = ("standard", "trivialaugment", "none")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Exceptions Pillow's decoders raise on bad data (truncated: OSError; bad headers: SyntaxError; and the rest).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    ZeroDivisionError,
    RuntimeError,  # Pillow's AVIF plugin: "Failed to decode image"
)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class ImageInputError(ValueError):
    """The input cannot be classified. ``reason``: why, for people; ``status``: the HTTP status it maps to."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def decode_rgb(data: bytes, *, draft_size: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``data`` completely into a new RGB image; ``ImageInputError`` (400/413) when it cannot be.

    ``draft_size``: for JPEGs, decode at the smallest 1/2, 1/4 or 1/8 scale whose width and height both stay
    at least ``draft_size`` (``Preprocessing.draft_size()``); other formats ignore it.
    ``max_pixels``: refuse (413) images whose width * height exceeds it, read from the header before decoding.
    Pillow's own ``Image.MAX_IMAGE_PIXELS`` guard, when set, also answers 413.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode_rgb expects bytes, not {type(data).__name__}")
    if len(data) == 0:
        raise ImageInputError("empty image: the body has no bytes", 400)
    # Pillow warns (DecompressionBombWarning) between MAX_IMAGE_PIXELS and twice that, and raises above; both
    # mean 413 here. catch_warnings is process-wide: a concurrent decode can at worst see the warning as a
    # plain warning (then our own max_pixels check still applies) or keep the "error" filter (which we want).
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=_formats()) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageInputError(
                        f"image too large: {width}x{height} = {width * height} pixels exceeds {max_pixels}", 413
                    )
                if width < 1 or height < 1:
                    raise ImageInputError(f"image has no pixels: {width}x{height}", 400)
                if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                    raise ImageInputError(
                        f"image is {width}x{height}: sides more than {MAX_ASPECT_RATIO:g}:1 apart are not a photo", 400
                    )
                if image.format == "JPEG" and _jpeg_scans(data) > MAX_JPEG_SCANS:
                    raise ImageInputError(f"JPEG has more than {MAX_JPEG_SCANS} scans (a decoding bomb)", 400)
                if draft_size is not None:
                    image.draft("RGB", (max(1, int(draft_size[0])), max(1, int(draft_size[1]))))
                image.load()  # the whole first frame: truncated or corrupt data fails here, not later
                return to_rgb(_exif_upright(image))
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageInputError(f"image too large: {exc}", 413) from None
        except UnidentifiedImageError:
            raise ImageInputError(
                f"not a supported image: the data is none of {', '.join(_formats())} ({_describe(data)})", 400
            ) from None
        except _DECODE_ERRORS as exc:
            raise ImageInputError(f"cannot decode image: {type(exc).__name__}: {exc}", 400) from None


def _jpeg_scans(data: bytes | bytearray | memoryview) -> int:
    """Start-of-scan markers (FF DA): entropy-coded data stuffs every FF with 00, so each is a real scan header
    (or a byte pair inside an APP segment, which only errs towards counting more)."""
    return bytes(data).count(b"\xff\xda")


def load_rgb(
    path: str | os.PathLike[str],
    *,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
    data: bytes | None = None,
) -> Image.Image:
    """``decode_rgb`` of a file's bytes (``data`` when the caller has already read them); the ``ImageInputError``
    reason names the file. OSError if unreadable."""
    data = Path(path).read_bytes() if data is None else data
    try:
        return decode_rgb(data, draft_size=draft_size, max_pixels=max_pixels)
    except ImageInputError as exc:
        raise ImageInputError(f"{os.fspath(path)}: {exc.reason}", exc.status) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image from any Pillow mode: alpha composited onto white, high-bit-depth scaled by its range."""
    mode = image.mode
    if mode in {"P", "L", "RGB"} and image.has_transparency_data:
        image, mode = image.convert("RGBA"), "RGBA"  # a transparent palette entry or a PNG tRNS colour key
    if mode in {"La", "RGBa"}:  # premultiplied alpha (Pillow's internal modes): over white is colour + (255 - alpha)
        import numpy as np

        bands = np.asarray(image).astype(np.int16)
        colour, alpha = bands[..., :-1], bands[..., -1:]
        over_white = np.clip(colour + (255 - alpha), 0, 255).astype(np.uint8)
        return Image.fromarray(over_white[..., 0] if mode == "La" else over_white).convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT or mode.startswith(("I", "F")):
        return _scaled_to_rgb(image)
    return image.convert("RGB")  # 1, L, P, RGB(X), CMYK, YCbCr, LAB, HSV: Pillow converts these correctly


def _scaled_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit by the 0..65535 range, 32-bit int and float by the data's min..max: 0..255 grey, no clipping."""
    import numpy as np

    values = np.asarray(image).astype(np.float64)
    if values.ndim != 2:  # a multi-band high-bit-depth mode Pillow may add: let it decide
        return image.convert("RGB")
    if image.mode in _SIXTEEN_BIT:
        low, high = 0.0, 65535.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    if high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:  # a constant image: its value if it is already on the 0..255 scale, else mid-grey
        scaled = np.full_like(values, low if 0.0 <= low <= 255.0 else 128.0)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


@functools.cache
def _formats() -> tuple[str, ...]:
    """FORMATS this Pillow build can open (AVIF, for one, is optional)."""
    Image.init()
    return tuple(name for name in FORMATS if name in Image.OPEN)


def _exif_upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; unreadable EXIF leaves it as stored (not a reason to fail)."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) in (None, 1):
            return image  # nothing to turn: no copy
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, struct.error):
        return image


def _describe(data: bytes | bytearray | memoryview) -> str:
    head = bytes(data[:16])
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"{len(data)} bytes starting with text {head.decode('ascii')!r}"
    return f"{len(data)} bytes starting with {head.hex(' ')}"


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is made: resize the shorter side to ``resize``, center-crop ``crop``, normalize."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"preprocessing {name} must be a positive integer, not {value!r}")
        if self.crop > self.resize:
            raise ValueError(f"preprocessing crop ({self.crop}) must not exceed resize ({self.resize})")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"preprocessing interpolation must be one of {', '.join(INTERPOLATIONS)}, not {self.interpolation!r}"
            )
        object.__setattr__(self, "mean", _triple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _triple("std", self.std, positive=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``config.json`` stores under ``preprocessing``."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """The inverse of ``to_dict``; ValueError naming what is missing, unknown or out of range."""
        if not isinstance(d, Mapping):
            raise ValueError(f"preprocessing must be a mapping, not {type(d).__name__}")
        fields = ("resize", "crop", "interpolation", "mean", "std")
        missing = [name for name in fields if name not in d]
        unknown = sorted(set(d) - set(fields))
        if missing or unknown:
            raise ValueError(f"preprocessing: missing keys {missing}, unknown keys {unknown} (expected {list(fields)})")
        return cls(
            resize=d["resize"],
            crop=d["crop"],
            interpolation=d["interpolation"],
            mean=d["mean"],
            std=d["std"],
        )

    def draft_size(self) -> tuple[int, int]:
        """For ``decode_rgb``: JPEG draft keeps both sides >= ``resize``, so the shorter side is never upscaled."""
        return (self.resize, self.resize)


def _triple(name: str, value: Any, *, positive: bool) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"preprocessing {name} must be three numbers, not {value!r}") from None
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"preprocessing {name} must be three finite numbers, not {value!r}")
    if positive and not all(v > 0 for v in numbers):
        raise ValueError(f"preprocessing {name} must be positive, not {value!r}")
    return numbers  # type: ignore[return-value]


def _interpolation(pre: Preprocessing) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(pre.interpolation)


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Image -> normalized float tensor (3, crop, crop): resize the shorter side (antialiased), center crop.

    The one transform both ``train.py``'s evaluation and ``inference.py`` use.
    """
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(pre.resize, interpolation=_interpolation(pre), antialias=True),
            v2.CenterCrop(pre.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ]
    )


def train_transform(pre: Preprocessing, *, augment: str = "standard") -> Callable[[Image.Image], torch.Tensor]:
    """Training input: random resized crop + horizontal flip (``trivialaugment`` adds TrivialAugmentWide).

    ``augment="none"`` is ``eval_transform`` (no randomness).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {augment!r}")
    if augment == "none":
        return eval_transform(pre)
    import torch
    from torchvision.transforms import v2

    interpolation = _interpolation(pre)
    steps: list[Any] = [
        v2.ToImage(),
        v2.RandomResizedCrop(pre.crop, interpolation=interpolation, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "trivialaugment":
        # Its rotations and shears run on tensors, which allow only nearest or bilinear (bicubic fails at random).
        steps.append(v2.TrivialAugmentWide(interpolation=v2.InterpolationMode.BILINEAR))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(pre.mean), std=list(pre.std))]
    return v2.Compose(steps)


def main(argv: list[str]) -> int:
    failures = 0
    for name in argv:
        try:
            image = load_rgb(name)
        except ImageInputError as exc:
            failures += 1
            print(f"REJECTED {exc.status}: {exc.reason}")
            continue
        except OSError as exc:
            failures += 1
            print(f"{name}: unreadable: {exc}")
            continue
        print(f"{name}: RGB {image.size[0]}x{image.size[1]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
