"""training/inference.py: the SageMaker handlers serving a model artifact under the endpoint contract.

Artifacts are built here in tmp dirs around tiny models (timm's ``test_efficientnet``, torchvision's
``mobilenet_v3_small``) at 32x32 input; images are made in memory.
Run: .venv/bin/pytest tests/training/test_inference.py
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import architectures
import imaging
import inference
from artifact import CODE_FILES
from inference import ArtifactError, InferenceError

TRAINING = Path(__file__).resolve().parents[2] / "training"
LABELS = ["Affenpinscher", "Beagle", "Siberian_Husky"]
TINY = "timm/test_efficientnet"
PRE = imaging.Preprocessing(resize=40, crop=32, interpolation="bilinear")
IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "application/x-image", "application/octet-stream"]


def make_artifact(
    root: Path,
    *,
    architecture: str = TINY,
    head_bias: list[float] | None = (0.0, 1.0, 3.0),
    labels: list[str] = LABELS,
    state_prefix: str = "",
    **config_changes,
) -> Path:
    """An unpacked model.tar.gz. With ``head_bias`` the head ignores the image: probabilities softmax(bias)."""
    torch.manual_seed(0)
    model = architectures.build_model(architecture, len(LABELS), weights="none")
    if head_bias is not None:
        head = architectures.head_module(model)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor(head_bias))
    root.mkdir(parents=True, exist_ok=True)
    state = {state_prefix + key: value for key, value in model.state_dict().items()}
    torch.save(state, root / "model.pth")
    (root / "labels.json").write_text(json.dumps(labels))
    config = {
        "format": "breedfilter-model/1",
        "name": "breedfilter-test",
        "version": "20261121T1015Z-3f2a9c1b",
        "architecture": architecture,
        "num_classes": len(LABELS),
        "weights_file": "model.pth",
        "weights_sha256": hashlib.sha256((root / "model.pth").read_bytes()).hexdigest(),
        "labels_file": "labels.json",
        "preprocessing": PRE.to_dict(),
        "top_k": 3,
        "metrics": {"test_accuracy": 0.5},
    }
    config.update(config_changes)
    (root / "config.json").write_text(json.dumps(config))
    code = root / "code"
    code.mkdir(exist_ok=True)
    for name in CODE_FILES:
        shutil.copy(TRAINING / name, code / name)
    return root


@pytest.fixture(autouse=True)
def _restore_decode_settings(monkeypatch):
    """model_fn sets the module's decode settings (input_fn has no model argument): undo that after each test."""
    monkeypatch.setattr(inference, "_decode", inference._decode)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="module")
def loaded(artifact) -> inference.LoadedModel:
    return inference.model_fn(str(artifact))


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (48, 40), colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


EXPECTED = torch.softmax(torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64), 0).tolist()


def assert_contract(answer: dict, top_k: int = 3) -> None:
    assert set(answer) == {"predictions", "model", "known", "unknown_score", "threshold"}
    # an artifact without open_set.pt: raw softmax, every image known, no threshold of its own
    assert answer["known"] is True and answer["unknown_score"] is None and answer["threshold"] is None
    assert answer["model"] == {"name": "breedfilter-test", "version": "20261121T1015Z-3f2a9c1b"}
    predictions = answer["predictions"]
    assert len(predictions) == top_k
    for p in predictions:
        assert set(p) == {"label", "index", "probability"}
        assert LABELS[p["index"]] == p["label"]
        assert 0.0 <= p["probability"] <= 1.0
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-9
    assert [p["label"] for p in predictions] == ["Siberian_Husky", "Beagle", "Affenpinscher"][:top_k]
    assert probabilities == pytest.approx(sorted(EXPECTED, reverse=True)[:top_k])


# --- the handler chain ------------------------------------------------------------------------------------------


def test_model_fn_loads_the_artifact(loaded):
    assert isinstance(loaded, inference.LoadedModel)
    assert loaded.labels == tuple(LABELS)
    assert loaded.preprocessing == PRE
    assert loaded.top_k == 3
    assert not loaded.model.training
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded.decode.draft_size == PRE.draft_size()
    assert loaded.identity == {"name": "breedfilter-test", "version": "20261121T1015Z-3f2a9c1b"}


