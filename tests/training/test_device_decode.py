"""--decode device (training/device_decode.py) on the CPU: which files travel undecoded, that the device stage
gives the pixels Pillow gives, that a JPEG the decoder refuses falls back or is named, and a training run with it.

    .venv/bin/python -m pytest tests/training/test_device_decode.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import device_decode
import imagefolder
import imaging
import train
from tests.image_datasets import make_dataset
from tests.support import quick_args

PRE = imaging.Preprocessing(64, 56)


def photo(width: int = 200, height: int = 150, mode: str = "RGB") -> Image.Image:
    """Smooth gradients: what resizing treats like a photo (no aliasing noise to tell decoders apart by)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 1.2) % 256, (y * 1.5) % 256, ((x + y) * 0.7) % 256], -1).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def jpeg(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, **save)
    return buffer.getvalue()


def rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[device_decode.ORIENTATION] = 6  # shown turned 90 degrees
    return jpeg(image, exif=exif.tobytes())


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "plain"),
    [
        (jpeg(photo()), True),
        (jpeg(photo(), progressive=True), True),
        (jpeg(photo(mode="L")), True),
        (jpeg(photo(mode="CMYK")), False),  # nvJPEG's colours would not be Pillow's
        (rotated(photo()), False),  # nvJPEG ignores EXIF orientation
        (png(photo()), False),
        (b"not an image", False),
    ],
    ids=["baseline", "progressive", "grey", "cmyk", "exif-rotated", "png", "text"],
)
def test_only_jpegs_nvjpeg_decodes_as_pillow_does_travel_undecoded(data: bytes, plain: bool) -> None:
    assert device_decode.plain_jpeg(data) is plain


def test_a_jpeg_over_the_pixel_cap_is_left_to_pillows_checks() -> None:
    data = jpeg(photo())
    assert device_decode.plain_jpeg(data, max_pixels=200 * 150) is True
    assert device_decode.plain_jpeg(data, max_pixels=200 * 150 - 1) is False


def folder(tmp_path: Path, files: dict[str, bytes]) -> imagefolder.SplitIndex:
    for name, data in files.items():
        path = tmp_path / "train" / "001.Thing" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return imagefolder.index_dataset({"train": tmp_path / "train"}, required=("train",), verify_images=False).splits[
        "train"
    ]


@pytest.mark.parametrize("backend", list(device_decode.BACKENDS))
def test_the_device_stage_gives_the_pixels_the_cpu_path_gives(tmp_path: Path, backend: str) -> None:
    image = photo()
    split = folder(
        tmp_path,
        {
            "a.jpg": jpeg(image),
            "b.png": png(image),
            "c.jpg": rotated(image),
            "d.jpg": jpeg(image.convert("CMYK")),
            "e.jpg": jpeg(image.convert("L")),
        },
    )
    transform = imaging.eval_transform(PRE)
    encoded = device_decode.EncodedImageFolder(split, transform, None)
    reference = imagefolder.ImageFolderDataset(split, transform, None)
    items = [encoded[i][0] for i in range(len(encoded))]
    assert [item.encoded for item in items] == [True, False, False, False, True]
    names = ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg"]
    assert all(item.source.endswith(name) for item, name in zip(items, names, strict=True))
    decoder = device_decode.DeviceDecoder(transform, torch.device("cpu"), backend)
    assert decoder.backend == backend
    batch = decoder(items)
    expected = torch.stack([reference[i][0] for i in range(len(reference))])
    assert batch.shape == expected.shape == (5, 3, 56, 56)
    assert torch.equal(batch, expected)  # same libjpeg-turbo, same transform: the same numbers
    assert decoder.fallbacks == 0


def test_draft_decoding_on_the_cpu_path_moves_pixels_only_slightly(tmp_path: Path) -> None:
    split = folder(tmp_path, {"a.jpg": jpeg(photo(400, 300))})
    transform = imaging.eval_transform(PRE)
    cpu = imagefolder.ImageFolderDataset(split, transform, PRE.draft_size())[0][0]  # decoded at 1/4 scale
    item = device_decode.EncodedImageFolder(split, transform, PRE.draft_size())[0][0]
    device = device_decode.DeviceDecoder(transform, torch.device("cpu"))([item])[0]  # full size
    assert 0 < (cpu - device).abs().mean() < 0.02  # normalized units: about half a grey level


