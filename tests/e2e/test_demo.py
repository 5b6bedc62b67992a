"""`make demo` end to end, smaller: it trains a model with training/train.py on the set it generates, serves it
through inference.py on the local twin, routes held-out images and bad input, and stops everything it started.
A second run reuses the cached model; bad demo flags fail before anything starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from breedfilter import demo, demo_dataset, demo_model

TINY_TRAINING = ["--model", "timm/test_efficientnet", "--image-size", "32", "--epochs", "1", "--num-workers", "0"]


def child_processes() -> list[str]:
    """Live children of this process (Linux /proc), e.g. a train.py or a loader worker left behind."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(stat.parent.name)
    return found


@pytest.fixture
def demo_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "OUT_DIR", tmp_path / "demo")
    monkeypatch.setattr(demo_model, "CACHE_DIR", tmp_path / "models")
    monkeypatch.setattr(demo_model, "GENERATED_DIR", tmp_path / "generated")
    monkeypatch.setattr(demo_model, "GENERATED_COUNTS", {"train": 6, "valid": 3, "test": 3})
    return tmp_path


def run_demo(*argv: str) -> dict:
    args = demo.build_parser().parse_args(list(argv))
    return demo.run(args, TINY_TRAINING)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_demo_trains_serves_routes_everything_once_and_cleans_up(demo_dirs, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # as a user runs it: the run's own embedded store
    before = dict(os.environ)
    summary = run_demo("--per-label", "2")
    changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
    assert changed <= {"TORCHINDUCTOR_CACHE_DIR"}  # (torch's own, on import) nothing points at stopped servers
    assert child_processes() == []  # train.py and its loader workers are gone

    labelled = 2 * len(demo_dataset.CLASSES)
    # 4 bad, 1 real image under a unicode key, 2 images of none of the labels
    assert summary["objects"] == summary["items"] == labelled + 7
    assert summary["one_copy_each"] is True
    assert summary["inbox_left"] == [] and summary["queue_depth"] == 0 and summary["dlq_depth"] == 0
    reasons = {key.split("/")[-1]: reason for key, reason, _ in summary["rejected"]}
    assert reasons == {
        "notes.jpg": "not_an_image",
        "truncated.jpg": "model_rejected",
        "empty.png": "empty",
        "phone photo.heic": "unsupported_format",
    }
    assert summary["labels_match"] is True
    assert summary["labelled_count"] + summary["by_status"].get("REJECTED", 0) + 2 == summary["objects"]
    assert [key for key, *_ in summary["unknown"]] == [
        "uploads/none-of-the-labels-ring.jpg",
        "uploads/none-of-the-labels-stripes.jpg",
    ]
    assert all(status in ("SORTED", "REVIEW") for _, status, *_ in summary["unknown"])  # routed, never rejected
    assert 0.0 <= summary["accuracy_top"] <= 1.0
    assert summary["training_seconds"] is not None  # trained in this run

    out = demo_dirs / "demo"
    exported = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert sorted(i["source_key"] for i in exported) == sorted(i["source_key"] for i in summary["snapshot"].items)
    copies = [p for p in (out / "sorted").rglob("*") if p.is_file()]
    assert len(copies) == summary["objects"]
    assert (out / "sorted" / "rejected" / "uploads" / "notes.jpg").exists()
    printed = capsys.readouterr().out
    expected = (
        "model: timm/test_efficientnet trained on 3 generated shapes",
        "trained just now",
        "accuracy against the known labels",
        "exactly one sorted copy",
        "images of none of the labels: ",
        "all local servers stopped",
        "breedfilter local up",
        "# how training went",  # breedfilter report on the training run beside the model it made
        "mlflow ui --backend-store-uri sqlite:///",  # the run as MLflow recorded it
    )
    for line in expected:
        assert line in printed, line
    assert '{"_aws"' not in printed and '"level":"INFO"' not in printed  # CloudWatch's lines stay out
    assert "  epoch 1: train accuracy" in printed  # train.py's progress, one line per epoch

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been used")

    monkeypatch.setattr(demo_model, "train", no_training)
    again = run_demo("--per-label", "1")
    assert again["items"] == len(demo_dataset.CLASSES) + 7 and again["training_seconds"] is None
    assert "cached (--retrain trains again)" in capsys.readouterr().out


def test_demo_serves_a_given_artifact_without_training(demo_dirs, trained_artifact, monkeypatch, capsys):
    monkeypatch.setattr(demo_model, "train", lambda *a, **k: pytest.fail("a given model is never retrained"))
    summary = run_demo("--model", str(trained_artifact), "--per-label", "1")
    assert summary["one_copy_each"] is True and summary["dlq_depth"] == 0
    assert summary["labels_match"] is False  # its labels are colours, the images shapes: no accuracy claimed
    printed = capsys.readouterr().out
    assert "accuracy is not measured" in printed and "accuracy against the known labels" not in printed
    # an artifact that train.py wrote has its run beside it: the demo points at that run's report
    assert f"breedfilter report {trained_artifact.parent}" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "missing.tar.gz"], "no such file"),
        (["--data", "/nonexistent/dogs"], "no such directory"),
        (["--", "--epochs", "abc"], "invalid positive_int value"),
        (["--", "--model-dir", "/tmp/x"], "the demo sets this itself"),
        (["--per-label", "0"], "must be at least 1, got 0"),
    ],
)
def test_bad_demo_input_fails_at_once_with_a_reason(demo_dirs, argv, message, capsys):
    try:
        code = demo.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (demo_dirs / "models").exists()  # nothing trained