def test_round_trip_returns_the_contract(loaded):
    data = inference.input_fn(image_bytes(), "image/jpeg")
    assert isinstance(data, Image.Image) and data.mode == "RGB"
    prediction = inference.predict_fn(data, loaded)
    body = inference.output_fn(prediction, "application/json")
    assert isinstance(body, str | bytes)
    answer = json.loads(body)
    assert_contract(answer)
    assert inference.predict_bytes(loaded, image_bytes(), "image/jpeg") == answer


@pytest.mark.parametrize("content_type", [*IMAGE_TYPES, "IMAGE/JPEG; charset=binary", " image/png ;q=1"])
def test_every_accepted_content_type(loaded, content_type):
    fmt = {"image/png": "PNG", "image/webp": "WEBP", "application/octet-stream": "PNG"}.get(
        content_type.strip().split(";")[0].strip().lower(), "JPEG"
    )
    assert_contract(inference.predict_bytes(loaded, image_bytes(fmt), content_type))
    assert isinstance(inference.input_fn(bytearray(image_bytes(fmt)), content_type), Image.Image)


def test_top_k_from_env_and_capped_by_num_classes(artifact, monkeypatch):
    monkeypatch.setenv("BREEDFILTER_TOP_K", "1")
    model = inference.model_fn(str(artifact))
    assert_contract(inference.predict_bytes(model, image_bytes(), "image/jpeg"), top_k=1)
    monkeypatch.setenv("BREEDFILTER_TOP_K", "10")
    assert inference.model_fn(str(artifact)).top_k == 3
    monkeypatch.setenv("BREEDFILTER_TOP_K", "zero")
    with pytest.raises(ArtifactError, match="BREEDFILTER_TOP_K"):
        inference.model_fn(str(artifact))


@pytest.mark.parametrize("architecture", [TINY, "mobilenet_v3_small"])
def test_predict_fn_uses_eval_transform_as_evaluation_does(tmp_path, architecture):
    model = inference.model_fn(str(make_artifact(tmp_path, architecture=architecture, head_bias=None)))
    image = Image.effect_noise((64, 48), 50).convert("RGB")
    answer = inference.predict_fn(image, model)
    network = architectures.build_model(architecture, 3, weights="none")
    network.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True))
    with torch.no_grad():
        expected = torch.softmax(network.eval()(imaging.eval_transform(PRE)(image)[None]).double(), 1)[0]
    for p in answer["predictions"]:
        assert p["probability"] == pytest.approx(expected[p["index"]].item(), abs=1e-5)


def test_a_state_dict_saved_from_ddp_loads(tmp_path):
    model = inference.model_fn(str(make_artifact(tmp_path, state_prefix="module.")))
    assert_contract(inference.predict_bytes(model, image_bytes(), "image/png"))


# --- batches ----------------------------------------------------------------------------------------------------


def test_batch_with_one_bad_item_answers_the_others(loaded):
    body = json.dumps(
        {"images": [b64(image_bytes()), "not base64 !!", b64(b"just some text"), b64(image_bytes("PNG"))]}
    )
    data = inference.input_fn(body, "application/json")  # the toolkit hands JSON bodies over as str
    answer = json.loads(inference.output_fn(inference.predict_fn(data, loaded), "application/json"))
    assert set(answer) == {"results", "model"}
    results = answer["results"]
    assert len(results) == 4
    assert_contract(results[0])
    assert_contract(results[3])
    for bad in results[1:3]:
        assert set(bad) == {"error"}
        assert bad["error"]["status"] == 400 and bad["error"]["reason"]
    assert "base64" in results[1]["error"]["reason"]
    assert "not a supported image" in results[2]["error"]["reason"]


