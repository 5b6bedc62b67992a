"""The artifact on Ray Serve (AWS's Ray Serve container for SageMaker runs the same deployment.py and config.yaml):
served locally over HTTP, it answers exactly what inference.py's handlers answer, with the same 4xx, and
concurrent single images are batched without changing any answer."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

import architectures
import artifact
import imaging
import inference
from tests.images import TEXT_AS_JPG, image_bytes

LABELS = ["Affenpinscher", "Beagle", "Siberian_Husky"]
COLOURS = ("red", "green", "blue")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = architectures.build_model("timm/test_efficientnet", len(LABELS), weights="none")
    config = {
        "name": "breedfilter-test",
        "architecture": "timm/test_efficientnet",
        "num_classes": len(LABELS),
        "preprocessing": imaging.Preprocessing(resize=40, crop=32, interpolation="bilinear").to_dict(),
        "top_k": 3,
    }
    root = tmp_path_factory.mktemp("artifact") / "model"
    artifact.write_model_dir(root, network.state_dict(), LABELS, config)
    return root


@pytest.fixture(scope="module")
def served(model_dir):
    """The artifact's own deployment.py and config.yaml, as the container runs them (``serve run config.yaml``)."""
    ray = pytest.importorskip("ray")  # pinned in pyproject's dev extra: CI always has it
    from ray import serve

    application = yaml.safe_load((model_dir / "config.yaml").read_text())["applications"][0]
    module_name, _, attribute = application["import_path"].partition(":")
    container_path = [str(model_dir), str(model_dir / "code")]  # the container's PYTHONPATH, for every worker
    sys.path[:0] = container_path
    saved_pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*container_path, *([saved_pythonpath] if saved_pythonpath else [])])
    try:
        deployment = __import__(module_name)
        port = free_port()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024**2)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = deployment.Classifier.bind(str(model_dir))
        assert getattr(deployment, attribute) is not None  # the name config.yaml imports exists
        serve.run(app, name=application["name"], route_prefix=application["route_prefix"], blocking=False)
        yield f"http://127.0.0.1:{port}/", inference.model_fn(str(model_dir))
    finally:
        serve.shutdown()
        ray.shutdown()
        sys.path[:] = [p for p in sys.path if p not in container_path]
        if saved_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_pythonpath
        sys.modules.pop(module_name, None)


def post(url: str, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def handlers(loaded, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, bytes]:
    """What inference.py's model_fn/input_fn/predict_fn/output_fn answer (the TorchServe path)."""
    try:
        answer = inference.predict_fn(inference.input_fn(body, content_type), loaded)
        return 200, inference.output_fn(answer, accept).encode()
    except inference.InferenceError as exc:
        return exc.status_code, json.dumps(exc.body()).encode()


def test_single_images_answer_byte_for_byte_what_the_handlers_answer(served):
    url, loaded = served
    for colour in COLOURS:
        for fmt, content_type in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
            body = image_bytes(colour, fmt, size=(64, 48))
            assert post(url, body, content_type) == handlers(loaded, body, content_type)


def test_a_batch_request_answers_what_the_handlers_answer(served):
    url, loaded = served
    images = [base64.b64encode(image_bytes(c)).decode() for c in COLOURS] + ["not base64!"]
    body = json.dumps({"images": images}).encode()
    status, answer = post(url, body, "application/json")
    expected_status, expected = handlers(loaded, body, "application/json")
    assert status == expected_status == 200
    got, expected = json.loads(answer)["results"], json.loads(expected)["results"]
    assert got[3] == expected[3] and got[3]["error"]["status"] == 400
    for mine, theirs in zip(got[:3], expected[:3], strict=True):
        assert_same_answer(mine, theirs)  # a batch of three: another thread count may round the last bits


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "status"),
    [
        (TEXT_AS_JPG, "image/jpeg", "application/json", 400),
        (b"", "image/jpeg", "application/json", 400),
        (image_bytes(), "text/plain", "application/json", 415),
        (image_bytes(), "image/jpeg", "text/csv", 406),
        (b"{not json", "application/json", "application/json", 400),
    ],
    ids=["undecodable", "empty", "wrong-content-type", "wrong-accept", "bad-json"],
)
def test_bad_requests_get_the_handlers_4xx_and_reason(served, body, content_type, accept, status):
    url, loaded = served
    answer = post(url, body, content_type, accept)
    assert answer == handlers(loaded, body, content_type, accept)
    assert answer[0] == status and json.loads(answer[1])


def test_concurrent_images_are_batched_without_changing_an_answer(served):
    url, loaded = served
    bodies = [image_bytes(COLOURS[i % 3], size=(40 + i, 40)) for i in range(24)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda b: post(url, b, "image/jpeg"), bodies))
    for body, (status, text) in zip(bodies, answers, strict=True):
        assert status == 200
        assert_same_answer(json.loads(text), json.loads(handlers(loaded, body, "image/jpeg")[1]))


def assert_same_answer(got: dict, expected: dict) -> None:
    """The same labels in the same order, known, score, threshold and model; probabilities to 1e-6 (batched
    kernels may round the last bits differently)."""
    assert {k: v for k, v in got.items() if k != "predictions"} == {
        k: v for k, v in expected.items() if k != "predictions"
    }
    assert [p["label"] for p in got["predictions"]] == [p["label"] for p in expected["predictions"]]
    for mine, theirs in zip(got["predictions"], expected["predictions"], strict=True):
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-6)
