"""Tell an image from anything else by its first bytes, without decoding it (no Pillow in the Lambda).

Supported: what the endpoint decodes (training/imaging.py): JPEG, PNG, WebP, GIF, BMP, TIFF, JPEG 2000 and AVIF
(the last two sent as ``application/x-image``). HEIC is recognised but unsupported: Pillow cannot decode it.

python -m routing.sniff FILE...      # from functions/router: prints what each file is
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

SNIFF_BYTES = 32


@dataclass(frozen=True)
class Sniffed:
    format: str
    content_type: str  # what the router sends to the endpoint
    supported: bool  # the endpoint decodes it (training/imaging.py: Pillow with its bundled codecs)


_X_IMAGE = "application/x-image"


def sniff(head: bytes) -> Sniffed | None:
    """The image format of a file from its first bytes, or None when it is not a known image."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("jpeg", "image/jpeg", True)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("png", "image/png", True)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("webp", "image/webp", True)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("gif", _X_IMAGE, True)
    if head[:2] == b"BM" and _plausible_bmp(head):
        return Sniffed("bmp", _X_IMAGE, True)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("tiff", _X_IMAGE, True)
    if head.startswith(_JP2_SIGNATURE) or head.startswith(_J2K_CODESTREAM):
        return Sniffed("jpeg2000", _X_IMAGE, True)
    if head[4:8] == b"ftyp":
        # An image only if the major brand says so (videos may list "mif1" among compatible brands); the
        # compatible brands then tell AVIF from HEIC, since an AVIF may declare the generic "mif1" first.
        major = head[8:12]
        box_end = min(len(head), int.from_bytes(head[:4], "big") or len(head))
        compatible = {head[i : i + 4] for i in range(16, box_end - 3, 4)}
        if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and compatible & _AVIF_BRANDS):
            return Sniffed("avif", _X_IMAGE, True)
        if major in _HEIF_BRANDS:
            return Sniffed("heic", "image/heic", False)
    return None


# JPEG 2000: the JP2 file format's signature box (also JPX), or a raw codestream (.j2k/.j2c: SOC then SIZ).
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def _plausible_bmp(head: bytes) -> bool:
    """``BM`` alone matches text ("BMW..."): also require zero reserved bytes and a known DIB header size."""
    return len(head) >= 18 and head[6:10] == b"\0\0\0\0" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES


if __name__ == "__main__":
    for name in sys.argv[1:]:
        with Path(name).open("rb") as handle:
            found = sniff(handle.read(SNIFF_BYTES))
        print(f"{name}: {found.format if found else 'not an image'}")