def test_batch_instances_form_data_urls_and_url_safe_base64(loaded):
    png = image_bytes("PNG")
    items = [
        {"b64": b64(image_bytes())},
        {"b64": "data:image/png;base64," + b64(png)},
        {"b64": base64.urlsafe_b64encode(png).decode().rstrip("=")},
        {"nothing": 1},
    ]
    answer = inference.predict_bytes(loaded, json.dumps({"instances": items}).encode(), "application/json")
    for result in answer["results"][:3]:
        assert_contract(result)
    assert answer["results"][3]["error"]["status"] == 400


def test_batch_of_only_bad_items_does_not_run_the_model(loaded):
    answer = inference.predict_bytes(loaded, json.dumps({"images": [b64(b"")]}).encode(), "application/json")
    assert answer == {"results": [{"error": {"reason": answer["results"][0]["error"]["reason"], "status": 400}}],
                      "model": loaded.identity}  # fmt: skip


def test_batch_too_big_is_413(loaded, artifact, monkeypatch):
    body = json.dumps({"images": [b64(image_bytes())] * 65})
    with pytest.raises(InferenceError) as caught:
        inference.predict_bytes(loaded, body.encode(), "application/json")
    assert caught.value.status_code == 413
    monkeypatch.setenv("BREEDFILTER_MAX_BATCH", "2")
    small = inference.model_fn(str(artifact))
    with pytest.raises(InferenceError) as caught:
        inference.input_fn(json.dumps({"images": [b64(image_bytes())] * 3}), "application/json")
    assert caught.value.status_code == 413
    assert len(inference.predict_bytes(small, json.dumps({"images": ["x", "y"]}).encode(), "application/json")) == 2


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'{"pictures": []}', b'{"images": "abc"}', b'{"images": []}', b"\xff\xfe\xfa"],
    ids=["bad-json", "empty", "list", "wrong-key", "not-a-list", "no-images", "not-utf8"],
)
def test_bad_batch_json_is_400(loaded, body):
    with pytest.raises(InferenceError) as caught:
        inference.predict_bytes(loaded, body, "application/json")
    assert caught.value.status_code == 400


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "image/gif", "multipart/form-data; boundary=x", "", None])
def test_unsupported_content_type_is_415(content_type):
    with pytest.raises(InferenceError) as caught:
        inference.input_fn(image_bytes(), content_type)
    assert caught.value.status_code == 415
    assert "image/jpeg" in caught.value.reason


@pytest.mark.parametrize(
    "body",
    [b"", b"hello, I am text", image_bytes(size=(256, 256))[:300], "a str body"],
    ids=["empty", "text", "truncated", "str"],
)
def test_undecodable_image_is_400(loaded, body):
    with pytest.raises(InferenceError) as caught:
        inference.input_fn(body, "image/jpeg")
    assert caught.value.status_code == 400


def test_too_many_pixels_is_413(artifact, monkeypatch):
    monkeypatch.setenv("BREEDFILTER_MAX_PIXELS", "1000")
    model = inference.model_fn(str(artifact))
    with pytest.raises(InferenceError) as caught:
        inference.predict_bytes(model, image_bytes(size=(40, 30)), "image/jpeg")
    assert caught.value.status_code == 413
    assert "1200 pixels" in caught.value.reason
    assert_contract(inference.predict_bytes(model, image_bytes(size=(30, 30)), "image/jpeg"))
    small = dataclasses.replace(model, decode=inference.DecodeSettings(max_pixels=10))
    answer = inference.predict_bytes(small, json.dumps({"images": [b64(image_bytes())]}).encode(), "application/json")
    assert answer["results"][0]["error"]["status"] == 413


@pytest.mark.parametrize("accept", ["application/json", "*/*", "", None, "application/json; charset=utf-8",
                                    "text/html, application/*;q=0.8"])  # fmt: skip
def test_acceptable_accept_headers(loaded, accept):
    assert json.loads(inference.output_fn({"predictions": [], "model": loaded.identity}, accept))


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/x-npy"])
def test_unacceptable_accept_is_406(accept):
    with pytest.raises(InferenceError) as caught:
        inference.output_fn({"predictions": []}, accept)
    assert caught.value.status_code == 406


