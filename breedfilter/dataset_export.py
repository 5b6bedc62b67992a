"""``breedfilter dataset export``: human-reviewed images from the results table back into a training dataset.

    breedfilter dataset export --out DIR|s3://BUCKET/PREFIX [--merge DIR] [--split 0.8,0.1,0.1] [--seed 0]
        [--include-model-sorted] [--stack NAME | --table NAME] [--region R] [--dry-run]
    python -m breedfilter.dataset_export --out DIR ...          # the same, without the breedfilter command

What is exported: the results table's ``SORTED`` items whose ``label_source`` is ``human`` (a review confirmed
the label; an item without ``label_source`` was sorted by the model), read from the ``by-status`` index, not a
scan. ``--include-model-sorted`` adds the model's own SORTED items. Each image is downloaded from where its item
says it now lives (``destination_bucket``/``destination_key``); one that is gone (deleted since) is skipped with a
line on stderr and counted. The table is found as ``breedfilter results`` finds it (``--table``, ``--stack``'s
outputs, $RESULTS_TABLE, else the local twin's).

The splits: each image's split comes from a hash of (``--seed``, its source id) cut at the ``--split`` fractions
(train, valid, test; each above 0, summing to 1), so an image keeps its split when the export is run again with
more reviewed images, and no image of one source lands in two splits. A label with at least 3 exported images
gets at least one in each split: when the hash leaves a split of that label empty, the image whose hash lies
nearest that split's range moves there from the split with the most images of the label (only such moved images
may change split on a later run, as the label grows). A label with fewer than 3 exported images cannot fill
every split, and ``training/train.py`` refuses a class missing from a split, so it is left out and reported;
unless ``--merge`` brings that class, which then holds images in every split already.

What is written (an ImageFolder tree, as ``training/train.py`` reads it)::

    OUT/{train,valid,test}/<class folder>/<file>   the images
    OUT/labels.json       the labels in class-index order (class folders sorted by name, as training/imagefolder.py
                          numbers them: the sorted label list, unless --merge brings 001.-style folders)
    OUT/manifest.jsonl    one line per exported table image: SageMaker Ground Truth's augmented manifest for
                          image classification ("source-ref", "breedfilter-label" = the class index, and
                          "breedfilter-label-metadata": class-name, confidence (1.0 for a human's label, the
                          model's for a model-sorted image), type, human-annotated, creation-date (reviewed_at,
                          else decided_at), job-name), plus "split", "path" (in the tree) and "source-id" (pk)

A class folder is the label made safe as a folder name (no ``/``, control or Windows-reserved characters, no
leading dot); a file keeps its basename (given the extension of its image format when it has none that training
reads); when two in one class folder collide, the later one (by review time, then source id) gets ``-`` and a
short hash of its source id before the extension. ``--merge DIR``, an ImageFolder dataset with train/ valid/
test/ (``001.Affenpinscher``-style folder names allowed; the label drops the number, as training reads it), is
copied in first, and a reviewed image joins the class folder of its label, so numbered folders keep their names.

``--out DIR`` must be new, empty, or an earlier export (it has manifest.jsonl), which is replaced whole once
the new one is complete. ``--out s3://BUCKET/PREFIX`` builds the tree in a temporary folder and uploads it with
``breedfilter data upload``'s code (unchanged files skipped; objects already under the prefix are left there and
listed). ``--dry-run`` prints the counts per split and label (objects are checked, nothing is written).

Exit status: 0 exported (a summary on stdout); 2 bad input, one line on stderr (no table, a bad --split, --merge
not a dataset, no reviewed images: review them with ``breedfilter review``); 1 AWS refused (credentials,
access) or an upload failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

SPLITS = ("train", "valid", "test")
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
MIN_IMAGES_PER_LABEL = len(SPLITS)  # one in each split
LABEL_ATTRIBUTE = "breedfilter-label"
JOB_NAME = "labeling-job/breedfilter-review"
ANNOTATION_TYPE = "groundtruth/image-classification"
MANIFEST = "manifest.jsonl"
LABELS = "labels.json"
WORKERS = 8
# the router's sniffed formats (routing.sniff) that training/imagefolder.py reads, by the extension it wants
FORMAT_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp", "tiff": ".tiff"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}  # the object; a missing bucket stops the export
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


class ExportError(Exception):
    """The export cannot go on: one line; ``exit_code`` 2 for bad input, 1 when AWS refused."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Image:
    """One table image to export, and where it goes."""

    pk: str
    label: str
    bucket: str
    key: str
    name: str  # the file name it would keep (basename, with an image extension)
    human: bool
    confidence: float
    created: str  # reviewed_at, else decided_at
    split: str = ""
    moved: bool = False  # moved out of its hashed split so that every split of its label has an image
    folder: str = ""
    staged: Path | None = None

    @property
    def source_ref(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def path(self) -> str:
        return f"{self.split}/{self.folder}/{self.name}"


@dataclass
class Plan:
    """What the export holds: the table's images, the merged dataset's, the classes; and what it left out."""

    images: list[Image]
    classes: list[tuple[str, str]]  # (class folder, label), in class-index order
    merged: list[tuple[str, str, Path]] = field(default_factory=list)  # (split, class folder, file)
    skipped: Counter[str] = field(default_factory=Counter)  # why -> how many

    @property
    def labels(self) -> list[str]:
        return [label for _, label in self.classes]


# --- arguments -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter dataset export",
        description="Export human-reviewed images from the results table as an ImageFolder dataset for training.",
        epilog="see the module docstring (python -m pydoc breedfilter.dataset_export) for the split and manifest rules",
    )
    parser.add_argument("--out", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="where the dataset goes")
    parser.add_argument("--merge", type=Path, metavar="DIR", help="an ImageFolder dataset copied in first")
    default_split = ",".join(map(str, DEFAULT_SPLIT))
    parser.add_argument("--split", default=default_split, help=f"train,valid,test fractions (default {default_split})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stable split assignment (default 0)")
    parser.add_argument(
        "--include-model-sorted", action="store_true", help="also the images the model sorted (not reviewed)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stack", help="a deployed stack's name (reads its outputs)")
    where.add_argument("--table", help="the results table's name")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    parser.add_argument("--dry-run", action="store_true", help="print the counts per split and label; write nothing")
    return parser


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> ``(0.8, 0.1, 0.1)``: three fractions, each above 0, summing to 1."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise ExportError(f"--split {text!r}: give three numbers, train,valid,test, e.g. 0.8,0.1,0.1") from None
    if len(values) != len(SPLITS):
        raise ExportError(f"--split {text!r}: give {len(SPLITS)} fractions (train,valid,test), got {len(values)}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ExportError(f"--split {text!r}: every fraction must be above 0 (each split gets images)")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ExportError(f"--split {text!r}: the fractions must sum to 1, they sum to {sum(values):g}")
    return values  # type: ignore[return-value]


def is_s3(out: str) -> bool:
    return out.startswith("s3://")


def check_local_out(out: Path, merge: Path | None) -> None:
    """OUT is new, an empty folder or an earlier export, and neither inside --merge nor holding it."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_earlier_export(out):
        raise ExportError(
            f"--out {out}: not empty and holds no earlier export ({MANIFEST}, {LABELS}); choose a new folder"
        )
    if merge is not None:
        a, b = out.resolve(), merge.resolve()
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            raise ExportError(f"--out {out} and --merge {merge} overlap; write the export somewhere else")


def is_earlier_export(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() and (folder / LABELS).is_file()


# --- the table ---------------------------------------------------------------------------------------------


def sorted_items(dynamodb: Any, table: Any) -> list[dict[str, Any]]:
    """Every SORTED item, from the by-status index (a query, page after page)."""
    from breedfilter.results import plain_item  # the items as `breedfilter results --format json` prints them

    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("query").paginate(
        TableName=table.name,
        IndexName=table.by_status,
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "SORTED"}},
    ):
        items.extend(plain_item(item) for item in page.get("Items", []))
    return items


def is_human(item: dict[str, Any]) -> bool:
    return item.get("label_source", "model") == "human"


def select(items: list[dict[str, Any]], include_model_sorted: bool) -> list[dict[str, Any]]:
    return [i for i in items if i.get("status") == "SORTED" and (include_model_sorted or is_human(i))]


def image_of(item: dict[str, Any], image_extensions: frozenset[str]) -> Image | tuple[str, str]:
    """The item as an ``Image``, or why it cannot be exported: (what is counted, the line that says so)."""
    label, bucket, key = item.get("label"), item.get("destination_bucket"), item.get("destination_key")
    if not label or not bucket or not key:
        return "no label or destination", "its item has no label, destination_bucket or destination_key"
    name = _UNSAFE.sub("_", PurePosixPath(str(key)).name).lstrip(".")  # a hidden file is skipped by training
    if PurePosixPath(name).suffix.lower() not in image_extensions:
        extension = FORMAT_EXTENSIONS.get(str(item.get("format", "")).lower())
        if extension is None:
            return "format training cannot read", (
                f"s3://{bucket}/{key}: {item.get('format') or 'unknown'} images are not read by training/imagefolder.py"
            )
        name = f"{name or 'image'}{extension}"
    human = is_human(item)
    confidence = item.get("confidence")
    return Image(
        pk=str(item["pk"]),
        label=str(label),
        bucket=str(bucket),
        key=str(key),
        name=name,
        human=human,
        confidence=1.0 if human or not isinstance(confidence, int | float) else float(confidence),
        created=str(item.get("reviewed_at") or item.get("decided_at") or ""),
    )


# --- splits ------------------------------------------------------------------------------------------------


def hashed_fraction(seed: int, pk: str) -> float:
    """A number in [0, 1) fixed by (seed, pk): where the image falls along the split fractions."""
    digest = hashlib.sha256(f"{seed}\0{pk}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_ranges(fractions: Sequence[float]) -> dict[str, tuple[float, float]]:
    ranges, low = {}, 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        ranges[name] = (low, low + fraction)
        low += fraction
    ranges[SPLITS[-1]] = (ranges[SPLITS[-1]][0], 1.0)  # no gap from rounding at the top
    return ranges


def hashed_split(seed: int, pk: str, fractions: Sequence[float]) -> str:
    """The split an image gets from its hash alone (before any move that fills a label's empty split)."""
    u = hashed_fraction(seed, pk)
    for name, (_, high) in split_ranges(fractions).items():
        if u < high:
            return name
    return SPLITS[-1]


def assign_splits(images: list[Image], seed: int, fractions: Sequence[float]) -> None:
    """Each image's hashed split; then, per label of at least 3 images, fill each empty split (module docstring)."""
    ranges = split_ranges(fractions)
    by_label: dict[str, list[Image]] = defaultdict(list)
    for image in images:
        image.split, image.moved = hashed_split(seed, image.pk, fractions), False
        by_label[image.label].append(image)
    for group in by_label.values():
        if len(group) < len(SPLITS):
            continue
        for empty in SPLITS:
            members = {name: [i for i in group if i.split == name] for name in SPLITS}
            if members[empty]:
                continue
            donor = max(SPLITS, key=lambda name: (len(members[name]), -SPLITS.index(name)))
            low, high = ranges[empty]

            def distance(image: Image, low: float = low, high: float = high) -> tuple[float, str]:
                u = hashed_fraction(seed, image.pk)
                return (low - u if u < low else u - high if u >= high else 0.0), image.pk

            chosen = min(members[donor], key=distance)
            chosen.split, chosen.moved = empty, True


# --- classes and names ---------------------------------------------------------------------------------------


def folder_name(label: str, label_of: Any) -> str:
    """The label as a class folder name that training reads back as the same label where it can."""
    name = _UNSAFE.sub("_", label).strip().lstrip(".").rstrip(". ") or "_"
    if label_of(name) != name:  # "101.Dalmatians" would lose its number: "0.101.Dalmatians" reads back whole
        name = f"0.{name}"
    return name


def plan_classes(images: list[Image], merged_classes: list[str], label_of: Any) -> list[tuple[str, str]]:
    """Class folders and labels: the merged dataset's, then one for each new label; sets each image's folder."""
    folder_of = {label_of(folder): folder for folder in merged_classes}
    used = {folder.casefold() for folder in merged_classes}
    for label in sorted({image.label for image in images} - set(folder_of)):
        folder = folder_name(label, label_of)
        if folder.casefold() in used:  # two labels made the same name ("a/b", "a_b")
            folder = f"{folder}-{hashlib.sha256(label.encode()).hexdigest()[:6]}"
        folder_of[label] = folder
        used.add(folder.casefold())
    for image in images:
        image.folder = folder_of[image.label]
    labels = {folder: label for label, folder in folder_of.items()}
    return [(folder, labels[folder]) for folder in sorted(labels)]  # training/imagefolder.py's class order


def name_files(images: list[Image], merged: list[tuple[str, str, Path]]) -> None:
    """Unique names per class folder (across splits): the basename, or with a short hash of the source id."""
    taken: dict[str, set[str]] = defaultdict(set)
    for _, folder, path in merged:
        taken[folder].add(path.name.casefold())
    for image in sorted(images, key=lambda i: (i.created, i.pk)):
        if image.name.casefold() in taken[image.folder]:
            stem, suffix = PurePosixPath(image.name).stem, PurePosixPath(image.name).suffix
            image.name = f"{stem}-{hashlib.sha256(image.pk.encode()).hexdigest()[:8]}{suffix}"
        taken[image.folder].add(image.name.casefold())


def read_merge(merge: Path, imagefolder: ModuleType) -> tuple[list[str], list[tuple[str, str, Path]]]:
    """The merged dataset's class folders and files: ``(split, class folder, path)``; ExportError if none."""
    if not merge.is_dir():
        raise ExportError(f"--merge {merge}: no such folder")
    try:
        index = imagefolder.index_dataset(imagefolder.split_dirs_from_root(merge), required=SPLITS, verify_images=False)
    except imagefolder.DatasetError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise ExportError(
            f"--merge {merge} is not an ImageFolder dataset (train/ valid/ test/ of class folders): "
            f"{exc.problems[0]}{more}"
        ) from exc
    files = [
        (split, index.class_dirs[target], path) for split in SPLITS for path, target in index.splits[split].samples
    ]
    return list(index.class_dirs), files


# --- S3 ------------------------------------------------------------------------------------------------------


def fetch(s3: Any, images: list[Image], staging: Path | None) -> list[tuple[Image, str]]:
    """Download each image into ``staging`` (None: only check it exists); the images that are gone, and why."""
    from botocore.exceptions import ClientError

    from breedfilter.data_upload import describe_error, run_concurrently

    def one(image: Image) -> str | None:
        try:
            if staging is None:
                s3.head_object(Bucket=image.bucket, Key=image.key)
            else:
                image.staged = staging / hashlib.sha256(image.pk.encode()).hexdigest()[:24]
                s3.download_file(image.bucket, image.key, str(image.staged))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING_CODES:
                return "the object is gone (deleted since it was sorted?)"
            raise ExportError(f"cannot read {image.source_ref}: {describe_error(exc)}", exit_code=1) from exc
        return None

    reasons = run_concurrently(one, images, WORKERS)
    return [(image, reason) for image, reason in zip(images, reasons, strict=True) if reason]


# --- the plan, and writing it ------------------------------------------------------------------------------


def make_plan(
    items: list[dict[str, Any]],
    args: argparse.Namespace,
    fractions: Sequence[float],
    s3: Any,
    staging: Path | None,
    imagefolder: ModuleType,
) -> Plan:
    merged_classes, merged = read_merge(args.merge, imagefolder) if args.merge else ([], [])
    skipped: Counter[str] = Counter()
    images: list[Image] = []
    for item in select(items, args.include_model_sorted):
        image = image_of(item, imagefolder.IMAGE_EXTENSIONS)
        if isinstance(image, Image):
            images.append(image)
        else:
            print(f"skipped {item.get('pk')}: {image[1]}", file=sys.stderr)
            skipped[image[0]] += 1
    for image, reason in fetch(s3, images, staging):
        print(f"skipped {image.source_ref} ({image.label}): {reason}", file=sys.stderr)
        skipped["object gone"] += 1
        images.remove(image)
    merged_labels = {imagefolder.label_of(folder) for folder in merged_classes}
    per_label = Counter(image.label for image in images)
    for label, count in sorted(per_label.items()):
        if count < MIN_IMAGES_PER_LABEL and label not in merged_labels:
            print(
                f"left out label {label!r}: {count} image(s), fewer than one per split ({MIN_IMAGES_PER_LABEL}); "
                "training needs every class in every split (review more, or --merge a dataset that has it)",
                file=sys.stderr,
            )
            skipped[f"label with under {MIN_IMAGES_PER_LABEL} images"] += count
    images = [i for i in images if per_label[i.label] >= MIN_IMAGES_PER_LABEL or i.label in merged_labels]
    assign_splits(images, args.seed, fractions)
    classes = plan_classes(images, merged_classes, imagefolder.label_of)
    name_files(images, merged)
    return Plan(images, classes, merged, skipped)


def manifest_line(image: Image, index: int) -> dict[str, Any]:
    """One image in Ground Truth's augmented manifest format (image classification), plus split, path, source."""
    return {
        "source-ref": image.source_ref,
        LABEL_ATTRIBUTE: index,
        f"{LABEL_ATTRIBUTE}-metadata": {
            "class-name": image.label,
            "confidence": image.confidence,
            "type": ANNOTATION_TYPE,
            "human-annotated": "yes" if image.human else "no",
            "creation-date": image.created,
            "job-name": JOB_NAME,
        },
        "split": image.split,
        "path": image.path,
        "source-id": image.pk,
    }


def write_tree(plan: Plan, root: Path) -> None:
    """The merged files, the table's images (moved from staging), manifest.jsonl and labels.json under ``root``."""
    for split in SPLITS:
        for folder, _ in plan.classes:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
    for split, folder, path in plan.merged:
        shutil.copyfile(path, root / split / folder / path.name)
    index = {folder: n for n, (folder, _) in enumerate(plan.classes)}
    ordered = sorted(plan.images, key=lambda i: (SPLITS.index(i.split), i.folder, i.name))
    for image in ordered:
        assert image.staged is not None
        image.staged.replace(root / image.path)
    with (root / MANIFEST).open("w", encoding="utf-8") as manifest:
        for image in ordered:
            manifest.write(json.dumps(manifest_line(image, index[image.folder]), ensure_ascii=False) + "\n")
    (root / LABELS).write_text(json.dumps(plan.labels, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def replace_folder(built: Path, out: Path) -> None:
    """Put ``built`` at ``out``; an earlier export (or an empty folder) there goes once the new one is in place."""
    if not out.exists():
        built.replace(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    out.replace(old / "export")
    built.replace(out)
    shutil.rmtree(old, ignore_errors=True)


# --- output ----------------------------------------------------------------------------------------------------


def summary(plan: Plan, out: str, dry_run: bool) -> list[str]:
    counts = Counter((image.label, image.split) for image in plan.images)
    per_split = Counter(image.split for image in plan.images)
    humans = sum(image.human for image in plan.images)
    labels = sorted({image.label for image in plan.images})
    verb = "dry run: would export" if dry_run else "exported"
    lines = [
        f"{verb} {len(plan.images)} images of {len(labels)} labels ({humans} human-reviewed, "
        f"{len(plan.images) - humans} model-sorted) -> {out}",
        "  " + ", ".join(f"{split} {per_split[split]}" for split in SPLITS),
    ]
    if labels:
        width = max(5, *(len(label) for label in labels))
        lines.append(f"  {'label'.ljust(width)}" + "".join(f"{split:>7}" for split in SPLITS))
        lines += [f"  {label.ljust(width)}" + "".join(f"{counts[label, s]:>7}" for s in SPLITS) for label in labels]
    if plan.merged:
        merged = Counter(split for split, _, _ in plan.merged)
        lines.append(
            f"merged first: {len(plan.merged)} images of {len({f for _, f, _ in plan.merged})} classes ("
            + ", ".join(f"{split} {merged[split]}" for split in SPLITS)
            + f"); {len(plan.classes)} classes in all"
        )
    moved = sum(image.moved for image in plan.images)
    if moved:
        lines.append(f"{moved} image(s) moved from their hashed split so that each label has every split")
    total = sum(plan.skipped.values())
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(plan.skipped.items()))
    lines.append(f"skipped {total}: {reasons}" if total else "skipped 0")
    if dry_run:
        lines.append("nothing was written (dry run)")
    return lines


def no_images_message(items: list[dict[str, Any]], table: str, include_model_sorted: bool) -> str:
    model_sorted = sum(1 for item in items if not is_human(item))
    hint = "" if include_model_sorted else f" ({model_sorted} model-sorted: --include-model-sorted exports those)"
    return (
        f"no {'sorted' if include_model_sorted else 'human-reviewed'} images in table {table}{hint}; "
        "review the images the model sent to review/ with: breedfilter review"
    )


# --- command line -----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import ClientError

    from breedfilter import results, units
    from breedfilter.data_upload import UploadError, parse_destination, summary_lines, upload_directory

    fractions = parse_split(args.split)
    local = None if is_s3(args.out) else Path(args.out)
    if local is None:
        try:
            parse_destination(args.out)
        except UploadError as exc:  # a bad bucket name or prefix
            raise ExportError(f"--out: {exc}") from exc
    else:
        check_local_out(local, args.merge)
    imagefolder = units.training_module("imagefolder")
    session = boto3.Session(region_name=args.region)
    try:
        table = results.resolve_table(args, session)
    except results.QueryError as exc:
        raise ExportError(str(exc)) from exc
    try:
        items = sorted_items(session.client("dynamodb"), table)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        raise ExportError(
            f"table {table.name} (or its index {table.by_status}) not found: a deployed stack? pass --stack NAME "
            "or --table NAME; the local twin? point AWS_ENDPOINT_URL at it"
        ) from exc
    if not select(items, args.include_model_sorted):
        raise ExportError(no_images_message(items, table.name, args.include_model_sorted))
    s3 = session.client("s3")

    if args.dry_run:
        plan = make_plan(items, args, fractions, s3, None, imagefolder)
        print("\n".join(summary(plan, args.out, dry_run=True)))
        return 0

    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    # built beside OUT (one file system: it is moved into place whole) or, for S3, in a temporary folder
    build = Path(tempfile.mkdtemp(dir=local.parent if local else None, prefix=f".{local.name}.new-" if local else None))
    try:
        root, staging = build / "dataset", build / "staging"
        staging.mkdir()
        plan = make_plan(items, args, fractions, s3, staging, imagefolder)
        if not plan.images:
            raise ExportError("every selected image was skipped (see above): nothing to export")
        write_tree(plan, root)
        if local is not None:
            replace_folder(root, local)
            print("\n".join(summary(plan, str(local), dry_run=False)))
            print(f"next: python training/train.py --data {local}")
            return 0
        try:
            report = upload_directory(root, args.out, s3_client=s3)
        except UploadError as exc:
            raise ExportError(str(exc), exc.exit_code) from exc
    finally:
        shutil.rmtree(build, ignore_errors=True)
    for key, reason in report.failed.items():
        print(f"failed: {key}: {reason}", file=sys.stderr)
    print("\n".join(summary(plan, report.destination, dry_run=False)))
    print("\n".join(summary_lines(report)))  # uploaded / unchanged, and the next step
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from breedfilter.aws_hints import NO_CREDENTIALS
    from breedfilter.data_upload import describe_error

    try:
        return run(args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except NoCredentialsError:
        print(f"error: {NO_CREDENTIALS}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"error: AWS refused: {describe_error(exc)}", file=sys.stderr)
        return 1
    except (BotoCoreError, OSError) as exc:  # no endpoint; a folder that cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
