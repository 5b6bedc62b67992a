"""ImageFolder datasets for training: find them, check them before a GPU is spent, and read them.

Layout (DESIGN.md, "Contracts" -> Dataset layout)::

    ROOT/{train,valid,test}/<class folder>/<image files>

A class folder is named ``001.Affenpinscher`` or ``Affenpinscher``; the label is the name without
the numeric prefix (``002.Siberian_Husky`` -> ``Siberian_Husky``). Classes are ordered by folder
name, so a ``001.``-style numbering is kept; nothing assumes a number of classes. On SageMaker the
splits may arrive as separate channels (``SM_CHANNEL_TRAIN`` ...), so the API takes a mapping
split -> directory; ``split_dirs_from_root`` builds that mapping from one root (``val`` and
``validation`` are accepted for ``valid``).

``index_dataset`` scans every split, opens and fully decodes every image with ``imaging.load_rgb``
(the same decoder the endpoint uses, at reduced JPEG scale so it is quick; truncated files are still
caught) and raises one ``DatasetError`` listing every problem, one per line, before training starts.
Hidden files and non-image files are ignored and listed in ``SplitIndex.skipped``; with
``skip_bad_images=True`` so are undecodable images. ``ImageFolderDataset`` is the torch Dataset that
``train.py`` feeds its DataLoaders from.

Run ``python training/imagefolder.py DIR`` to print a validation report of a dataset (splits,
classes, counts, skipped files); it exits 0 when the dataset is usable and 1, with every problem,
when it is not (``--help`` for options). That needs only Pillow; ``ImageFolderDataset`` needs torch.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imaging
from options import SPLIT_ALIASES

try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # checking a dataset (the command line) needs only Pillow; ImageFolderDataset needs torch
    _TorchDataset = object  # type: ignore[assignment,misc]

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# JPEGs are verified decoded at 1/8 scale or so: every byte of the entropy-coded data is still read
# (a truncated file still fails), only the inverse DCT and colour conversion get cheaper.
VERIFY_DRAFT_SIZE = (64, 64)

_PREFIX = re.compile(r"^\d+\.(?=.)")
# Reasons for files left out that are not a problem (listed in the report, never an error).
HIDDEN = "hidden file"
NOT_AN_IMAGE = "not an image file"
SUBDIRECTORY = "directory inside a class folder (not scanned)"
OUTSIDE_CLASS = "not inside a class folder"


class DatasetError(ValueError):
    """The dataset cannot be trained on; ``problems`` holds every problem found, each naming its path."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        heading = f"dataset has {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([heading, *(f"  - {p}" for p in self.problems)]))


