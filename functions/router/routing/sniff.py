"""Tell an image from anything else by its first bytes, without decoding it (no Pillow in the Lambda).

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
    supported: bool  # the endpoint decodes it (Pillow without plugins)


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
    if head[:2] == b"BM" and len(head) >= 14:
        return Sniffed("bmp", _X_IMAGE, True)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("tiff", _X_IMAGE, True)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return Sniffed("avif", "image/avif", False)
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return Sniffed("heic", "image/heic", False)
    return None


if __name__ == "__main__":
    for name in sys.argv[1:]:
        with Path(name).open("rb") as handle:
            found = sniff(handle.read(SNIFF_BYTES))
        print(f"{name}: {found.format if found else 'not an image'}")
