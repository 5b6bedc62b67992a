"""training/imagefolder.py: layout checks, image verification, the torch Dataset and the CLI.

Every dataset is generated in tmp_path with Pillow; nothing is read from outside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import imagefolder
from imagefolder import SPLITS, DatasetError, ImageFolderDataset, index_dataset, split_dirs_from_root

REPO = Path(__file__).resolve().parents[2]
COLOURS = [(220, 20, 20), (20, 200, 30), (25, 30, 210), (230, 220, 40)]


def noisy_image(size: tuple[int, int] = (96, 80), colour: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """A coloured image with noise, so JPEG scan data fills most of the file (truncation hits pixels)."""
    noise = Image.effect_noise(size, 40).convert("RGB")
    return Image.blend(Image.new("RGB", size, colour), noise, 0.25)


def write_image(path: Path, colour: tuple[int, int, int] = (128, 128, 128), fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noisy_image(colour=colour, **kw).save(path, format=fmt or "JPEG")
    return path


def make_dataset(
    root: Path,
    classes: list[str] = ["001.Beagle", "002.Siberian_Husky", "003.Toy_Poodle"],  # noqa: B006
    per_split: dict[str, int] | None = None,
    splits: dict[str, str] | None = None,
) -> Path:
    """ROOT/<split folder>/<class>/<n images>, each class in its own colour."""
    per_split = per_split or {"train": 3, "valid": 2, "test": 1}
    splits = splits or {s: s for s in per_split}
    for split, folder in splits.items():
        for c, name in enumerate(classes):
            for i in range(per_split[split]):
                write_image(root / folder / name / f"img_{i:02d}.jpg", COLOURS[c % len(COLOURS)])
    return root


def problems_of(excinfo: pytest.ExceptionInfo[DatasetError]) -> str:
    return str(excinfo.value)


# --- valid datasets -------------------------------------------------------------------------


def test_prefixed_folders_index_with_stripped_labels_order_and_counts(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    index = index_dataset(split_dirs_from_root(root))

    assert index.class_dirs == ["001.Beagle", "002.Siberian_Husky", "003.Toy_Poodle"]
    assert index.labels == ["Beagle", "Siberian_Husky", "Toy_Poodle"]
    assert index.num_classes == 3
    assert list(index.splits) == list(SPLITS)
    assert index.counts() == {
        "train": {"Beagle": 3, "Siberian_Husky": 3, "Toy_Poodle": 3},
        "valid": {"Beagle": 2, "Siberian_Husky": 2, "Toy_Poodle": 2},
        "test": {"Beagle": 1, "Siberian_Husky": 1, "Toy_Poodle": 1},
    }
    train = index.splits["train"]
    assert train.split == "train"
    assert train.root == root / "train"
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for path, target in train.samples:
        assert path.parent.name == index.class_dirs[target]
    assert train.skipped == []


def test_unprefixed_folders_and_any_class_count(tmp_path: Path) -> None:
    classes = ["Affenpinscher", "Akita", "Basenji", "Beagle", "Chihuahua"]
    root = make_dataset(tmp_path / "ds", classes, per_split={"train": 1, "valid": 1, "test": 1})
    index = index_dataset(split_dirs_from_root(root))
    assert index.class_dirs == classes
    assert index.labels == classes
    assert index.splits["valid"].targets == [0, 1, 2, 3, 4]


def test_classes_are_ordered_by_folder_name_so_numbering_is_kept(tmp_path: Path) -> None:
    classes = ["010.Akita", "002.Zwergpinscher", "001.Whippet"]
    root = make_dataset(tmp_path / "ds", classes, per_split={"train": 1, "valid": 1, "test": 1})
    index = index_dataset(split_dirs_from_root(root))
    assert index.class_dirs == ["001.Whippet", "002.Zwergpinscher", "010.Akita"]
    assert index.labels == ["Whippet", "Zwergpinscher", "Akita"]


@pytest.mark.parametrize(
    ("folder", "label"),
    [
        ("001.Affenpinscher", "Affenpinscher"),
        ("002.Siberian_Husky", "Siberian_Husky"),
        ("133.Yorkshire_terrier", "Yorkshire_terrier"),
        ("Affenpinscher", "Affenpinscher"),
        ("St._Bernard", "St._Bernard"),
        ("1.2.Odd", "2.Odd"),
        ("007", "007"),
        ("007.", "007."),
    ],
)
def test_label_of(folder: str, label: str) -> None:
    assert imagefolder.label_of(folder) == label


@pytest.mark.parametrize("alias", ["val", "validation", "Valid"])
def test_validation_split_aliases(tmp_path: Path, alias: str) -> None:
    root = make_dataset(tmp_path / "ds", splits={"train": "train", "valid": alias, "test": "test"})
    dirs = split_dirs_from_root(root)
    assert dirs == {"train": root / "train", "valid": root / alias, "test": root / "test"}
    index = index_dataset(dirs)
    assert index.splits["valid"].root == root / alias
    assert len(index.splits["valid"]) == 6


def test_two_validation_folders_are_ambiguous(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    make_dataset(root, per_split={"val": 1})
    with pytest.raises(DatasetError) as excinfo:
        split_dirs_from_root(root)
    assert str(root / "val") in problems_of(excinfo)
    assert str(root / "valid") in problems_of(excinfo)


def test_root_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere"):
        split_dirs_from_root(tmp_path / "nowhere")


def test_channels_style_mapping(tmp_path: Path) -> None:
    """SageMaker channels: each split its own directory whose children are class folders."""
    channels = {}
    for split, n in {"train": 2, "valid": 1, "test": 1}.items():
        channel = tmp_path / "input" / "data" / f"channel-{split}"
        for c, name in enumerate(["Beagle", "Pug"]):
            for i in range(n):
                write_image(channel / name / f"{i}.jpg", COLOURS[c])
        channels[split] = channel
    index = index_dataset(channels)
    assert index.splits["train"].root == channels["train"]
    assert index.counts()["train"] == {"Beagle": 2, "Pug": 2}

    # A training job without a test channel: test not required, so it is left out.
    index = index_dataset(
        {"train": channels["train"], "val": channels["valid"], "test": tmp_path / "absent"}, required=("train", "valid")
    )
    assert list(index.splits) == ["train", "valid"]


def test_extensions_are_case_insensitive_and_all_formats_decode(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["Beagle"], per_split={"train": 0, "valid": 1, "test": 1})
    folder = root / "train" / "Beagle"
    formats = {"a.JPG": "JPEG", "b.jpeg": "JPEG", "c.PNG": "PNG", "d.webp": "WEBP", "e.bmp": "BMP", "f.GIF": "GIF"}
    formats |= {"g.tif": "TIFF", "h.TIFF": "TIFF"}
    for name, fmt in formats.items():
        write_image(folder / name, fmt=fmt)
    index = index_dataset(split_dirs_from_root(root))
    assert sorted(p.name for p, _ in index.splits["train"].samples) == sorted(formats)


def test_hidden_and_non_image_files_are_ignored_but_listed(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    beagle = root / "train" / "001.Beagle"
    (beagle / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (beagle / "._img_00.jpg").write_bytes(b"\0\5\26\7AppleDouble")  # macOS resource fork: not an image
    (beagle / "notes.txt").write_text("good dogs")
    (beagle / "README").write_text("no extension")
    (beagle / "extra").mkdir()
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "labels.csv").write_text("a,b")
    (root / ".DS_Store").write_bytes(b"x")

    index = index_dataset(split_dirs_from_root(root))
    train = index.splits["train"]
    assert len(train) == 9
    assert index.class_dirs == ["001.Beagle", "002.Siberian_Husky", "003.Toy_Poodle"]
    reasons = {path.name: reason for path, reason in train.skipped}
    assert reasons[".DS_Store"] == imagefolder.HIDDEN
    assert reasons["._img_00.jpg"] == imagefolder.HIDDEN
    assert reasons[".ipynb_checkpoints"] == imagefolder.HIDDEN
    assert reasons["notes.txt"].startswith(imagefolder.NOT_AN_IMAGE)
    assert reasons["README"].startswith(imagefolder.NOT_AN_IMAGE)
    assert reasons["extra"] == imagefolder.SUBDIRECTORY
    assert reasons["labels.csv"] == imagefolder.OUTSIDE_CLASS
    report = index.report()
    assert "skipped: 7 files" in report
    assert str(beagle / "notes.txt") in report


def test_symlinked_files_and_class_folders_are_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    root = make_dataset(tmp_path / "ds")
    target = write_image(elsewhere / "pic.jpg")
    (root / "train" / "001.Beagle" / "linked.jpg").symlink_to(target)
    for i in range(2):
        write_image(elsewhere / "Corgi" / f"{i}.jpg")
    for split in SPLITS:
        (root / split / "004.Corgi").symlink_to(elsewhere / "Corgi", target_is_directory=True)

    index = index_dataset(split_dirs_from_root(root))
    assert index.labels[-1] == "Corgi"
    assert index.counts()["train"] == {"Beagle": 4, "Siberian_Husky": 3, "Toy_Poodle": 3, "Corgi": 2}


# --- layout problems --------------------------------------------------------------------------


def test_missing_required_split(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", per_split={"train": 1, "valid": 1})
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root))
    assert "'test'" in problems_of(excinfo)
    assert str(root / "test") in problems_of(excinfo)
    assert excinfo.value.problems == [f"split 'test': directory does not exist: {root / 'test'}"]
    # not required: fine
    assert list(index_dataset(split_dirs_from_root(root), required=("train", "valid")).splits) == ["train", "valid"]


def test_required_split_not_in_mapping(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="split 'test': no directory given"):
        index_dataset({"train": root / "train", "valid": root / "valid"})


def test_split_that_is_a_file(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", per_split={"train": 1, "valid": 1})
    (root / "test").write_text("not a folder")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset({s: root / s for s in SPLITS})
    assert f"not a directory: {root / 'test'}" in problems_of(excinfo)


def test_split_without_class_folders(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", per_split={"train": 1, "valid": 1})
    write_image(root / "test" / "loose.jpg")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root))
    message = problems_of(excinfo)
    assert f"no class folders in {root / 'test'}" in message
    assert "1 image files lie directly in it" in message


def test_empty_class_folder(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "valid" / "004.Corgi").mkdir()
    (root / "valid" / "004.Corgi" / "notes.txt").write_text("todo")
    for split in ("train", "test"):
        write_image(root / split / "004.Corgi" / "a.jpg")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root))
    assert excinfo.value.problems == [f"class folder has no images: {root / 'valid' / '004.Corgi'}"]


def test_classes_differing_between_splits_name_the_classes_and_splits(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    write_image(root / "train" / "004.Corgi" / "a.jpg")
    write_image(root / "test" / "005.Pug" / "a.jpg")
    write_image(root / "train" / "005.Pug" / "a.jpg")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root))
    problems = excinfo.value.problems
    assert len(problems) == 2
    valid_problem = next(p for p in problems if "'valid'" in p)
    test_problem = next(p for p in problems if "'test'" in p)
    assert "004.Corgi, 005.Pug" in valid_problem
    assert str(root / "valid") in valid_problem
    assert "004.Corgi" in test_problem
    assert "005.Pug" not in test_problem


def test_duplicate_labels_after_stripping_prefixes(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["001.Beagle", "002.Pug", "Beagle"])
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root))
    assert excinfo.value.problems[0].startswith("label 'Beagle' comes from 2 class folders: 001.Beagle, Beagle")
    assert str(root / "train") in excinfo.value.problems[0]


def test_every_problem_is_reported_in_one_error(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", per_split={"train": 2, "valid": 1})  # no test split
    (root / "valid" / "002.Siberian_Husky" / "img_00.jpg").unlink()  # empty class
    write_image(root / "train" / "Beagle" / "a.jpg")  # duplicate label, and missing from valid
    (root / "train" / "001.Beagle" / "broken.jpg").write_bytes(b"this is text, not a JPEG\n")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root))
    message = problems_of(excinfo)
    assert message.startswith("dataset has 5 problems:\n")
    assert str(root / "test") in message
    assert f"no images: {root / 'valid' / '002.Siberian_Husky'}" in message
    assert "label 'Beagle' comes from 2 class folders" in message
    assert "split 'valid' lacks 1 class folder(s) other splits have: Beagle" in message
    assert str(root / "train" / "001.Beagle" / "broken.jpg") in message
    assert len(message.splitlines()) == 6  # heading + one line per problem


# --- bad images -----------------------------------------------------------------------------


def corrupt(folder: Path) -> dict[str, Path]:
    good = (folder / "img_00.jpg").read_bytes()
    files = {
        "text": folder / "text.jpg",
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.png",
    }
    files["text"].write_bytes(b"this is a text file that somebody named photo.jpg\n")
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["empty"].write_bytes(b"")
    return files


def test_corrupt_images_are_reported_with_reasons(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    bad = corrupt(root / "train" / "002.Siberian_Husky")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root), workers=2)
    problems = excinfo.value.problems
    assert len(problems) == 3
    for path in bad.values():
        assert any(p.startswith(f"bad image {path}: ") for p in problems), path
    assert any("0 bytes" in p for p in problems)


def test_truncated_jpeg_is_caught_despite_draft_decoding(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    whole = write_image(folder / "whole.jpg", size=(640, 480)).read_bytes()
    assert imagefolder._decode_problem(folder / "whole.jpg", None) is None
    for keep in (0.3, 0.7, 0.95):
        cut = folder / f"cut{keep}.jpg"
        cut.write_bytes(whole[: int(len(whole) * keep)])
        assert imagefolder._decode_problem(cut, None) is not None, keep


def test_skip_bad_images_drops_and_counts_them(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    bad = corrupt(root / "train" / "002.Siberian_Husky")
    index = index_dataset(split_dirs_from_root(root), skip_bad_images=True)
    train = index.splits["train"]
    assert index.counts()["train"]["Siberian_Husky"] == 3
    assert not {p for p, _ in train.samples} & set(bad.values())
    skipped = dict(train.skipped)
    assert set(skipped) == set(bad.values())
    assert all(reason.startswith("bad image: ") for reason in skipped.values())
    report = index.report()
    assert "skipped: 3 files" in report
    assert "3  bad image" in report
    assert str(bad["truncated"]) in report


def test_skipping_that_empties_a_class_is_still_an_error(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    folder = root / "test" / "003.Toy_Poodle"
    (folder / "img_00.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root), skip_bad_images=True)
    assert excinfo.value.problems == [f"class folder has no usable images after skipping 1 bad: {folder}"]


def test_dangling_symlink_is_a_bad_image(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    link = root / "valid" / "001.Beagle" / "gone.jpg"
    link.symlink_to(tmp_path / "deleted.jpg")
    with pytest.raises(DatasetError, match="dangling symbolic link"):
        index_dataset(split_dirs_from_root(root))


def test_without_verification_only_cheap_checks_run(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    bad = corrupt(root / "train" / "001.Beagle")
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root), verify_images=False)
    assert excinfo.value.problems == [f"bad image {bad['empty']}: empty file (0 bytes)"]
    index = index_dataset(split_dirs_from_root(root), verify_images=False, skip_bad_images=True)
    assert index.counts()["train"]["Beagle"] == 5  # text.jpg and truncated.jpg not decoded, so kept


def test_max_pixels_is_passed_to_the_decoder(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["Beagle"], per_split={"train": 1, "valid": 1, "test": 1})
    big = write_image(root / "train" / "Beagle" / "big.png", fmt="PNG", size=(200, 100))
    with pytest.raises(DatasetError) as excinfo:
        index_dataset(split_dirs_from_root(root), max_pixels=96 * 80)
    [problem] = excinfo.value.problems
    assert problem.startswith(f"bad image {big}: ")
    assert "too large" in problem
    index = index_dataset(split_dirs_from_root(root), max_pixels=96 * 80, skip_bad_images=True)
    assert len(index.splits["train"]) == 1


# --- the torch Dataset and helpers ------------------------------------------------------------


def to_tensor(image: Image.Image) -> torch.Tensor:
    return (
        torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        .view(image.height, image.width, 3)
        .permute(2, 0, 1)
    )


def test_dataset_returns_transform_output_and_label(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    index = index_dataset(split_dirs_from_root(root))
    seen = []

    def transform(image: Image.Image) -> torch.Tensor:
        assert image.mode == "RGB"
        seen.append(image.size)
        return to_tensor(image).float()

    dataset = ImageFolderDataset(index.splits["train"], transform)
    assert isinstance(dataset, torch.utils.data.Dataset)
    assert len(dataset) == 9
    assert dataset.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i in range(len(dataset)):
        tensor, label = dataset[i]
        assert isinstance(tensor, torch.Tensor)
        assert tensor.shape == (3, 80, 96)
        assert label == dataset.targets[i]
        # the right file: its colour is its class's colour
        mean = tensor.mean(dim=(1, 2))
        assert torch.argmax(mean).item() == torch.argmax(torch.tensor(COLOURS[label])).item()
    assert seen == [(96, 80)] * 9

    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch.shape == (4, 3, 80, 96)
    assert labels.tolist() == [0, 0, 0, 1]


def test_dataset_draft_size_decodes_jpegs_smaller(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    index = index_dataset(split_dirs_from_root(root))
    image, _ = ImageFolderDataset(index.splits["valid"], None, draft_size=(40, 40))[0]
    assert image.size == (48, 40)  # 96x80 at JPEG scale 1/2


def test_dataset_error_names_the_file(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    index = index_dataset(split_dirs_from_root(root))
    path, _ = index.splits["test"].samples[0]
    path.write_bytes(b"changed after indexing")
    with pytest.raises(Exception) as excinfo:  # whatever the decoder raises
        ImageFolderDataset(index.splits["test"], None)[0]
    assert any(str(path) in note for note in excinfo.value.__notes__)


def test_class_counts_and_weights(tmp_path: Path) -> None:
    split = imagefolder.SplitIndex(
        "train", tmp_path, [(tmp_path / f"{i}", t) for i, t in enumerate([0, 0, 0, 1, 2, 2])]
    )
    assert imagefolder.class_counts(split, 4) == [3, 1, 2, 0]
    weights = imagefolder.class_weights(split, 4)
    assert weights[3] == 0.0
    assert weights[1] == pytest.approx(2.0)
    assert weights[0] == pytest.approx(6 / 9)
    assert weights[2] == pytest.approx(1.0)


# --- report and command line ------------------------------------------------------------------


def test_report_mentions_splits_classes_and_counts(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", per_split={"train": 4, "valid": 2, "test": 1})
    (root / "train" / "003.Toy_Poodle" / "img_03.jpg").unlink()
    report = index_dataset(split_dirs_from_root(root)).report()
    assert report.startswith("3 classes, 20 images")
    assert "train       11 images  (per class min 3, max 4)" in report
    assert str(root / "valid") in report
    assert "002 Toy_Poodle" in report
    assert "skipped: none" in report
    header = next(line for line in report.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "train", "valid", "test"]
    assert next(line for line in report.splitlines() if "Toy_Poodle" in line).split()[-3:] == ["3", "2", "1"]


def test_main_prints_report_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds")
    assert imagefolder.main([str(root), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{root}: OK" in out
    assert "3 classes, 18 images" in out
    assert "Siberian_Husky" in out


def test_main_exits_1_with_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds", per_split={"train": 1, "valid": 1})
    (root / "train" / "001.Beagle" / "img_00.jpg").write_bytes(b"nope")
    assert imagefolder.main([str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "dataset has 2 problems" in captured.err
    assert str(root / "test") in captured.err
    assert str(root / "train" / "001.Beagle" / "img_00.jpg") in captured.err
    # the same tree passes when test is not required and bad images may be skipped
    assert imagefolder.main([str(root), "--require", "train,valid", "--skip-bad-images"]) == 1  # Beagle emptied
    assert imagefolder.main([str(root), "--require", "train,valid", "--no-verify"]) == 0


def test_script_runs_as_a_file(tmp_path: Path) -> None:
    """``python training/imagefolder.py DIR``, the way the docstring says to run it (imports resolve from the file)."""
    root = make_dataset(tmp_path / "ds", per_split={"train": 1, "valid": 1, "test": 1})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ok = subprocess.run(
        [sys.executable, str(REPO / "training" / "imagefolder.py"), str(root)],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "3 classes, 9 images" in ok.stdout
