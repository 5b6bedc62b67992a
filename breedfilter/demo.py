"""The main job, offline and end to end: a trained model, the local twin of the stack, images in, decisions out.

1. Gets a model (``breedfilter.demo_model``): ``--model model.tar.gz|s3://…``, else trains one with
   training/train.py on ``--data DIR`` or on shapes it generates, and caches it.
2. Starts the local twin (``breedfilter.twin.local_twin``): moto with the stack from template.yaml, the model
   served through training/inference.py at a local SageMaker endpoint, the router's ``lambda_handler``.
3. Drops held-out labelled images into the inbox (the test split, known labels) plus bad input on purpose
   and one duplicate notification, routes until the queue drains, prints what happened and the accuracy
   against the known labels, copies the sorted bucket and the results to ``out/demo/``, stops everything.

    make demo                                              # or: .venv/bin/python -m breedfilter.demo
    make demo ARGS="--data DIR -- --epochs 4"              # your ImageFolder set; train.py flags after --
    make demo ARGS="--model out/train/model.tar.gz --data DIR"
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breedfilter import demo_model
from breedfilter.arguments import positive_int, split_train_flags
from breedfilter.demo_model import short_path
from breedfilter.twin.artifact_model import ArtifactModel
from breedfilter.twin.local_twin import LocalTwin, Snapshot
from breedfilter.units import REPO_ROOT, training_module

OUT_DIR = REPO_ROOT / "out" / "demo"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class DemoObject:
    key: str
    body: bytes
    label: str | None  # the known label; None for input that is bad on purpose or of none of the labels
    unknown: bool = False  # an image of none of the model's labels: it must not be sorted


def labelled_images(data: Path, per_label: int, seed: int = 7) -> list[DemoObject]:
    """Up to ``per_label`` held-out images per class: the test split (else valid), never what trained the model."""
    imagefolder = training_module("imagefolder")
    splits = imagefolder.split_dirs_from_root(data)
    split = next((splits[s] for s in ("test", "valid") if splits[s].is_dir()), None)
    if split is None:
        raise demo_model.ModelError(f"--data {data}: no test/ or valid/ split to take held-out images from")
    rng = random.Random(seed)  # noqa: S311 - which images to show, not security
    objects = []
    for class_dir in sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        label = imagefolder.label_of(class_dir.name)
        for path in rng.sample(files, min(per_label, len(files))):
            objects.append(DemoObject(f"uploads/{label}-{path.name}", path.read_bytes(), label))
    if not objects:
        raise demo_model.ModelError(f"{split}: no images in its class folders")
    return objects


def bad_objects(example: DemoObject) -> list[DemoObject]:
    """Input a real inbox receives: each must end in rejected/ with its reason, and lose nothing."""
    return [
        DemoObject("uploads/notes.jpg", b"a text file somebody named .jpg\n", None),
        DemoObject("uploads/truncated.jpg", _jpeg()[:600], None),
        DemoObject("uploads/empty.png", b"", None),
        DemoObject("uploads/phone photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), None),
        # a real image under a key with spaces and unicode (S3 notifications encode it; the router decodes it)
        DemoObject(f"uploads/my {example.label} Ünïcødé 狗{Path(example.key).suffix}", example.body, example.label),
    ]


def unknown_objects() -> list[DemoObject]:
    """Images of none of the labels (a ring, stripes): the model must not sort them under a label."""
    from PIL import Image, ImageDraw

    ring = Image.new("RGB", (96, 96), (230, 200, 200))
    draw = ImageDraw.Draw(ring)
    draw.ellipse([15, 15, 81, 81], fill=(90, 30, 30))
    draw.ellipse([32, 32, 64, 64], fill=(230, 200, 200))
    stripes = Image.new("RGB", (96, 96), (230, 230, 230))
    draw = ImageDraw.Draw(stripes)
    for x in range(0, 96, 16):
        draw.rectangle([x, 0, x + 7, 95], fill=(30, 30, 30))
    objects = []
    for name, image in (("ring", ring), ("stripes", stripes)):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        objects.append(DemoObject(f"uploads/none-of-the-labels-{name}.jpg", buffer.getvalue(), None, unknown=True))
    return objects


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (210, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def run(args: argparse.Namespace, train_flags: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    model = demo_model.obtain(args.model, args.data, train_flags, retrain=args.retrain)
    print(f"model: {model.origin}")
    predictor = ArtifactModel(model.path)
    data = model.data or demo_model.generated_dataset()
    good = labelled_images(data, args.per_label)
    objects = good + bad_objects(good[0]) + unknown_objects()
    model_labels = set(predictor.model.labels)
    known = {o.label for o in objects if o.label}
    if not known <= model_labels:
        print(
            f"  note: the model's labels ({', '.join(sorted(model_labels)[:6])}…) are not those of the images "
            f"({', '.join(sorted(known)[:6])}…): accuracy is not measured; pass --data with the model's dataset"
        )
    with LocalTwin(predictor, quiet_router=not args.verbose) as twin:
        summary = _route(twin, objects)
        summary["labels_match"] = known <= model_labels
        export(twin, summary["snapshot"])
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    summary["training_seconds"] = model.metrics["wall_seconds"] if model.trained_now and model.metrics else None
    summary["model_path"] = str(model.path)
    print_summary(summary, twin)
    return summary


def _route(twin: LocalTwin, objects: list[DemoObject]) -> dict[str, Any]:
    assert twin.stack is not None and twin.endpoint is not None
    names = twin.names
    identity = twin.predictor.identity  # type: ignore[attr-defined]
    print(f"local AWS (moto) at {twin.aws.url}; endpoint {names.endpoint_name} at {twin.endpoint.url}")
    print(f"  serving {identity['name']} version {identity['version']} through training/inference.py")
    for obj in objects:
        twin.drop(obj.key, obj.body)
    twin.duplicate_notification()
    bad = sum(1 for o in objects if o.label is None and not o.unknown)
    unknown = sum(1 for o in objects if o.unknown)
    print(
        f"dropped {len(objects)} objects into s3://{names.inbox_bucket}/uploads/ ({len(objects) - bad - unknown} "
        f"held-out labelled images, {bad} bad on purpose, {unknown} of none of the labels) and sent 1 duplicate "
        "notification"
    )
    report = twin.drain(max_seconds=300)
    print(
        f"router: {report.batches} batches, {report.received} messages, "
        f"{report.succeeded} succeeded, {report.failed} returned to the queue"
    )
    snapshot = twin.snapshot()
    return {**summarise(snapshot, objects), "snapshot": snapshot}


def summarise(snapshot: Snapshot, objects: list[DemoObject]) -> dict[str, Any]:
    items = snapshot.items
    truth = {o.key: o.label for o in objects}
    unknown_keys = {o.key for o in objects if o.unknown}
    sorted_items = [i for i in items if i["status"] == "SORTED" and truth.get(i["source_key"])]
    guessed = [i for i in items if i["status"] in ("SORTED", "REVIEW") and truth.get(i["source_key"])]
    return {
        "objects": len(objects),
        "items": len(items),
        "by_status": dict(Counter(item["status"] for item in items)),
        "per_label": dict(sorted(Counter(i["label"] for i in items if i["status"] == "SORTED").items())),
        "review": sorted(
            (i["source_key"], i["top_label"], float(i["confidence"]), truth.get(i["source_key"]), i.get("reason", ""))
            for i in items
            if i["status"] == "REVIEW"
        ),
        "rejected": sorted((i["source_key"], i["reason"], i["detail"]) for i in items if i["status"] == "REJECTED"),
        "unknown": sorted(
            (
                i["source_key"],
                i["status"],
                i.get("reason") or i.get("label", ""),
                i["top_label"],
                float(i["confidence"]),
            )
            for i in items
            if i["source_key"] in unknown_keys
        ),
        "accuracy_sorted": _accuracy(sorted_items, truth),
        "sorted_count": len(sorted_items),
        "accuracy_top": _accuracy(guessed, truth),
        "labelled_count": len(guessed),
        "mistakes": sorted(
            (i["source_key"], i["top_label"], truth[i["source_key"]])
            for i in sorted_items
            if i["top_label"] != truth[i["source_key"]]
        ),
        "inbox_left": snapshot.inbox,
        "queue_depth": snapshot.queue_depth,
        "dlq_depth": snapshot.dlq_depth,
        "one_copy_each": len(snapshot.sorted) == len(items) == len(objects)
        and len({i["source_key"] for i in items}) == len(objects),
    }


def _accuracy(items: list[dict[str, Any]], truth: dict[str, str | None]) -> float | None:
    if not items:
        return None
    return sum(1 for i in items if i["top_label"] == truth[i["source_key"]]) / len(items)


def export(twin: LocalTwin, snapshot: Snapshot) -> None:
    """Copy the sorted bucket and the results table out of the twin before it stops (moto keeps no disk)."""
    s3 = twin.client("s3")
    target = OUT_DIR / "sorted"
    for key in snapshot.sorted:
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(s3.get_object(Bucket=twin.names.sorted_bucket, Key=key)["Body"].read())
    (OUT_DIR / "results.json").write_text(
        json.dumps(snapshot.items, indent=2, default=str, ensure_ascii=False), encoding="utf-8"
    )


def print_summary(summary: dict[str, Any], twin: LocalTwin) -> None:
    names = twin.names
    print()
    print(
        f"{summary['objects']} objects -> {summary['items']} results items: "
        + ", ".join(f"{count} {status}" for status, count in sorted(summary["by_status"].items()))
    )
    per_label = ", ".join(f"{label} {n}" for label, n in summary["per_label"].items())
    print(f"sorted per label: {per_label or 'none (no prediction reached the confidence threshold)'}")
    if summary["labels_match"] and summary["accuracy_top"] is not None:
        sorted_part = (
            f"{summary['accuracy_sorted']:.1%} of the {summary['sorted_count']} sorted ones"
            if summary["accuracy_sorted"] is not None
            else "none was confident enough to be sorted"
        )
        print(
            f"accuracy against the known labels: top guess right for {summary['accuracy_top']:.1%} of the "
            f"{summary['labelled_count']} labelled images; {sorted_part}"
        )
        for key, guess, truth in summary["mistakes"]:
            print(f"  sorted wrongly: {key} as {guess} (it is {truth})")
    print(
        f"review ({len(summary['review'])}): below the model's threshold, or not like any of its labels "
        "(unknown_label); top guess kept"
    )
    for key, label, confidence, truth, reason in summary["review"]:
        known = f"; it is {truth}" if truth and summary["labels_match"] else ""
        print(f"  {key:38s} {reason}: top guess {label} ({confidence:.2f}{known})")
    caught = sum(1 for _, status, *_ in summary["unknown"] if status != "SORTED")
    print(f"images of none of the labels: {caught} of {len(summary['unknown'])} kept out of the label folders")
    for key, status, _, label, confidence in summary["unknown"]:
        if status == "SORTED":
            print(f"  sorted wrongly: {key} as {label} ({confidence:.2f})")
    print(f"rejected ({len(summary['rejected'])}):")
    for key, reason, detail in summary["rejected"]:
        print(f"  {key:38s} {reason}: {textwrap.shorten(detail, 72, placeholder='...')}")
    print(
        f"inbox left: {len(summary['inbox_left'])} objects; queue: {summary['queue_depth']} messages; "
        f"dead-letter queue: {summary['dlq_depth']} messages"
    )
    print(
        "exactly one sorted copy and one results item per object (the duplicate notification did no work): "
        + ("yes" if summary["one_copy_each"] else "NO")
    )
    print()
    print(
        f"where things went: s3://{names.sorted_bucket}/<label>/, review/, rejected/ ; "
        f"decisions in DynamoDB table {names.results_table}"
    )
    copied = f"{short_path(OUT_DIR / 'sorted')}/ and {short_path(OUT_DIR / 'results.json')}"
    print(f"  copied out before the twin stopped: {copied}")
    print("query further:")
    print("  .venv/bin/breedfilter local up          # keep the twin running; it prints what to export, then:")
    print("  aws s3 cp photo.jpg s3://breedfilter-inbox-local/   # routes live (or boto3 with the exports)")
    print("  .venv/bin/breedfilter results --counts  # or --status REVIEW, --label LABEL, --format csv")
    print("  .venv/bin/breedfilter review            # with the twin up: the review page, to confirm or fix images")
    print(f"  .venv/bin/breedfilter predict IMAGE... --model {short_path(Path(summary['model_path']))}")
    run_dir = Path(summary["model_path"]).parent  # a model the demo trained keeps its training run beside it
    if (run_dir / "output" / "report.html").is_file():
        print(f"  .venv/bin/breedfilter report {short_path(run_dir)}   # how training went: rules, step times, plots")
    store = run_dir / "output" / "mlflow.db"
    if store.is_file():  # train.py's embedded MLflow store: the run, its metrics, files and logged model
        print(f"  .venv/bin/mlflow ui --backend-store-uri sqlite:///{short_path(store)}   # the MLflow run")
    training = f" (training {summary['training_seconds']:.0f} s)" if summary.get("training_seconds") else ""
    print(f"demo wall time: {summary['wall_seconds']:.0f} s{training}; all local servers stopped.")
    print("next: `make test` runs every test; README.md has the cloud path (sam build / sam deploy).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m breedfilter.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--model", help="model.tar.gz (or its dir, or s3://…) to serve instead of training one")
    parser.add_argument("--data", type=Path, help="ImageFolder dataset to train on and take test images from")
    parser.add_argument("--per-label", type=positive_int, default=8, help="held-out images per label (default 8)")
    parser.add_argument("--retrain", action="store_true", help="train even if a cached model matches")
    parser.add_argument("--verbose", action="store_true", help="show the router's JSON logs and EMF metrics")
    return parser


def main(argv: list[str] | None = None) -> int:
    own, train_flags = split_train_flags(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own)
    try:
        run(args, train_flags)
    except (demo_model.ModelError, FileNotFoundError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
