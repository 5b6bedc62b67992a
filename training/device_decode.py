"""JPEG decoding and augmentation on the training device (``--decode device``): loader workers only read files.

On a GPU, TorchCodec's ``decode_jpeg(..., device="cuda")`` (or torchvision's, deprecated since torchvision 0.29, where
TorchCodec is missing or does not load: ``jpeg_backend``) decodes a whole batch with nvJPEG, and the same
``imaging.train_transform``/``eval_transform`` (torchvision v2: random resized crop, flip, TrivialAugment,
normalize) then runs on the GPU's copy. The CPU cores that decoding and resizing took (about 420 photos/s per core
at 320 px, ``bench/train_input.py``) are left to read files, so a few cores can feed a fast GPU.

What each worker sends per image:

* a *plain* JPEG (baseline or progressive, RGB or greyscale, upright: EXIF orientation 1 or none, within
  ``imaging``'s pixel, aspect and scan limits) as its bytes, undecoded;
* anything else (PNG, WebP, CMYK JPEGs, rotated photos, ...) decoded by ``imaging.load_rgb`` as the endpoint
  decodes it, as a uint8 CHW tensor. The device stage transforms both kinds the same way.

A batch nvJPEG refuses is retried image by image; an image it still refuses is decoded by ``imaging.load_rgb``
on the CPU, and the run counts those (``DeviceDecoder.fallbacks``). Without CUDA the same path runs on the CPU
(libjpeg-turbo in the main process), which is how the tests exercise it.

Decoding on the device differs from the CPU path in one way: it decodes at full size where the CPU path uses JPEG
draft mode (a 1/2..1/8 scale that still covers the crop), so pixels differ slightly, not the distribution.
Test and decision metrics keep the endpoint's decoder (the CPU path) whatever ``--decode`` says.

Used by train.py (``--decode device``); ``bench/train_gpu_levers.py`` measures it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

import imagefolder
import imaging

log = logging.getLogger(__name__)

ORIENTATION = 0x0112  # EXIF tag: 1 is upright; other values need a rotation that nvJPEG does not apply


@dataclass
class Encoded:
    """One image as a worker sends it: ``data`` holds JPEG bytes when ``encoded``, else decoded uint8 CHW pixels."""

    data: torch.Tensor
    encoded: bool
    source: str = ""  # the file, named in errors

    def pin_memory(self) -> Encoded:  # DataLoader(pin_memory=True) calls it: the copy to the GPU is then async
        return Encoded(self.data.pin_memory(), self.encoded, self.source)


def plain_jpeg(data: bytes, max_pixels: int = imaging.MAX_PIXELS) -> bool:
    """Whether nvJPEG may decode ``data`` to what ``imaging.decode_rgb`` gives: a JPEG in RGB or greyscale, with
    no rotation to apply, inside the limits ``decode_rgb`` enforces (read from the header; nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
            width, height = image.size
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return False  # CMYK/YCCK and MPO pages go through Pillow
            if not (0 < width * height <= max_pixels) or max(width, height) > imaging.MAX_ASPECT_RATIO * min(
                width, height
            ):
                return False  # decode_rgb raises the error it would raise anywhere
            if image.getexif().get(ORIENTATION, 1) != 1:
                return False
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return imaging._jpeg_scans(data) <= imaging.MAX_JPEG_SCANS


class EncodedImageFolder(imagefolder.ImageFolderDataset):
    """An ``ImageFolderDataset`` whose items are ``(Encoded, class index)``: workers read, ``device_transform`` runs
    on the device (``DeviceDecoder``)."""

    def __init__(
        self,
        split: imagefolder.SplitIndex,
        transform: Callable[[Any], Any],
        draft_size: tuple[int, int] | None = None,
        *,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(split, None, draft_size, max_pixels=max_pixels)
        self.device_transform = transform

    def read(self, path: Path) -> Encoded:
        max_pixels = imaging.MAX_PIXELS if self.max_pixels is None else self.max_pixels
        data = path.read_bytes()
        if plain_jpeg(data, max_pixels):
            return Encoded(torch.frombuffer(bytearray(data), dtype=torch.uint8), True, str(path))
        image = imaging.load_rgb(path, draft_size=self.draft_size, max_pixels=max_pixels, data=data)
        return Encoded(_pixels(image), False, str(path))


def collate(batch: Sequence[tuple[Encoded, int]]) -> tuple[list[Encoded], torch.Tensor]:
    """The DataLoader's ``collate_fn``: images stay a list (their sizes differ), targets become a tensor."""
    return [item for item, _ in batch], torch.tensor([target for _, target in batch], dtype=torch.int64)


JpegDecode = Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]


def _torchcodec() -> JpegDecode:
    from torchcodec.decoders import decode_jpeg  # TorchCodec: torchvision's image decoders' successor

    return lambda data, device: list(decode_jpeg(data, mode="RGB", device=device))


def _torchvision() -> JpegDecode:
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # deprecated since 0.29 for TorchCodec: jpeg_backend logs when it is used
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))

    return decode


BACKENDS: dict[str, Callable[[], JpegDecode]] = {"torchcodec": _torchcodec, "torchvision": _torchvision}