def label_of(class_dir: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``; a name without a numeric prefix is the label as is."""
    return _PREFIX.sub("", class_dir, count=1)


@dataclass
class SplitIndex:
    split: str
    root: Path
    samples: list[tuple[Path, int]] = field(default_factory=list)  # (image path, class index)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class DatasetIndex:
    class_dirs: list[str]  # folder names, sorted; position = class index
    labels: list[str]  # class_dirs without numeric prefixes, same order
    splits: dict[str, SplitIndex]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> label -> number of images, labels in class order."""
        return {
            name: dict(zip(self.labels, class_counts(split, self.num_classes), strict=True))
            for name, split in self.splits.items()
        }

    def report(self) -> str:
        counts = self.counts()
        names = list(self.splits)
        lines = [f"{self.num_classes} classes, {sum(len(s) for s in self.splits.values())} images"]
        for name in names:
            split = self.splits[name]
            per_class = counts[name].values()
            lines.append(
                f"  {name:<6} {len(split):>7} images  (per class min {min(per_class)}, max {max(per_class)})"
                f"  {split.root}"
            )
        width = max(len("class"), *(len(f"{i:03d} {label}") for i, label in enumerate(self.labels)))
        lines.append("")
        lines.append(f"{'class':<{width}}" + "".join(f"{name:>8}" for name in names))
        for index, label in enumerate(self.labels):
            row = f"{index:03d} {label}"
            lines.append(f"{row:<{width}}" + "".join(f"{counts[name][label]:>8}" for name in names))
        skipped = [(name, path, reason) for name in names for path, reason in self.splits[name].skipped]
        lines.append("")
        if not skipped:
            lines.append("skipped: none")
        else:
            lines.append(f"skipped: {len(skipped)} files")
            by_reason = Counter(_reason_kind(reason) for _, _, reason in skipped)
            lines.extend(f"  {n:>6}  {kind}" for kind, n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
            shown = 50
            lines.extend(f"  {name}: {path}: {reason}" for name, path, reason in skipped[:shown])
            if len(skipped) > shown:
                lines.append(f"  ... and {len(skipped) - shown} more")
        return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def class_counts(split: SplitIndex, num_classes: int) -> list[int]:
    """Images per class index in one split."""
    counts = [0] * num_classes
    for _, target in split.samples:
        counts[target] += 1
    return counts


def class_weights(split: SplitIndex, num_classes: int) -> list[float]:
    """Inverse-frequency weights (mean 1 over the classes present) for a weighted loss or sampler."""
    counts = class_counts(split, num_classes)
    present = [c for c in counts if c]
    if not present:
        return [1.0] * num_classes
    total = sum(present)
    return [total / (len(present) * c) if c else 0.0 for c in counts]


def _canonical_split(name: str) -> str:
    lowered = name.lower()
    return SPLIT_ALIASES.get(lowered, lowered)


def split_dirs_from_root(root: str | os.PathLike[str]) -> dict[str, Path]:
    """``{"train": ROOT/train, "valid": ROOT/valid, "test": ROOT/test}``.

    ``val`` or ``validation`` stand for ``valid`` and names match case-insensitively. A split with no
    folder still gets its canonical path, so that ``index_dataset`` names what is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError([f"dataset root is not a directory: {root}"])
    found: dict[str, list[Path]] = {}
    for child in sorted(root.iterdir()):
        split = _canonical_split(child.name)
        if split in SPLITS and child.is_dir():
            found.setdefault(split, []).append(child)
    ambiguous = [
        f"split '{split}' has {len(dirs)} folders, use one: {', '.join(str(d) for d in dirs)}"
        for split, dirs in found.items()
        if len(dirs) > 1
    ]
    if ambiguous:
        raise DatasetError(ambiguous)
    return {split: found[split][0] if split in found else root / split for split in SPLITS}


@dataclass
class _Scan:
    """One split folder as found on disk, before classes are reconciled across splits."""

    split: str
    root: Path
    classes: dict[str, list[Path]]  # class folder name -> candidate image files
    skipped: list[tuple[Path, str]]
    bad: list[tuple[Path, str]]  # found without decoding: empty files, dangling links


def _scan_split(split: str, root: Path, problems: list[str]) -> _Scan | None:
    if not root.exists():
        problems.append(f"split '{split}': directory does not exist: {root}")
        return None
    if not root.is_dir():
        problems.append(f"split '{split}': not a directory: {root}")
        return None
    scan = _Scan(split, root, {}, [], [])
    loose_images = 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            scan.skipped.append((entry, HIDDEN))
        elif entry.is_dir():
            scan.classes[entry.name] = _scan_class(entry, scan)
        else:
            scan.skipped.append((entry, OUTSIDE_CLASS))
            loose_images += entry.suffix.lower() in IMAGE_EXTENSIONS
    if not scan.classes:
        hint = f" ({loose_images} image files lie directly in it; images go in class folders)" if loose_images else ""
        problems.append(f"split '{split}': no class folders in {root}{hint}")
    return scan


def _scan_class(folder: Path, scan: _Scan) -> list[Path]:
    images = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            scan.skipped.append((entry, HIDDEN))
        elif entry.is_dir():
            scan.skipped.append((entry, SUBDIRECTORY))
        elif entry.suffix.lower() not in IMAGE_EXTENSIONS:
            scan.skipped.append((entry, f"{NOT_AN_IMAGE} ({entry.suffix or 'no extension'})"))
        elif not entry.exists():
            scan.bad.append((entry, "dangling symbolic link"))
        elif not entry.is_file():
            scan.bad.append((entry, "not a regular file"))
        elif entry.stat().st_size == 0:
            scan.bad.append((entry, "empty file (0 bytes)"))
        else:
            images.append(entry)
    return images


def _decode_problem(path: Path, max_pixels: int | None) -> str | None:
    """None if ``path`` decodes completely the way inference decodes; otherwise why it does not."""
    kwargs: dict[str, Any] = {"draft_size": VERIFY_DRAFT_SIZE}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    try:
        image = imaging.load_rgb(path, **kwargs)
        image.close()
    except imaging.ImageInputError as exc:
        reason = str(exc.reason)
        return reason.removeprefix(f"{os.fspath(path)}: ") or "cannot decode image"
    except Exception as exc:  # anything else a decoder raises also makes the file unusable
        return f"{type(exc).__name__}: {exc}"
    return None


def index_dataset(
    split_dirs: Mapping[str, str | os.PathLike[str]],
    *,
    required: Iterable[str] = SPLITS,
    verify_images: bool = True,
    skip_bad_images: bool = False,
    max_pixels: int | None = None,
    workers: int = 4,
) -> DatasetIndex:
    """Scan (and by default verify) the splits; raise one ``DatasetError`` listing every problem.

    ``split_dirs`` maps split names to folders whose children are class folders (``val`` and
    ``validation`` count as ``valid``). A split in ``required`` must be given and exist; any other
    split whose folder does not exist is left out. ``max_pixels`` is passed to ``imaging.load_rgb``
    (None: its default).
    """
    dirs: dict[str, Path] = {}
    problems: list[str] = []
    for name, path in split_dirs.items():
        split = _canonical_split(name)
        if split in dirs:
            problems.append(f"split '{split}' given twice: {dirs[split]} and {path}")
        else:
            dirs[split] = Path(path)
    required = [_canonical_split(s) for s in required]
    problems.extend(f"split '{split}': no directory given" for split in required if split not in dirs)

    scans: list[_Scan] = []
    for split, path in dirs.items():
        if split not in required and not path.exists():
            continue
        scan = _scan_split(split, path, problems)
        if scan is not None:
            scans.append(scan)

    class_dirs = sorted({name for scan in scans for name in scan.classes})
    labels = [label_of(name) for name in class_dirs]
    for label, n in Counter(labels).items():
        if n > 1:
            clash = [name for name in class_dirs if label_of(name) == label]
            problems.append(
                f"label '{label}' comes from {n} class folders: {', '.join(clash)} (in {_where(scans, clash)})"
            )
    for scan in scans:
        if not scan.classes:
            continue
        missing = [name for name in class_dirs if name not in scan.classes]
        if missing:
            problems.append(
                f"split '{scan.split}' lacks {len(missing)} class folder(s) other splits have: "
                f"{', '.join(missing)} (expected in {scan.root})"
            )

    bad = {path: reason for scan in scans for path, reason in scan.bad}
    if verify_images:
        paths = [path for scan in scans for images in scan.classes.values() for path in images]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for path, reason in zip(paths, pool.map(lambda p: _decode_problem(p, max_pixels), paths), strict=True):
                if reason is not None:
                    bad[path] = reason

    splits: dict[str, SplitIndex] = {}
    for scan in scans:
        index = SplitIndex(scan.split, scan.root, [], list(scan.skipped))
        for name, images in scan.classes.items():
            target = class_dirs.index(name)
            class_bad = [path for path in images if path in bad] + [p for p, _ in scan.bad if p.parent.name == name]
            usable = [path for path in images if path not in bad]
            index.samples.extend((path, target) for path in usable)
            if skip_bad_images:
                index.skipped.extend((path, f"bad image: {bad[path]}") for path in sorted(class_bad))
            else:
                problems.extend(f"bad image {path}: {bad[path]}" for path in sorted(class_bad))
            if not usable:
                folder = scan.root / name
                if class_bad and skip_bad_images:
                    problems.append(f"class folder has no usable images after skipping {len(class_bad)} bad: {folder}")
                elif not class_bad:
                    problems.append(f"class folder has no images: {folder}")
        index.samples.sort(key=lambda sample: (sample[1], sample[0]))
        splits[scan.split] = index

    if problems:
        raise DatasetError(problems)
    order = [s for s in SPLITS if s in splits] + sorted(s for s in splits if s not in SPLITS)
    return DatasetIndex(class_dirs, labels, {s: splits[s] for s in order})


def _where(scans: list[_Scan], class_dirs: list[str]) -> str:
    return ", ".join(sorted({str(scan.root) for scan in scans if any(name in scan.classes for name in class_dirs)}))


class ImageFolderDataset(_TorchDataset):
    """``(transform(image), class index)`` for each sample of one split, decoded by ``imaging.load_rgb``."""

    def __init__(
        self,
        split: SplitIndex,
        transform: Callable[[Any], Any] | None,
        draft_size: tuple[int, int] | None = None,
        *,
        max_pixels: int | None = None,
    ) -> None:
        self.split = split
        self.samples = list(split.samples)
        self.targets = [target for _, target in self.samples]
        self.transform = transform
        self.draft_size = draft_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        try:
            image = self.read(path)
        except Exception as exc:
            exc.add_note(f"while loading {path} ({self.split.split} sample {index})")
            raise
        if self.transform is not None:
            image = self.transform(image)
        return image, target

    def read(self, path: Path) -> Any:
        """One sample as the loader worker produces it before ``transform``: the decoded RGB image."""
        kwargs: dict[str, Any] = {"draft_size": self.draft_size}
        if self.max_pixels is not None:
            kwargs["max_pixels"] = self.max_pixels
        return imaging.load_rgb(path, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate an ImageFolder dataset (ROOT/{train,valid,test}/<class>/<images>)."
    )
    parser.add_argument("root", type=Path, help="dataset root holding train/ valid/ test/")
    parser.add_argument(
        "--require", default=",".join(SPLITS), help="comma-separated splits that must exist (default: %(default)s)"
    )
    parser.add_argument("--no-verify", action="store_true", help="do not decode the images, only look at the layout")
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="list undecodable images as skipped instead of failing"
    )
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        index = index_dataset(
            split_dirs_from_root(args.root),
            required=[s for s in args.require.split(",") if s],
            verify_images=not args.no_verify,
            skip_bad_images=args.skip_bad_images,
            workers=args.workers,
        )
    except DatasetError as exc:
        print(f"{args.root}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.root}: OK")
    print(index.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
