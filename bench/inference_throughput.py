"""Endpoint-side throughput of a model artifact: one image per request vs batched requests, and JPEG draft
decoding vs full decoding, on real photos, side by side.

It loads the artifact through ``inference.model_fn`` and sends the photos through ``predict_bytes`` exactly as
the endpoint does (single: the raw JPEG; batch: ``application/json`` with base64 images).

    .venv/bin/python bench/inference_throughput.py --model-dir out/train/model
    .venv/bin/python bench/inference_throughput.py --model-dir DIR --images ../shared/data/dogs-stanford3/test
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import imaging  # noqa: E402
import inference  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _phone_photo(jpeg: bytes) -> bytes:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(jpeg)) as image:
        big = image.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    out = BytesIO()
    big.save(out, "JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "dogs-stanford3" / "test")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    photos = [p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[: args.count]]
    model = inference.model_fn(str(args.model_dir))
    n = len(photos)

    def singles() -> None:
        for body in photos:
            inference.predict_bytes(model, body, "image/jpeg")

    def batches() -> None:
        for i in range(0, n, args.batch):
            payload = {"images": [base64.b64encode(b).decode() for b in photos[i : i + args.batch]]}
            inference.predict_bytes(model, json.dumps(payload).encode(), "application/json")

    draft = model.preprocessing.draft_size()
    full_decode = timed(lambda: [imaging.decode_rgb(b) for b in photos], args.repeats)
    draft_decode = timed(lambda: [imaging.decode_rgb(b, draft_size=draft) for b in photos], args.repeats)
    phone = _phone_photo(photos[0])  # a 12 MP JPEG, the size phones take
    phone_full = timed(lambda: imaging.decode_rgb(phone), args.repeats)
    phone_draft = timed(lambda: imaging.decode_rgb(phone, draft_size=draft), args.repeats)
    phone_single = timed(lambda: inference.predict_bytes(model, phone, "image/jpeg"), args.repeats)
    single = timed(singles, args.repeats)
    batched = timed(batches, args.repeats)

    sizes = [imaging.decode_rgb(b).size for b in photos]
    print(
        f"{n} photos from {args.images} ({min(w for w, _ in sizes)}-{max(w for w, _ in sizes)} px wide), "
        f"model {model.config['architecture']}, median of {args.repeats}"
    )
    print(f"{'what':<34} {'ms/image':>9} {'images/s':>9}")
    rows = [
        ("decode, full", full_decode),
        (f"decode, JPEG draft (>= {draft[0]} px)", draft_decode),
        ("predict, 1 image per request", single),
        (f"predict, {args.batch} images per request", batched),
    ]
    for name, seconds in rows:
        print(f"{name:<34} {1000 * seconds / n:>9.1f} {n / seconds:>9.1f}")
    for name, seconds in (
        ("12 MP photo: decode, full", phone_full),
        ("12 MP photo: decode, JPEG draft", phone_draft),
        ("12 MP photo: predict (draft)", phone_single),
    ):
        print(f"{name:<34} {1000 * seconds:>9.1f} {1 / seconds:>9.1f}")
    print(
        f"draft / full decode time: {draft_decode / full_decode:.2f}x on these photos, "
        f"{phone_draft / phone_full:.2f}x on a 12 MP photo"
    )
    print(f"batched / single predict time: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
