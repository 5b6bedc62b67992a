"""`breedfilter dataset export` against the local stack after real routing: images routed by the router (the
stand-in colour model behind the local endpoint) into a real sorted bucket and results table, some of them then
reviewed by a human (``review`` below does to the item and the sorted copy what the review command will), and
exported as an ImageFolder dataset with a Ground Truth manifest that training/train.py trains on."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from breedfilter import dataset_export
from breedfilter.review_decisions import Reviewer
from breedfilter.units import REPO_ROOT
from tests.image_datasets import make_dataset
from tests.images import TEXT_AS_JPG, image_bytes

SPLITS = ("train", "valid", "test")


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = dataset_export.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def route(harness: Any, names: dict[str, str]) -> None:
    """Each key into the inbox as an image of its colour (sizes differ, so every file's bytes do), then routed."""
    for n, (key, colour) in enumerate(names.items()):
        harness.put(key, image_bytes(colour, size=(40 + n, 40)))
    harness.drain()


def review(harness: Any, decisions: dict[str, str | None]) -> None:
    """A person's review of each source key, through the review command's own code (review_decisions.Reviewer):
    its label confirmed (SORTED, the copy moved to ``<label>/<source key>``) or, for None, "none of these"."""
    table = boto3.resource("dynamodb").Table(harness.stack.names.results_table)
    reviewer = Reviewer(harness.s3, table, harness.sorted, "ana@example.com")
    for source_key, label in decisions.items():
        reviewer.apply(reviewer.item(harness.item_for(source_key)["pk"]), label)


ROUTED = {
    **{f"in/red-{i}.jpg": "red" for i in range(5)},
    **{f"in/blue-{i}.jpg": "blue" for i in range(3)},
    "in/a/pup.jpg": "blue",
    "in/b/pup.jpg": "blue",
    "in/purple-0.jpg": "purple",  # below the threshold: review
    **{f"in/grey-{i}.jpg": "grey" for i in range(3)},  # none of the labels: review
}
HUMAN = {
    **{f"in/red-{i}.jpg": "red" for i in range(4)},
    "in/purple-0.jpg": "red",  # from review/ into red/
    **{f"in/blue-{i}.jpg": "blue" for i in range(3)},
    "in/a/pup.jpg": "blue",
    "in/b/pup.jpg": "blue",
    "in/grey-0.jpg": "green",  # the only green: too few for three splits
}


@pytest.fixture
def reviewed(harness: Any) -> Any:
    """10 images reviewed into red (5) and blue (5), 1 into green; 1 left model-sorted (red-4), 1 rejected by the
    reviewer, 1 still waiting for review, 1 rejected by the router."""
    route(harness, ROUTED)
    harness.put("in/notes.jpg", TEXT_AS_JPG)
    harness.drain()
    assert harness.item_for("in/purple-0.jpg")["status"] == "REVIEW"
    assert harness.item_for("in/red-4.jpg")["status"] == "SORTED"
    review(harness, {**HUMAN, "in/grey-1.jpg": None})
    return harness


def error_lines(err: str) -> int:
    """How many lines of stderr are the command's errors (training's in-process loggers may write there too)."""
    return sum(line.startswith("error:") for line in err.splitlines())


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def tree(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def source_of(harness: Any, line: dict[str, Any]) -> str:
    return next(i["source_key"] for i in harness.items() if i["pk"] == line["source-id"])


def test_exports_the_reviewed_images_as_an_imagefolder_tree_with_a_ground_truth_manifest(
    reviewed: Any, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "export"
    code, stdout, err = run(capsys, "--out", str(out))
    assert code == 0, err
    labels = json.loads((out / "labels.json").read_text())
    assert labels == ["blue", "red"]  # green left out: one image cannot fill three splits
    assert "left out label 'green': 1 image(s)" in err
    lines = manifest(out)
    assert len(lines) == 10
    assert {source_of(reviewed, line) for line in lines} == set(HUMAN) - {"in/grey-0.jpg"}
    for line in lines:
        label = line["breedfilter-label-metadata"]["class-name"]
        assert line["breedfilter-label"] == labels.index(label)
        assert line["breedfilter-label-metadata"] == {
            "class-name": label,
            "confidence": 1.0,
            "type": "groundtruth/image-classification",
            "human-annotated": "yes",
            "creation-date": next(i for i in reviewed.items() if i["pk"] == line["source-id"])["reviewed_at"],
            "job-name": "labeling-job/breedfilter-review",
        }
        item = next(i for i in reviewed.items() if i["pk"] == line["source-id"])
        assert line["source-ref"] == f"s3://{reviewed.sorted}/{label}/{item['source_key']}"
        assert line["path"] == f"{line['split']}/{label}/{Path(line['path']).name}"
        body = reviewed.s3.get_object(Bucket=reviewed.sorted, Key=f"{label}/{item['source_key']}")["Body"].read()
        assert (out / line["path"]).read_bytes() == body  # the reviewed image itself
    for label in labels:  # five images each: at least one in every split
        assert {line["split"] for line in lines if line["breedfilter-label-metadata"]["class-name"] == label} == set(
            SPLITS
        )
    assert tree(out) == sorted(["labels.json", "manifest.jsonl", *(line["path"] for line in lines)])
    pups = sorted(Path(line["path"]).name for line in lines if "pup" in line["path"])
    assert len(pups) == 2 and "pup.jpg" in pups and pups[0] != pups[1]  # a short hash keeps the second apart
    assert f"exported 10 images of 2 labels (10 human-reviewed, 0 model-sorted) -> {out}" in stdout
    assert "skipped 1: 1 label with under 3 images" in stdout

    code, stdout, _ = run(capsys, "--out", str(out), "--include-model-sorted")  # an earlier export is replaced
    assert code == 0
    lines = manifest(out)
    model = [line for line in lines if source_of(reviewed, line) == "in/red-4.jpg"]
    assert len(lines) == 11 and len(model) == 1
    metadata = model[0]["breedfilter-label-metadata"]
    item = reviewed.item_for("in/red-4.jpg")
    assert metadata["human-annotated"] == "no" and metadata["creation-date"] == item["decided_at"]
    assert metadata["confidence"] == pytest.approx(float(item["confidence"]))
    assert "(10 human-reviewed, 1 model-sorted)" in stdout
    assert tree(out) == sorted(["labels.json", "manifest.jsonl", *(line["path"] for line in lines)])


def test_an_image_keeps_its_split_when_more_are_reviewed(reviewed: Any, tmp_path: Path, capsys: Any) -> None:
    assert run(capsys, "--out", str(tmp_path / "first"))[0] == 0
    more = {f"in/more/red-{i}.jpg": "red" for i in range(4)} | {f"in/more/blue-{i}.jpg": "blue" for i in range(4)}
    route(reviewed, more)
    review(reviewed, more)
    assert run(capsys, "--out", str(tmp_path / "second"))[0] == 0
    first = {line["source-id"]: line for line in manifest(tmp_path / "first")}
    second = {line["source-id"]: line for line in manifest(tmp_path / "second")}
    assert len(second) == len(first) + len(more) and set(first) <= set(second)
    fractions = dataset_export.DEFAULT_SPLIT
    for pk, line in first.items():
        if line["split"] == dataset_export.hashed_split(0, pk, fractions):  # not moved to fill a split
            assert second[pk]["split"] == line["split"] and second[pk]["path"] == line["path"]
    # a re-run of the same table gives the same dataset; another seed another assignment
    assert run(capsys, "--out", str(tmp_path / "again"))[0] == 0
    assert manifest(tmp_path / "again") == manifest(tmp_path / "second")
    assert run(capsys, "--out", str(tmp_path / "seeded"), "--seed", "7")[0] == 0
    seeded = {line["source-id"]: line["split"] for line in manifest(tmp_path / "seeded")}
    assert seeded != {pk: line["split"] for pk, line in second.items()}


def test_split_assignment_is_stable_and_fills_every_split_of_a_label() -> None:
    def images(label: str, count: int, start: int = 0) -> list[dataset_export.Image]:
        return [
            dataset_export.Image(f"s3://in/{label}-{i}.jpg#e", label, "b", f"{label}/{i}.jpg", f"{i}.jpg", True, 1, "")
            for i in range(start, start + count)
        ]

    many = images("big", 2000)
    dataset_export.assign_splits(many, 3, (0.7, 0.2, 0.1))
    share = {s: sum(i.split == s for i in many) / len(many) for s in SPLITS}
    assert share == pytest.approx({"train": 0.7, "valid": 0.2, "test": 0.1}, abs=0.03)
    assert not any(i.moved for i in many)
    grown = images("big", 2000) + images("big", 500, start=2000)
    dataset_export.assign_splits(grown, 3, (0.7, 0.2, 0.1))
    assert [i.split for i in grown[:2000]] == [i.split for i in many]
    for count in (3, 4, 7):
        small = images("small", count)
        dataset_export.assign_splits(small, 0, (0.8, 0.1, 0.1))
        assert {i.split for i in small} == set(SPLITS)
        assert sum(i.moved for i in small) <= 2
    two = images("two", 2)
    dataset_export.assign_splits(two, 0, (0.8, 0.1, 0.1))
    assert not any(i.moved for i in two)  # under three images: the hash alone


def test_merge_keeps_numbered_class_folders_and_train_py_trains_on_the_export(
    reviewed: Any, tmp_path: Path, capsys: Any
) -> None:
    merge = make_dataset(
        tmp_path / "base",
        {"train": 3, "valid": 1, "test": 1},
        size=32,
        classes={"001.red": (200, 40, 40), "002.Yellow_Thing": (200, 200, 40)},
    )
    (merge / "valid").rename(merge / "val")  # training's alias for valid
    (merge / "train" / "001.red" / "in").mkdir()  # no clash with a reviewed red/in/... name (a folder: skipped)
    (merge / "train" / "001.red" / "red-0.jpg").write_bytes((merge / "train" / "001.red" / "000.jpg").read_bytes())
    out = tmp_path / "merged"
    code, stdout, err = run(capsys, "--out", str(out), "--merge", str(merge))
    assert code == 0, err
    labels = json.loads((out / "labels.json").read_text())
    assert labels == ["red", "Yellow_Thing", "blue"]  # class folders 001.red, 002.Yellow_Thing, blue: train.py's order
    assert sorted(p.name for p in (out / "train").iterdir()) == ["001.red", "002.Yellow_Thing", "blue"]
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.jsonl", "test", "train", "valid"]
    assert len(list((out / "train" / "002.Yellow_Thing").iterdir())) == 3  # copied in
    assert (out / "valid" / "002.Yellow_Thing" / "000.jpg").read_bytes() == (
        merge / "val" / "002.Yellow_Thing" / "000.jpg"
    ).read_bytes()
    lines = manifest(out)
    assert len(lines) == 10  # the manifest lists the reviewed images only
    for line in lines:
        label = line["breedfilter-label-metadata"]["class-name"]
        folder = {"red": "001.red", "blue": "blue"}[label]
        assert line["breedfilter-label"] == labels.index(label) and line["path"].split("/")[1] == folder
        assert (out / line["path"]).is_file()
    reviewed_red = next(line for line in lines if source_of(reviewed, line) == "in/red-0.jpg")
    name = Path(reviewed_red["path"]).name  # the merged dataset has a red-0.jpg: the reviewed one gets a hash
    assert name.startswith("red-0-") and name.endswith(".jpg") and len(name) == len("red-0-12345678.jpg")
    red_in_train = sum(line["path"].startswith("train/001.red/") for line in lines)
    assert len(list((out / "train" / "001.red").iterdir())) == 4 + red_in_train  # 3 + red-0.jpg merged, no in/
    assert "merged first: 11 images of 2 classes (train 7, valid 2, test 2); 3 classes in all" in stdout

    import train  # training/ is on the path, as on SageMaker

    run_dir = tmp_path / "run"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # train.main configures logging as a script does: give the process's back afterwards
        summary = train.main(
            [
                "--data", str(out), "--model", "timm/test_efficientnet", "--weights", "none", "--image-size", "32",
                "--num-workers", "0", "--epochs", "1", "--unfreeze-epoch", "0",
                "--model-dir", str(run_dir / "model"), "--output-data-dir", str(run_dir / "output"),
                "--checkpoint-dir", str(run_dir / "ckpt"), "--tensorboard-dir", "none",
            ]
        )  # fmt: skip
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert json.loads((run_dir / "model" / "labels.json").read_text()) == labels
    assert summary


def test_an_object_deleted_since_is_skipped_and_reported(reviewed: Any, tmp_path: Path, capsys: Any) -> None:
    reviewed.s3.delete_object(Bucket=reviewed.sorted, Key="blue/in/blue-1.jpg")
    code, stdout, err = run(capsys, "--out", str(tmp_path / "out"))
    assert code == 0
    assert f"skipped s3://{reviewed.sorted}/blue/in/blue-1.jpg (blue): the object is gone" in err
    assert "exported 9 images of 2 labels" in stdout and "1 object gone" in stdout
    assert "in/blue-1.jpg" not in {source_of(reviewed, line) for line in manifest(tmp_path / "out")}


def test_a_dry_run_prints_the_counts_and_writes_nothing(reviewed: Any, tmp_path: Path, capsys: Any) -> None:
    reviewed.s3.create_bucket(Bucket="training-data")
    for out in (str(tmp_path / "out"), "s3://training-data/reviewed"):
        code, stdout, _ = run(capsys, "--out", out, "--dry-run")
        assert code == 0
        assert f"dry run: would export 10 images of 2 labels (10 human-reviewed, 0 model-sorted) -> {out}" in stdout
        rows = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.startswith("  ")}
        assert rows["label"] == list(SPLITS)
        assert sum(map(int, rows["red"])) == 5 and all(int(n) >= 1 for n in rows["red"] + rows["blue"])
        assert "nothing was written (dry run)" in stdout
    assert list(tmp_path.iterdir()) == []
    assert reviewed.keys("training-data") == []


def test_bad_input_is_one_line_and_exit_2(reviewed: Any, tmp_path: Path, capsys: Any) -> None:
    out = str(tmp_path / "out")
    for split, said in [
        ("0.8,0.3,0.1", "sum to 1"),
        ("1,0,0", "above 0"),
        ("0.5,0.5", "3 fractions"),
        ("a,b,c", "three numbers"),
    ]:
        code, _, err = run(capsys, "--out", out, "--split", split)
        assert code == 2 and err.startswith(f"error: --split {split!r}") and said in err and error_lines(err) == 1
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "dog.jpg").write_bytes(image_bytes("red"))
    code, _, err = run(capsys, "--out", out, "--merge", str(tmp_path / "flat"))
    assert code == 2 and "is not an ImageFolder dataset" in err and error_lines(err) == 1
    code, _, err = run(capsys, "--out", out, "--merge", str(tmp_path / "nowhere"))
    assert code == 2 and "no such folder" in err
    code, _, err = run(capsys, "--out", str(tmp_path / "flat"))
    assert code == 2 and "not empty and holds no earlier export" in err
    code, _, err = run(capsys, "--out", out, "--table", "no-such-table")
    assert code == 2 and "table no-such-table" in err and "not found" in err and error_lines(err) == 1
    code, _, err = run(capsys, "--out", "s3://Bad_Bucket/x")
    assert code == 2 and "not a valid S3 bucket name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat"]


