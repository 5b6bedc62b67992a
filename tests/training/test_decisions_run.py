"""Decisions end to end: train.py fits calibration, an unknown-image detector and thresholds; the endpoint uses them.

A real train.py run on generated images (timm's tiny test network) writes ``open_set.pt`` and its summary in
config.json; ``inference.model_fn`` serves it: calibrated probabilities, ``known``, ``unknown_score`` and the
model's own ``threshold`` in every answer, single and batch.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import architectures
import decision_fit
import inference
import open_set
import train
from breedfilter import metrics
from tests.image_datasets import make_dataset, make_image
from tests.support import quick_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    data = make_dataset(tmp_path_factory.mktemp("data"), {"train": 16, "valid": 10, "test": 6}, size=40)
    unknowns = tmp_path_factory.mktemp("unknowns")
    (unknowns / "nested").mkdir()
    for i, colour in enumerate([(0, 0, 0), (250, 250, 250), (230, 220, 30)]):
        Image.new("RGB", (40, 40), colour).save(unknowns / "nested" / f"{i}.png")
    out = tmp_path_factory.mktemp("run")
    summary = train.main(quick_args(data, out, "--epochs", "4", "--unknowns", str(unknowns)))
    return out, summary


@pytest.fixture(scope="module")
def loaded(run) -> inference.LoadedModel:
    return inference.model_fn(str(run[0] / "model"))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_train_writes_the_decisions_into_the_artifact_and_the_run_files(run):
    out, summary = run
    config = json.loads((out / "model" / "config.json").read_text())
    entry = config["open_set"]
    assert entry["method"] == "knn"  # --weights none: no ImageNet head, so the feature-space detector
    assert entry["target_precision"] == 0.99 and entry["known_keep"] == 0.95
    assert 0.0 < entry["probability_threshold"] <= 1.0
    assert entry["expected"]["known_kept"] >= 0.95
    assert entry["ece_after"] <= entry["ece_before"] + 1e-9  # the temperature minimises NLL; ECE follows here
    assert config["open_set_file"] == "open_set.pt" and len(config["open_set_sha256"]) == 64
    assert summary["decisions"] == entry
    written = json.loads((out / "output" / "open_set.json").read_text())
    assert written["thresholds"]["probability"] == entry["probability_threshold"]
    assert len(written["unknown_scores"]["valid"]) == 30
    assert written["unknowns"]["count"] == 3 and len(written["unknown_scores"]["unknowns"]) == 3
    assert written["unknowns"]["source"].endswith("unknowns0")
    assert len(written["calibration"]["reliability"]["after"]) == open_set.ECE_BINS
    with (out / "model" / "config.json").open() as handle:  # strict JSON: no NaN anywhere
        json.load(handle, parse_constant=lambda c: pytest.fail(f"{c} in config.json"))


def test_the_decisions_print_as_metrics_sagemaker_scrapes(run):
    written = json.loads((run[0] / "output" / "open_set.json").read_text())
    scraped = metrics.scrape(decision_fit.metric_line(written))
    assert scraped["probability_threshold"] == pytest.approx(written["thresholds"]["probability"], rel=1e-5)
    assert scraped["expected_coverage"] == pytest.approx(written["thresholds"]["expected"]["coverage"], rel=1e-5)
    assert scraped["ece_after"] == pytest.approx(written["calibration"]["ece_after"], rel=1e-5)


def test_the_artifact_state_loads_with_weights_only(run):
    state = torch.load(run[0] / "model" / "open_set.pt", weights_only=True)
    assert state["format"] == open_set.STATE_FORMAT and state["method"] == "knn"
    assert state["stats"]["knn_bank"].dtype == torch.float16


def test_the_answer_is_calibrated_and_carries_known_unknown_score_and_threshold(run, loaded):
    config = json.loads((run[0] / "model" / "config.json").read_text())["open_set"]
    image = make_image((200, 40, 40), 40, __import__("random").Random(7))
    answer = inference.predict_bytes(loaded, png(image), "image/png")
    assert set(answer) == {"predictions", "model", "known", "unknown_score", "threshold"}
    assert answer["threshold"] == config["probability_threshold"]
    assert answer["known"] == (answer["unknown_score"] <= config["unknown_threshold"])
    # the probabilities are softmax(logits / T), T from config.json: computed here from the bare network
    with torch.inference_mode():
        logits = loaded.model(loaded.transform(image).unsqueeze(0).to(memory_format=torch.channels_last))
    expected = torch.softmax(logits.double() / config["temperature"], dim=1)[0]
    for p in answer["predictions"]:
        assert p["probability"] == pytest.approx(float(expected[p["index"]]), abs=1e-9)


def test_an_image_of_none_of_the_labels_is_not_known(loaded):
    answer = inference.predict_bytes(loaded, png(Image.new("RGB", (40, 40), (0, 0, 0))), "image/png")
    assert answer["known"] is False
    assert answer["unknown_score"] > loaded.detector.unknown_threshold


def test_batch_answers_carry_the_same_fields_per_image(loaded):
    images = [
        png(Image.new("RGB", (40, 40), (0, 0, 0))),
        png(make_image((40, 60, 200), 40, __import__("random").Random(1))),
    ]
    body = json.dumps({"images": [base64.b64encode(b).decode() for b in images] + ["bm90IGFuIGltYWdl"]})
    batch = inference.predict_bytes(loaded, body.encode(), "application/json")
    singles = [inference.predict_bytes(loaded, b, "image/png") for b in images]
    for one, single in zip(batch["results"][:2], singles, strict=True):
        assert one["known"] == single["known"] and one["threshold"] == single["threshold"]
        assert one["unknown_score"] == pytest.approx(single["unknown_score"], abs=1e-6)
    assert "error" in batch["results"][2]


def test_a_corrupt_open_set_file_is_refused(run, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(run[0] / "model", copy)
    (copy / "open_set.pt").write_bytes(b"not the fitted state")
    with pytest.raises(inference.ArtifactError, match="open_set_sha256"):
        inference.model_fn(str(copy))


def test_an_artifact_without_decisions_still_serves_and_says_so(run, tmp_path, caplog):
    copy = tmp_path / "model"
    shutil.copytree(run[0] / "model", copy)
    config = json.loads((copy / "config.json").read_text())
    for key in ("open_set", "open_set_file", "open_set_sha256"):
        config.pop(key)
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "open_set.pt").unlink()
    loaded = inference.model_fn(str(copy))
    assert "has no open_set.pt" in caplog.text
    answer = inference.predict_bytes(loaded, png(Image.new("RGB", (40, 40), (0, 0, 0))), "image/png")
    assert answer["known"] is True and answer["unknown_score"] is None and answer["threshold"] is None


def test_the_unpacked_artifact_classifies_from_its_own_code_dir(run, tmp_path):
    image = tmp_path / "black.png"
    Image.new("RGB", (40, 40), (0, 0, 0)).save(image)
    done = subprocess.run(
        [sys.executable, str(run[0] / "model" / "code" / "inference.py"), str(image)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.split("\t", 1)[1])
    assert answer["known"] is False


def test_the_pretrained_head_is_kept_from_a_weights_file(tmp_path):
    donor = architectures.build_model("timm/test_efficientnet", 1000, "none")
    torch.save(donor.state_dict(), tmp_path / "in1k.pth")
    model = architectures.build_model("timm/test_efficientnet", 3, str(tmp_path / "in1k.pth"))
    head = architectures.pretrained_head(model)
    assert head is not None
    assert torch.equal(head["weight"], architectures.head_module(donor).weight)
    assert head["weight"].shape[1] == architectures.head_module(model).in_features
    assert architectures.pretrained_head(architectures.build_model("timm/test_efficientnet", 3, "none")) is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target-precision", "1.5"], "strictly between 0 and 1"),
        (["--known-keep", "0"], "strictly between 0 and 1"),
        (["--unknown-method", "imagenet_prior", "--weights", "none"], "needs the pretrained network's ImageNet head"),
    ],
)
def test_bad_decision_flags_fail_before_training(tmp_path, flags, message):
    done = subprocess.run(
        [sys.executable, str(ROOT / "training" / "train.py"), "--data", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_the_held_out_unknowns_summary_is_what_the_endpoint_does_with_them(run, loaded):
    written = json.loads((run[0] / "output" / "open_set.json").read_text())
    folder = Path(written["unknowns"]["source"]) / "nested"
    answers = [inference.predict_bytes(loaded, path.read_bytes(), "image/png") for path in sorted(folder.glob("*.png"))]
    sorted_ = [a["known"] and a["predictions"][0]["probability"] >= a["threshold"] for a in answers]
    assert written["unknowns"]["sorted_share"] == pytest.approx(sum(sorted_) / len(answers))
    for answer, score in zip(answers, written["unknown_scores"]["unknowns"], strict=True):
        assert answer["unknown_score"] == pytest.approx(score, abs=1e-4)