def test_a_jpeg_the_decoder_refuses_is_decoded_by_pillow_or_named(tmp_path: Path) -> None:
    whole = jpeg(photo())
    cut = whole[: len(whole) // 2]
    split = folder(tmp_path, {"a.jpg": whole, "b.jpg": cut})
    transform = imaging.eval_transform(PRE)
    items = [device_decode.EncodedImageFolder(split, transform, None)[i][0] for i in range(2)]
    assert [item.encoded for item in items] == [True, True]  # the header is fine: the cut shows when decoding
    decoder = device_decode.DeviceDecoder(transform, torch.device("cpu"))
    with pytest.raises(imaging.ImageInputError, match=r"b\.jpg: cannot decode image") as caught:
        decoder(items)
    assert caught.value.status == 400 and decoder.fallbacks == 1
    assert decoder(items[:1]).shape == (1, 3, 56, 56)  # the good one alone still decodes on the device


def test_the_first_decoder_that_works_is_used_and_none_working_says_why() -> None:
    assert device_decode.jpeg_backend(torch.device("cpu"))[0] == "torchcodec"  # the pinned one, installed
    if torch.cuda.is_available():
        return  # the failure below needs a machine without CUDA
    with pytest.raises(RuntimeError, match=r"no JPEG decoder works on cuda: torchcodec: .+; torchvision: .+"):
        device_decode.jpeg_backend(torch.device("cuda"))


def test_the_loader_wrapper_is_a_data_loader_to_the_trainer(tmp_path: Path) -> None:
    image = photo()
    split = folder(tmp_path, {f"{i}.jpg": jpeg(image) for i in range(5)})
    dataset = device_decode.EncodedImageFolder(split, imaging.train_transform(PRE), None)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=1, collate_fn=device_decode.collate, generator=torch.Generator()
    )
    wrapped = device_decode.DeviceDecodedLoader(
        loader, device_decode.DeviceDecoder(dataset.device_transform, torch.device("cpu"))
    )
    batches = list(wrapped)
    assert len(wrapped) == 3 and wrapped.batch_size == 2 and wrapped.generator is loader.generator
    assert [images.shape[0] for images, _ in batches] == [2, 2, 1]
    assert all(images.dtype == torch.float32 and images.shape[1:] == (3, 56, 56) for images, _ in batches)
    assert all(targets.tolist() == [0] * len(targets) for _, targets in batches)


def test_prefetching_yields_the_same_batches_stops_early_and_raises_what_the_decode_raised(tmp_path: Path) -> None:
    image = photo()
    files = {f"{i}.jpg": jpeg(photo(200 + i, 150)) for i in range(7)}
    split = folder(tmp_path, files)
    transform = imaging.eval_transform(PRE)  # no randomness: both orders of work give the same numbers
    dataset = device_decode.EncodedImageFolder(split, transform, None)

    def loader(prefetch: bool) -> device_decode.DeviceDecodedLoader:
        batches = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=device_decode.collate)
        return device_decode.DeviceDecodedLoader(
            batches, device_decode.DeviceDecoder(transform, torch.device("cpu")), prefetch=prefetch
        )

    serial, ahead = list(loader(False)), list(loader(True))
    assert [images.shape[0] for images, _ in ahead] == [2, 2, 2, 1]
    assert all(torch.equal(a, b) and torch.equal(s, t) for (a, s), (b, t) in zip(serial, ahead, strict=True))
    for step, _ in enumerate(loader(True)):  # the trainer's --max-steps-per-epoch cut: no hang, no error
        if step == 1:
            break
    (tmp_path / "train" / "001.Thing" / "3.jpg").write_bytes(jpeg(image)[:500])  # cut: the second batch fails
    with pytest.raises(imaging.ImageInputError, match=r"3\.jpg"):
        list(loader(True))


def test_a_run_decoding_on_the_device_learns_and_says_so(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"train": 16, "valid": 8, "test": 8}, size=40)
    summary = train.main(quick_args(data, tmp_path / "out", "--epochs", "4", "--decode", "device"))
    history = summary["history"]
    assert summary["decode"] == {"where": "device", "backend": "torchcodec", "fallbacks": 0}
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert summary["test"]["count"] == 24 and summary["best_valid_accuracy"] >= 0.8
