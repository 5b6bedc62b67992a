"""routing.sniff: real images made with Pillow are recognised from their first bytes; anything else is not."""

from __future__ import annotations

import io
import random
import zipfile

import pytest
from PIL import Image, features

from routing.sniff import SNIFF_BYTES, Sniffed, sniff
from tests.images import HEIC_HEADER, TEXT_AS_JPG, image_bytes

ENDPOINT_CONTENT_TYPES = {
    "image/jpeg",
    "image/png",
    "image/webp",
    "application/x-image",
    "application/octet-stream",
}


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [
        ("JPEG", "RGB", Sniffed("jpeg", "image/jpeg", True)),
        ("JPEG", "L", Sniffed("jpeg", "image/jpeg", True)),
        ("PNG", "RGB", Sniffed("png", "image/png", True)),
        ("PNG", "RGBA", Sniffed("png", "image/png", True)),
        ("PNG", "I;16", Sniffed("png", "image/png", True)),
        ("WEBP", "RGB", Sniffed("webp", "image/webp", True)),
        ("GIF", "RGB", Sniffed("gif", "application/x-image", True)),
        ("BMP", "RGB", Sniffed("bmp", "application/x-image", True)),
        ("TIFF", "RGB", Sniffed("tiff", "application/x-image", True)),
    ],
)
def test_real_images_are_recognised(fmt: str, mode: str, expected: Sniffed) -> None:
    data = image_bytes("green", fmt, mode=mode)
    with Image.open(io.BytesIO(data)) as decoded:  # the bytes really are that format and mode
        assert decoded.format == fmt
        assert decoded.mode == ("P" if fmt == "GIF" else mode)  # GIF is palette-based
    assert sniff(data[:SNIFF_BYTES]) == expected  # what the router passes: the first bytes only
    assert sniff(data) == expected
    assert expected.content_type in ENDPOINT_CONTENT_TYPES  # supported formats use a type the endpoint takes


def test_big_endian_tiff_is_recognised() -> None:
    image = Image.new("RGB", (16, 16), (1, 2, 3))
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    little = buffer.getvalue()
    assert little[:4] == b"II*\x00"
    assert sniff(b"MM\x00*" + little[4:SNIFF_BYTES]) == Sniffed("tiff", "application/x-image", True)


@pytest.mark.parametrize("colour", ["red", "green", "blue", "grey"])
def test_recognition_does_not_depend_on_content(colour: str) -> None:
    assert sniff(image_bytes(colour, "JPEG")[:SNIFF_BYTES]).format == "jpeg"
    assert sniff(image_bytes(colour, "PNG", size=(300, 7))[:SNIFF_BYTES]).format == "png"


def ftyp(major: bytes, compatible: bytes = b"mif1") -> bytes:
    """An ISO base media file header: box size, 'ftyp', major brand, minor version, compatible brands."""
    box = b"ftyp" + major + b"\x00\x00\x00\x00" + compatible + major
    return len(box).to_bytes(4, "big") + box + b"\x00" * 32


def test_heic_is_recognised_as_unsupported() -> None:
    found = sniff(HEIC_HEADER[:SNIFF_BYTES])
    assert found is not None
    assert found.format == "heic"
    assert found.supported is False


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"hevc", b"heim", b"heis"])
def test_heic_brands_are_unsupported(brand: bytes) -> None:
    found = sniff(ftyp(brand)[:SNIFF_BYTES])
    assert found == Sniffed("heic", "image/heic", False)


@pytest.mark.parametrize("brand", [b"avif", b"avis"])
def test_avif_brands_are_supported(brand: bytes) -> None:
    found = sniff(ftyp(brand)[:SNIFF_BYTES])
    assert found == Sniffed("avif", "application/x-image", True)


def test_heif_family_with_generic_major_brand_is_told_apart_by_its_compatible_brands() -> None:
    assert sniff(ftyp(b"mif1", compatible=b"avif")[:SNIFF_BYTES]) == Sniffed("avif", "application/x-image", True)
    assert sniff(ftyp(b"mif1", compatible=b"heic")[:SNIFF_BYTES]) == Sniffed("heic", "image/heic", False)


