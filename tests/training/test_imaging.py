"""training/imaging.py: decoding untrusted bytes to RGB, and the preprocessing shared by evaluation and inference.

Every image is made here, in memory. Run: .venv/bin/pytest tests/training/test_imaging.py
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import imaging
from imaging import ImageInputError, Preprocessing

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 30), (25, 30, 210)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decode(image: Image.Image, fmt: str = "PNG", **params) -> Image.Image:
    out = imaging.decode_rgb(encode(image, fmt, **params))
    assert out.mode == "RGB"
    assert out.size == image.size
    return out


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def close(actual, expected, tolerance: int = 3) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- modes ------------------------------------------------------------------------------------------------------


def test_mode_1_bilevel():
    image = Image.new("1", (8, 4), 0)
    image.paste(1, (4, 0, 8, 4))
    out = decode(image)
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((7, 0)) == (255, 255, 255)


def test_mode_l_grey():
    assert decode(Image.new("L", (6, 6), 77)).getpixel((3, 3)) == (77, 77, 77)


def test_mode_la_alpha_goes_onto_white():
    image = Image.new("LA", (8, 4), (0, 255))
    image.paste((0, 0), (4, 0, 8, 4))  # right half: black but fully transparent
    out = decode(image)
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((7, 0)) == (255, 255, 255)


def test_mode_p_palette():
    image = Image.new("RGB", (8, 4), RED)
    image.paste(BLUE, (4, 0, 8, 4))
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert palette.mode == "P"
    out = decode(palette)
    assert close(out.getpixel((0, 0)), RED) and close(out.getpixel((7, 0)), BLUE)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_mode_p_with_transparency_goes_onto_white(fmt):
    image = Image.new("P", (8, 4), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * 762)
    image.paste(0, (4, 0, 8, 4))  # index 0 (black) is the transparent one
    data = encode(image, fmt, transparency=0)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    out = imaging.decode_rgb(data)
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((7, 0)) == (255, 255, 255)


def test_mode_rgba_composited_on_white_not_black():
    image = Image.new("RGBA", (8, 4), (*RED, 255))
    image.paste((0, 0, 0, 0), (4, 0, 6, 4))  # transparent black
    image.paste((255, 0, 0, 128), (6, 0, 8, 4))  # half-transparent red
    out = decode(image)
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((4, 0)) == (255, 255, 255)
    assert close(out.getpixel((7, 0)), (255, 127, 127), 2)


def test_mode_pa_and_premultiplied_modes():
    pa = Image.new("PA", (4, 4), (1, 0))
    pa.putpalette([0, 0, 0, *RED] + [0] * 762)
    assert imaging.to_rgb(pa).getpixel((0, 0)) == (255, 255, 255)
    assert imaging.to_rgb(Image.new("La", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert imaging.to_rgb(Image.new("RGBa", (4, 4), (100, 0, 0, 255))).getpixel((0, 0)) == (100, 0, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_mode_cmyk(fmt):
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    data = encode(cyan, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "CMYK"
    assert close(imaging.decode_rgb(data).getpixel((8, 8)), (0, 255, 255), 4)


def test_mode_ycbcr():
    image = Image.new("RGB", (8, 8), RED).convert("YCbCr")
    data = encode(image, "TIFF")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "YCbCr"
    assert close(imaging.decode_rgb(data).getpixel((4, 4)), RED, 6)


def test_mode_lab():
    white = Image.new("LAB", (8, 8), (255, 128, 128))
    data = encode(white, "TIFF")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "LAB"
    assert close(imaging.decode_rgb(data).getpixel((4, 4)), (255, 255, 255), 2)


def test_mode_hsv():
    assert imaging.to_rgb(Image.new("HSV", (4, 4), (0, 255, 255))).getpixel((0, 0)) == (255, 0, 0)


def gradient16() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")])
def test_16_bit_gradient_spans_dark_to_bright(mode, fmt):
    values = gradient16()
    dtype = ">u2" if mode == "I;16B" else "<u2"  # (Pillow's convert("I;16B") clips, so build it from bytes)
    image = Image.frombytes(mode, (values.shape[1], values.shape[0]), values.astype(dtype).tobytes())
    data = encode(image, fmt)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == mode
    row = pixels(imaging.decode_rgb(data))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255  # not clipped to white the way a bare convert("RGB") does
    assert np.all(np.diff(row) >= 0)
    assert len(np.unique(row)) > 200
    assert abs(row[128] - 128) <= 2


def test_16_bit_constant_image_does_not_divide_by_zero():
    image = Image.fromarray(np.full((6, 6), 4000, np.uint16))
    with np.errstate(all="raise"):
        out = decode(image)
    assert len(np.unique(pixels(out))) == 1
    assert close(out.getpixel((0, 0)), (16, 16, 16), 1)  # 4000 / 65535 * 255


def test_32_bit_int_with_negatives_scaled_by_its_range():
    values = np.tile(np.linspace(-1000, 3000, 64).astype(np.int32), (4, 1))
    image = Image.fromarray(values)
    assert image.mode == "I"
    row = pixels(decode(image, "TIFF"))[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


def test_float_image_scaled_by_its_range():
    values = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (4, 1))
    values[0, 0] = np.nan
    image = Image.fromarray(values)
    assert image.mode == "F"
    out = pixels(decode(image, "TIFF"))
    assert out[1, 0, 0] == 0 and out[1, -1, 0] == 255 and abs(out[1, 32, 0] - 129) <= 2
    assert out[0, 0, 0] == 0  # NaN: the low end, not an error


def test_constant_float_image():
    with np.errstate(all="raise"):
        out = imaging.to_rgb(Image.fromarray(np.full((4, 4), 7.5, np.float32)))
    assert np.unique(pixels(out)).tolist() == [8]


# --- orientation, draft, animation ------------------------------------------------------------------------------


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))  # left half red, right half blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    out = imaging.decode_rgb(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.size == (20, 40)
    assert close(out.getpixel((10, 5)), RED, 8)  # the stored left half is now on top
    assert close(out.getpixel((10, 35)), BLUE, 8)
    assert close(out.getpixel((0, 0)), RED, 8)


def test_draft_mode_decodes_big_jpegs_smaller_but_never_below_resize():
    data = encode(Image.new("RGB", (2000, 1200), GREEN), "JPEG")
    assert imaging.decode_rgb(data).size == (2000, 1200)
    pre = Preprocessing(resize=256, crop=224)
    small = imaging.decode_rgb(data, draft_size=pre.draft_size())
    assert small.size == (500, 300)  # 1/4 scale: 1/8 would make the short side 150 < 256
    assert min(small.size) >= pre.resize
    assert close(small.getpixel((250, 150)), GREEN, 4)
    # Small enough already: no reduction.
    assert imaging.decode_rgb(data, draft_size=(1500, 1500)).size == (2000, 1200)


def test_draft_size_is_ignored_for_other_formats():
    assert imaging.decode_rgb(encode(Image.new("RGB", (600, 400)), "PNG"), draft_size=(64, 64)).size == (600, 400)


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (10, 10), colour) for colour in (RED, GREEN, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(io.BytesIO(buffer.getvalue())) as raw:
        assert raw.n_frames == 3
    out = imaging.decode_rgb(buffer.getvalue())
    assert out.mode == "RGB" and close(out.getpixel((5, 5)), RED, 4)


def test_animated_webp_gives_the_first_frame():
    frames = [Image.new("RGB", (10, 10), colour) for colour in (BLUE, RED)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert imaging.decode_rgb(buffer.getvalue()).getpixel((5, 5)) == BLUE


def test_result_is_a_plain_detached_rgb_image():
    out = imaging.decode_rgb(encode(Image.new("RGB", (8, 8), RED), "JPEG"))
    assert type(out) is Image.Image  # not a JpegImageFile holding the input
    assert out.mode == "RGB"


# --- rejections -------------------------------------------------------------------------------------------------


def test_pixel_cap_is_checked_from_the_header_before_decoding():
    whole = encode(Image.new("RGB", (3000, 2000), RED), "JPEG")
    header_only = whole[:800]  # no scan data at all: decoding it would fail with 400 instead
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(header_only, max_pixels=1_000_000)
    assert caught.value.status == 413
    assert "3000x2000" in caught.value.reason
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(header_only)
    assert caught.value.status == 400  # under the default cap it is decoded, and found truncated


def test_default_cap_value():
    assert imaging.MAX_PIXELS == 64_000_000


@pytest.mark.parametrize("pixels", [60 * 60, 100 * 100])  # over Pillow's warning limit / over its error limit
def test_pillow_decompression_bomb_guard_is_a_413(monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    side = int(pixels**0.5)
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(encode(Image.new("RGB", (side, side)), "PNG"), max_pixels=10**9)
    assert caught.value.status == 413


def test_truncated_jpeg_is_400():
    whole = encode(Image.new("RGB", (256, 256), RED), "JPEG")
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(whole[: len(whole) // 2])
    assert caught.value.status == 400
    assert "truncated" in caught.value.reason


def test_truncated_jpeg_is_caught_in_draft_mode_too():
    whole = encode(Image.effect_noise((1024, 1024), 64).convert("RGB"), "JPEG")
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(whole[: len(whole) // 2], draft_size=(64, 64))
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is a text file that somebody named photo.jpg\n",
        b"\x00" * 100,
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS would run Ghostscript: not accepted
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,
    ],
    ids=["empty", "text", "zeros", "eps", "png-signature-only"],
)
def test_not_an_image_is_400(data):
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(data)
    assert caught.value.status == 400
    assert caught.value.reason and str(caught.value) == caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_load_rgb_reads_files_and_names_them_in_errors(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(Image.new("RGB", (5, 7), GREEN), "PNG"))
    assert imaging.load_rgb(good).getpixel((0, 0)) == GREEN
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not really")
    with pytest.raises(ImageInputError, match=r"bad\.jpg") as caught:
        imaging.load_rgb(str(bad))
    assert caught.value.status == 400
    with pytest.raises(ImageInputError) as caught:
        imaging.load_rgb(good, max_pixels=10)
    assert caught.value.status == 413


# --- Preprocessing ----------------------------------------------------------------------------------------------


def test_preprocessing_round_trip_through_json():
    pre = Preprocessing(resize=292, crop=256, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1))
    data = json.loads(json.dumps(pre.to_dict()))
    assert data == {
        "resize": 292,
        "crop": 256,
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.5, 1.0],
    }
    assert Preprocessing.from_dict(data) == pre
    assert pre.draft_size() == (292, 292)
    assert Preprocessing().mean == imaging.IMAGENET_MEAN


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"resize": 0}, "resize"),
        ({"resize": True}, "resize"),
        ({"crop": 2.5}, "crop"),
        ({"crop": 300}, "must not exceed resize"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"mean": "abc"}, "mean"),
        ({"std": [0.2, 0.0, 0.2]}, "positive"),
        ({"std": [0.2, float("nan"), 0.2]}, "finite"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_preprocessing_validation(change, message):
    data = {**Preprocessing().to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        Preprocessing.from_dict(data)


def test_preprocessing_missing_key_and_not_a_mapping():
    data = Preprocessing().to_dict()
    del data["std"]
    with pytest.raises(ValueError, match=r"missing keys \['std'\]"):
        Preprocessing.from_dict(data)
    with pytest.raises(ValueError, match="mapping"):
        Preprocessing.from_dict([1, 2])


# --- transforms -------------------------------------------------------------------------------------------------


def test_eval_transform_shape_dtype_and_normalisation():
    pre = Preprocessing(resize=40, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tensor = imaging.eval_transform(pre)(Image.new("RGB", (50, 70), (204, 204, 204)))
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    assert torch.allclose(tensor, torch.full_like(tensor, 0.6), atol=1e-5)  # (204/255 - 0.5) / 0.5


def test_eval_transform_resizes_the_shorter_side_and_crops_the_centre():
    image = Image.new("RGB", (90, 30), RED)
    image.paste(GREEN, (30, 0, 60, 30))
    image.paste(BLUE, (60, 0, 90, 30))
    pre = Preprocessing(resize=20, crop=20, mean=(0, 0, 0), std=(1, 1, 1))
    tensor = imaging.eval_transform(pre)(image)
    assert tensor.shape == (3, 20, 20)  # 90x30 -> 60x20 -> centre 20x20: the green third
    centre = (tensor[:, 10, 10] * 255).round().tolist()
    assert close(centre, GREEN, 2)


@pytest.mark.parametrize("interpolation", imaging.INTERPOLATIONS)
def test_eval_transform_interpolations(interpolation):
    pre = Preprocessing(resize=36, crop=32, interpolation=interpolation)
    assert imaging.eval_transform(pre)(Image.new("RGB", (64, 48), RED)).shape == (3, 32, 32)


@pytest.mark.parametrize("augment", ["standard", "trivialaugment", "none"])
def test_train_transform_shape(augment):
    torch.manual_seed(0)
    pre = Preprocessing(resize=40, crop=32)
    image = Image.effect_noise((64, 48), 40).convert("RGB")
    tensor = imaging.train_transform(pre, augment=augment)(image)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    if augment == "none":
        assert torch.equal(tensor, imaging.eval_transform(pre)(image))


def test_train_transform_rejects_unknown_augment():
    with pytest.raises(ValueError, match="augment"):
        imaging.train_transform(Preprocessing(), augment="mixup")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_thin_strip_is_refused_before_resizing_blows_up_memory():
    # Resizing the short side of 1x8000 to 256 pixels would allocate 256x2,048,000: ~1.6 GB from 95 bytes.
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(_png(Image.new("1", (1, 8000))))
    assert caught.value.status == 400 and "20:1" in caught.value.reason
    assert imaging.decode_rgb(_png(Image.new("L", (400, 20)))).size == (400, 20)  # 20:1 is still a (wide) photo


def _progressive_jpeg(side: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", progressive=True, quality=90)
    return out.getvalue()


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    data = _progressive_jpeg()
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    bomb = data[:-2] + last_scan * 200 + b"\xff\xd9"  # each repeated scan re-processes every coefficient
    with pytest.raises(ImageInputError) as caught:
        imaging.decode_rgb(bomb)
    assert caught.value.status == 400 and "scans" in caught.value.reason
    assert imaging.decode_rgb(data).size == (64, 64)  # an ordinary progressive JPEG (about 10 scans) decodes