def test_errors_carry_what_the_toolkit_and_local_server_need():
    error = InferenceError(413, "image too large")
    assert isinstance(error, inference._ToolkitError)
    assert error.status_code == 413 and error.status == 413
    assert error.phrase == "Request Entity Too Large"
    assert json.loads(error.message) == {"error": "image too large", "status": 413}
    assert error.reason == "image too large" and "image too large" in str(error)
    try:
        from sagemaker_inference.errors import BaseInferenceToolkitError
    except ImportError:
        pass
    else:
        assert isinstance(error, BaseInferenceToolkitError)
    converted = InferenceError.from_input(imaging.ImageInputError("bad", 415))
    assert converted.status_code == 415


# --- artifact checks --------------------------------------------------------------------------------------------


def test_weights_sha256_mismatch_names_both_hashes(tmp_path):
    root = make_artifact(tmp_path, weights_sha256="ab" * 32)
    actual = hashlib.sha256((root / "model.pth").read_bytes()).hexdigest()
    with pytest.raises(RuntimeError) as caught:
        inference.model_fn(str(root))
    assert actual in str(caught.value) and "ab" * 32 in str(caught.value)


def test_tampered_weights_are_refused(tmp_path):
    root = make_artifact(tmp_path)
    with (root / "model.pth").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        inference.model_fn(str(root))


def test_labels_that_do_not_fit_num_classes_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"2 labels but config\.json says num_classes=3"):
        inference.model_fn(str(make_artifact(tmp_path, labels=LABELS[:2])))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "breedfilter-model/99"}, "unknown artifact format"),
        ({"format": None}, "unknown artifact format"),
        ({"weights_sha256": None}, "weights_sha256"),
        ({"weights_file": "../model.pth"}, "file name inside the artifact"),
        ({"weights_file": "missing.pth"}, "missing"),
        ({"preprocessing": {"resize": 40}}, "preprocessing"),
        ({"architecture": "no_such_net"}, "unknown model"),
        ({"num_classes": 4}, "num_classes=4"),
    ],
)
def test_bad_config_is_refused_clearly(artifact, tmp_path, change, message):
    root = tmp_path / "artifact"
    shutil.copytree(artifact, root)
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises((ArtifactError, ValueError), match=message):
        inference.model_fn(str(root))


def test_duplicate_labels_are_refused(tmp_path):
    with pytest.raises(ArtifactError, match="duplicate"):
        inference.model_fn(str(make_artifact(tmp_path, labels=["a", "b", "a"])))


def test_missing_config_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"config.json: missing"):
        inference.model_fn(str(tmp_path))


def test_threads_follow_the_model_server_workers(monkeypatch):
    before = torch.get_num_threads()
    try:
        for name in ("BREEDFILTER_TORCH_THREADS", "OMP_NUM_THREADS", "SAGEMAKER_PROGRAM"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
        assert inference._configure_threads() == len(os.sched_getaffinity(0))
        monkeypatch.setenv("BREEDFILTER_TORCH_THREADS", "1")
        assert inference._configure_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# --- the code dir is self-contained -----------------------------------------------------------------------------


def test_code_dir_runs_on_its_own(artifact, tmp_path):
    """``python code/inference.py IMAGE...`` in the artifact, with only code/ (and site-packages) importable."""
    good, bad = tmp_path / "dog.jpg", tmp_path / "notes.jpg"
    good.write_bytes(image_bytes())
    bad.write_bytes(b"not an image")
    code = artifact / "code"
    script = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(code)!r})\n"
        f"sys.argv = [{str(code / 'inference.py')!r}, {str(good)!r}, {str(bad)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(code / 'inference.py')!r}, run_name='__main__')\n"
        "finally:\n"
        "    print('MODULES', sys.modules['imaging'].__file__, sys.modules['architectures'].__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BREEDFILTER_"))}
    run = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stderr  # one of the two images is rejected
    lines = dict(line.split("\t", 1) for line in run.stdout.splitlines() if "\t" in line)
    assert_contract(json.loads(lines[str(good)]))
    assert json.loads(lines[str(bad)])["status"] == 400
    modules = next(line for line in run.stdout.splitlines() if line.startswith("MODULES")).split()[1:]
    assert all(Path(m).parent == code for m in modules), modules
    assert "loaded breedfilter-test" in run.stderr