def encoded(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 32), (30, 160, 60)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        pytest.param("JPEG2000", {}, id="jp2-file"),
        pytest.param("JPEG2000", {"no_jp2": True}, id="j2k-codestream"),
        pytest.param(
            "JPEG2000", {"irreversible": True, "quality_mode": "rates", "quality_layers": [20]}, id="jp2-lossy"
        ),
        pytest.param("AVIF", {}, id="avif"),
        pytest.param("AVIF", {"quality": 50}, id="avif-lossy"),
    ],
)
def test_jpeg2000_and_avif_are_supported_and_the_endpoint_decodes_them(fmt: str, options: dict) -> None:
    """Real files made by Pillow: the router sniffs them as supported, and training/imaging.py (the endpoint's
    decoder) decodes them from the content type the router sends."""
    if not features.check("jpg_2000" if fmt == "JPEG2000" else "avif"):
        pytest.skip(f"this Pillow cannot encode {fmt}")
    import imaging
    import inference

    data = encoded(fmt, **options)
    found = sniff(data[:SNIFF_BYTES])
    assert found == Sniffed(fmt.lower(), "application/x-image", True)
    assert found.content_type in ENDPOINT_CONTENT_TYPES and found.content_type in inference.IMAGE_CONTENT_TYPES
    decoded = imaging.decode_rgb(data)
    assert decoded.size == (40, 32) and decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((20, 16))
    assert green > 120 and red < 80 and blue < 100


def test_jpeg2000_signature_and_codestream_are_recognised_from_their_first_bytes() -> None:
    assert sniff(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 20) == Sniffed("jpeg2000", "application/x-image", True)
    assert sniff(b"\xff\x4f\xff\x51\x00\x2f") == Sniffed("jpeg2000", "application/x-image", True)
    assert sniff(b"\x00\x00\x00\x0cjP  \r\n") is None  # cut short
    assert sniff(b"\xff\x4f\xff\x90") is None  # SOC without SIZ: not a codestream start


def test_heic_stays_unsupported_because_pillow_cannot_decode_it() -> None:
    import imaging

    with pytest.raises(imaging.ImageInputError):
        imaging.decode_rgb(HEIC_HEADER)
    assert sniff(HEIC_HEADER[:SNIFF_BYTES]).supported is False


@pytest.mark.parametrize("brand", [b"isom", b"mp42", b"qt  ", b"M4A "])
def test_video_and_audio_in_iso_containers_are_not_images(brand: bytes) -> None:
    assert sniff(ftyp(brand)[:SNIFF_BYTES]) is None


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("dog.txt", "woof")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(TEXT_AS_JPG, id="text"),
        pytest.param("Beagle, 3 years old — très gentil\n".encode(), id="utf8-text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n", id="pdf"),
        pytest.param(zip_bytes(), id="zip"),
        pytest.param(random.Random(1234).randbytes(64), id="random"),
        pytest.param(b"\x00" * 64, id="zeros"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(b'{"Records": []}', id="json"),
        pytest.param(b"RIFF\x24\x08\x00\x00WAVEfmt ", id="wav-riff"),
        pytest.param(b"\xff\xd8", id="jpeg-soi-only"),
        pytest.param(b"\x89PNG\r\n", id="png-cut-short"),
        pytest.param(b"GIF8", id="gif-cut-short"),
        pytest.param(b"BM\x00\x00", id="bmp-cut-short"),
        pytest.param(b"II*", id="tiff-cut-short"),
    ],
)
def test_not_an_image(head: bytes) -> None:
    assert sniff(head[:SNIFF_BYTES]) is None


def test_truncated_image_still_sniffs_by_header() -> None:
    data = image_bytes("red", "PNG")
    assert sniff(data[:8]) == Sniffed("png", "image/png", True)
    assert sniff(data[:7]) is None
