"""What bf16 serving costs and gains against fp32, on a trained artifact and real photos, side by side.

Loads the artifact twice through ``inference.model_fn`` (``BREEDFILTER_PRECISION=fp32`` and ``bf16``), classifies
every photo of an ImageFolder split through ``classify_images`` in batches, and prints for each precision the
top-1 accuracy, the share of decisions (SORTED at the model's threshold, known) that change, and images/s of
the forward path, with the ratios. Results go to bench/results/serving_precision.json.

    .venv/bin/python bench/serving_precision.py --model-dir out/bench/open_set/model \
        --split out/bench/open_set/data/test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))

import imaging  # noqa: E402
import inference  # noqa: E402


def photos(split: Path, labels: tuple[str, ...]) -> list[tuple[Path, int | None]]:
    found = []
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        name = folder.name.split(".", 1)[-1] if folder.name[:1].isdigit() else folder.name
        index = labels.index(name) if name in labels else None
        found += [(path, index) for path in sorted(folder.iterdir()) if path.is_file()]
    return found


def run(model_dir: Path, items: list[tuple[Path, int | None]], precision: str, batch: int) -> dict:
    os.environ["BREEDFILTER_PRECISION"] = precision
    loaded = inference.model_fn(str(model_dir))
    images = [imaging.decode_rgb(path.read_bytes(), draft_size=loaded.decode.draft_size) for path, _ in items]
    inference.classify_images(loaded, images[:batch])  # warm-up
    started = time.perf_counter()
    answers = []
    for start in range(0, len(images), batch):
        answers += inference.classify_images(loaded, images[start : start + batch])
    seconds = time.perf_counter() - started
    labelled = [(a, index) for a, (_, index) in zip(answers, items, strict=True) if index is not None]
    correct = sum(a["predictions"][0]["index"] == index for a, index in labelled)
    return {
        "precision": precision,
        "autocast": str(loaded.autocast_dtype),
        "images": len(images),
        "accuracy": correct / max(1, len(labelled)),
        "images_per_second": len(images) / seconds,
        "answers": answers,
    }


def sorted_here(answer: dict) -> bool:
    threshold = answer["threshold"] if answer["threshold"] is not None else 0.6
    return answer["known"] and answer["predictions"][0]["probability"] >= threshold


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="an ImageFolder split: LABEL/photo.jpg")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving_precision.json")
    args = parser.parse_args()
    labels = tuple(json.loads((args.model_dir / "labels.json").read_text()))
    items = photos(args.split, labels)
    base, low = (run(args.model_dir, items, p, args.batch) for p in ("fp32", "bf16"))
    changed_top1 = sum(
        a["predictions"][0]["index"] != b["predictions"][0]["index"]
        for a, b in zip(base["answers"], low["answers"], strict=True)
    )
    changed_decision = sum(
        (sorted_here(a), a["predictions"][0]["index"]) != (sorted_here(b), b["predictions"][0]["index"])
        for a, b in zip(base["answers"], low["answers"], strict=True)
    )
    summary = {
        "model_dir": str(args.model_dir),
        "split": str(args.split),
        "cpu_bf16": inference.cpu_supports_bf16(),
        "fp32": {k: v for k, v in base.items() if k != "answers"},
        "bf16": {k: v for k, v in low.items() if k != "answers"},
        "accuracy_points_lost": round(100 * (base["accuracy"] - low["accuracy"]), 3),
        "top1_changed": changed_top1,
        "decisions_changed": changed_decision,
        "speedup": low["images_per_second"] / base["images_per_second"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{'':10}{'fp32':>10}{'bf16':>10}{'bf16/fp32':>11}")
    print(
        f"{'accuracy':10}{base['accuracy']:>10.4f}{low['accuracy']:>10.4f}{low['accuracy'] - base['accuracy']:>+11.4f}"
    )
    print(
        f"{'images/s':10}{base['images_per_second']:>10.1f}{low['images_per_second']:>10.1f}"
        f"{summary['speedup']:>10.2f}x"
    )
    print(f"{len(items)} photos; top-1 changed {changed_top1}, decisions changed {changed_decision}; {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