# --- resource limits found by review: each a small request that used to cost GBs or minutes --------------------


def test_a_batch_that_decodes_to_too_many_pixels_in_all_is_413(artifact, monkeypatch):
    monkeypatch.setenv("BREEDFILTER_MAX_PIXELS", "5000")  # each 48x40 image fits (1920); three do not
    model = inference.model_fn(str(artifact))
    two = json.dumps({"images": [b64(image_bytes())] * 2}).encode()
    assert len(inference.predict_bytes(model, two, "application/json")["results"]) == 2
    with pytest.raises(InferenceError) as caught:
        inference.predict_bytes(model, json.dumps({"images": [b64(image_bytes())] * 3}).encode(), "application/json")
    assert caught.value.status_code == 413 and "fewer or smaller" in caught.value.reason


def test_deeply_nested_json_is_400_not_a_crash(loaded):
    body = b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InferenceError) as caught:
        inference.predict_bytes(loaded, body, "application/json")
    assert caught.value.status_code == 400


def test_a_corrupt_avif_is_400_not_500(loaded):
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF decoder")
    good = image_bytes("AVIF")
    for broken in (good[: len(good) // 2], good[:40] + bytes(len(good) - 40)):
        with pytest.raises(InferenceError) as caught:
            inference.predict_bytes(loaded, broken, "application/octet-stream")
        assert caught.value.status_code == 400


# --- precision chosen at load time ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "dtype"), [("fp32", None), ("bf16", torch.bfloat16), ("BF16", torch.bfloat16)])
def test_the_serving_precision_comes_from_the_environment(monkeypatch, value, dtype):
    monkeypatch.setenv(inference.PRECISION_VARIABLE, value)
    assert inference.serving_precision(torch.device("cpu")) == dtype


@pytest.mark.parametrize("value", ["auto", "", None])
def test_auto_precision_the_default_is_bf16_exactly_where_the_cpu_runs_it(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(inference.PRECISION_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(inference.PRECISION_VARIABLE, value)
    expected = torch.bfloat16 if inference.cpu_supports_bf16() else None
    assert inference.serving_precision(torch.device("cpu")) == expected


@pytest.mark.parametrize(("value", "words"), [("fp16", "needs a GPU"), ("int4", "expected one of")])
def test_a_precision_the_device_cannot_run_is_refused_at_load(monkeypatch, artifact, value, words):
    monkeypatch.setenv(inference.PRECISION_VARIABLE, value)
    with pytest.raises(ArtifactError, match=words):
        inference.model_fn(str(artifact))


def test_bf16_serving_answers_the_contract_with_the_fp32_ranking(monkeypatch, tmp_path):
    root = make_artifact(tmp_path / "m", head_bias=None)
    images = [Image.open(io.BytesIO(image_bytes(colour=c))).convert("RGB") for c in ((200, 40, 40), (40, 40, 200))]
    monkeypatch.setenv(inference.PRECISION_VARIABLE, "fp32")
    full = inference.classify_images(inference.model_fn(str(root)), images)
    monkeypatch.setenv(inference.PRECISION_VARIABLE, "bf16")
    low_model = inference.model_fn(str(root))
    assert low_model.autocast_dtype == torch.bfloat16
    low = inference.classify_images(low_model, images)
    for a, b in zip(full, low, strict=True):
        assert sum(p["probability"] for p in b["predictions"]) == pytest.approx(1.0, abs=1e-6)
        assert all(isinstance(p["probability"], float) for p in b["predictions"])
        for p, q in zip(a["predictions"], b["predictions"], strict=True):
            assert q["probability"] == pytest.approx(p["probability"], abs=0.02)  # bf16 keeps ~3 digits