def test_failed_training_says_why_and_caches_nothing(demo_dirs):
    with pytest.raises(
        demo_model.ModelError, match=r"(?s)training failed: train\.py exited with 2.*unknown model .no_such_net"
    ):
        demo_model.obtain(None, None, ["--model", "no_such_net"])
    assert not list((demo_dirs / "models").glob("*/model.tar.gz"))


def test_your_data_trains_with_your_flags_on_top_of_the_quick_ones(demo_dirs, tmp_path):
    from tests.image_datasets import make_dataset

    data = make_dataset(tmp_path / "mine", {"train": 6, "valid": 3, "test": 3}, size=40)
    model = demo_model.obtain(None, data, [*TINY_TRAINING, "--weights", "none"], echo=lambda *_: None)
    assert model.data == data.resolve() and model.path.name == "model.tar.gz"
    assert model.metrics["model"] == "timm/test_efficientnet"  # the user's --model won over resnet18
    assert model.metrics["hyperparameters"]["epochs"] == 1
    assert model.metrics["labels"] == ["Red_Thing", "Green_Thing", "Blue_Thing"]
    objects = demo.labelled_images(data, per_label=2)
    assert sorted({o.label for o in objects}) == ["Blue_Thing", "Green_Thing", "Red_Thing"] and len(objects) == 6
    held_out = {p.read_bytes() for p in (data / "test").rglob("*.jpg")}
    assert all(o.body in held_out for o in objects)  # images the model never trained on


def test_an_s3_model_is_downloaded_once_and_a_missing_one_is_a_clear_error(
    demo_dirs, trained_artifact, local_aws, monkeypatch
):
    local_aws.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.url)  # moto stands in for your account's S3
    s3 = local_aws.client("s3")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(trained_artifact), "models", "jobs/j1/output/model.tar.gz")

    model = demo_model.obtain("s3://models/jobs/j1/output/model.tar.gz", echo=lambda *_: None)
    assert model.path.read_bytes() == trained_artifact.read_bytes() and model.metrics is None
    s3.delete_object(Bucket="models", Key="jobs/j1/output/model.tar.gz")
    assert demo_model.obtain("s3://models/jobs/j1/output/model.tar.gz").path == model.path  # cached

    with pytest.raises(demo_model.ModelError, match=r"s3://models/nope/model.tar.gz: .*(404|Not Found)"):
        demo_model.obtain("s3://models/nope/model.tar.gz", echo=lambda *_: None)
    with pytest.raises(demo_model.ModelError, match="expected s3://bucket/key"):
        demo_model.obtain("s3://models", echo=lambda *_: None)