@functools.cache
def _probe() -> torch.Tensor:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, "JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def jpeg_backend(device: torch.device, names: Sequence[str] = tuple(BACKENDS)) -> tuple[str, JpegDecode]:
    """The first of ``names`` that imports and decodes a JPEG on ``device`` (TorchCodec, then torchvision's
    deprecated ``decode_jpeg``), with its decode function; RuntimeError saying why each failed if none does."""
    failures = []
    for name in names:
        try:
            decode = BACKENDS[name]()
            decode([_probe()], device)
        except Exception as exc:  # not installed, built for another torch or CUDA, no nvJPEG: try the next
            first_line = (str(exc).strip().splitlines() or [""])[0]  # CUDA errors append a C++ stack
            failures.append(f"{name}: {type(exc).__name__}: {first_line}")
            continue
        if failures:
            log.warning("decode: %s decodes JPEGs on %s (%s)", name, device, "; ".join(failures))
        return name, decode
    raise RuntimeError(f"no JPEG decoder works on {device}: " + "; ".join(failures))


@dataclass
class DeviceDecoder:
    """Turns a list of ``Encoded`` into the normalized float batch ``transform`` makes, on ``device``."""

    transform: Callable[[Any], torch.Tensor]
    device: torch.device
    backend: str = ""  # "torchcodec", "torchvision", or "" for the first that works here (``jpeg_backend``)
    fallbacks: int = 0  # images the device decoder refused and Pillow decoded instead
    _warned: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.backend, self._decode_jpeg = jpeg_backend(self.device, [self.backend] if self.backend else BACKENDS)

    def __call__(self, items: Sequence[Encoded]) -> torch.Tensor:
        pixels: list[torch.Tensor | None] = [None] * len(items)
        jpegs = [i for i, item in enumerate(items) if item.encoded]
        for i, image in zip(jpegs, self._decode([items[i] for i in jpegs]), strict=True):
            pixels[i] = image
        for i, item in enumerate(items):
            if not item.encoded:
                pixels[i] = item.data.to(self.device, non_blocking=True)
        return torch.stack([self.transform(p).as_subclass(torch.Tensor) for p in pixels])

    def _decode(self, items: list[Encoded]) -> list[torch.Tensor]:
        if not items:
            return []
        try:
            return self._decode_jpeg([item.data for item in items], self.device)
        except RuntimeError:  # one image spoils the batch: find it
            images = []
            for item in items:
                try:
                    images.extend(self._decode_jpeg([item.data], self.device))
                except RuntimeError as exc:
                    images.append(self._fallback(item, exc))
            return images

    def _fallback(self, item: Encoded, exc: Exception) -> torch.Tensor:
        """Pillow's decode of a JPEG the device decoder refused; ``ImageInputError`` naming the file if it fails too."""
        self.fallbacks += 1
        if not self._warned:
            log.warning("decode on %s: %s was refused (%s); Pillow decodes such JPEGs", self.device, item.source, exc)
            self._warned = True
        image = imaging.load_rgb(item.source, data=item.data.numpy().tobytes())  # its errors name the file
        return _pixels(image).to(self.device)


class DeviceDecodedLoader:
    """Wraps a DataLoader of ``EncodedImageFolder`` batches: iterating yields ``(images on device, targets)``.

    ``sampler``, ``generator``, ``batch_size``, ``dataset`` and ``len()`` are the wrapped loader's, so the trainer
    treats it as a DataLoader. Time spent decoding that the step did not hide counts as waiting for data.

    ``prefetch`` (train.py: on a GPU) decodes the next batch in one background thread while the training step
    runs, on a side CUDA stream where there is one: the decoder's CPU work (parsing, the Huffman stage nvJPEG
    leaves to the CPU on some GPUs, the transforms' kernel launches) overlaps the step instead of adding to it.
    Without it batches are decoded on the calling thread, in order, drawing augmentation parameters from the
    global RNG exactly as the CPU path does (so a CPU run resumes exactly).
    """

    def __init__(self, loader: Any, decoder: DeviceDecoder, prefetch: bool = False) -> None:
        self.loader = loader
        self.decoder = decoder
        self.prefetch = prefetch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.prefetch:
            yield from self._prefetched()
            return
        for items, targets in self.loader:
            yield self.decoder(items), targets

    def _prefetched(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from concurrent.futures import ThreadPoolExecutor

        device = self.decoder.device
        side = torch.cuda.Stream(device) if device.type == "cuda" else None
        batches = iter(self.loader)

        def decode_next() -> tuple[torch.Tensor, torch.Tensor] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            items, targets = batch
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                return self.decoder(items), targets.to(device, non_blocking=True)

        with ThreadPoolExecutor(1, thread_name_prefix="device-decode") as pool:
            pending = pool.submit(decode_next)
            while (ready := pending.result()) is not None:
                pending = pool.submit(decode_next)  # the next batch decodes while this one trains
                images, targets = ready
                if side is not None:  # the step's stream waits for the decode; the memory is the step's
                    current = torch.cuda.current_stream(device)
                    current.wait_stream(side)
                    images.record_stream(current)
                    targets.record_stream(current)
                yield images, targets

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def _pixels(image: Image.Image) -> torch.Tensor:
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(image).contiguous()