def test_no_reviewed_images_says_how_to_review(harness: Any, tmp_path: Path, capsys: Any) -> None:
    route(harness, {"in/red-0.jpg": "red", "in/grey-0.jpg": "grey"})
    code, _, err = run(capsys, "--out", str(tmp_path / "out"))
    assert code == 2 and error_lines(err) == 1
    assert "no human-reviewed images" in err and "1 model-sorted" in err and "breedfilter review" in err


def test_an_s3_destination_gets_the_same_tree(reviewed: Any, tmp_path: Path, capsys: Any) -> None:
    reviewed.s3.create_bucket(Bucket="training-data")
    code, stdout, err = run(capsys, "--out", "s3://training-data/datasets/reviewed")
    assert code == 0, err
    assert "-> s3://training-data/datasets/reviewed" in stdout
    assert "next: breedfilter train --data s3://training-data/datasets/reviewed" in stdout
    assert run(capsys, "--out", str(tmp_path / "local"))[0] == 0
    keys = reviewed.keys("training-data")
    assert keys == [f"datasets/reviewed/{path}" for path in tree(tmp_path / "local")]
    body = reviewed.s3.get_object(Bucket="training-data", Key="datasets/reviewed/manifest.jsonl")["Body"].read()
    assert body == (tmp_path / "local" / "manifest.jsonl").read_bytes()
    code, stdout, _ = run(capsys, "--out", "s3://training-data/datasets/reviewed")  # again: nothing changed
    assert code == 0 and "uploaded 0 files" in stdout


def test_python_m_runs_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "breedfilter.dataset_export", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--include-model-sorted" in done.stdout and "--merge" in done.stdout
