"""A packed model.tar.gz serves with nothing downloaded or installed at start (issue 19, item 4).

Each test builds a real small artifact with artifact.py (write_model_dir, package, extract), then loads it in a
fresh Python, as the serving containers do: the artifact's ``code/`` first on the path (PYTHONPATH), training/
nowhere, and ``inference.model_fn(model_dir)`` classifying one image. In that process the network is blocked
(connect, create_connection, getaddrinfo raise), pip and timm's optional downloaders (huggingface_hub,
safetensors, yaml) cannot be imported, nothing can be spawned, and ``timm`` imports only from the artifact's
``code/``: the venv's timm is hidden, so for a timm architecture the vendored copy is what loads.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import architectures
import artifact
import imaging
import inference
from breedfilter.twin.artifact_model import ArtifactModel
from tests.images import image_bytes

LABELS = ["Affenpinscher", "Beagle", "Siberian_Husky"]
PRE = imaging.Preprocessing(resize=40, crop=32, interpolation="bilinear")

# Runs before anything else in the serving process (python -c PREAMBLE + SERVE): argv[1] is the artifact's code/.
PREAMBLE = r"""
import importlib.abc, importlib.machinery, socket, subprocess, sys

def _no_network(*args, **kwargs):
    raise OSError("network blocked by the test: model_fn must not download anything")

socket.socket.connect = socket.socket.connect_ex = _no_network
socket.create_connection = socket.getaddrinfo = _no_network

def _no_process(*args, **kwargs):
    raise OSError("spawning blocked by the test: model_fn must not install or run anything")

subprocess.Popen.__init__ = _no_process

CODE = sys.argv[1]
REFUSED = {"pip", "huggingface_hub", "safetensors", "yaml"}

class OnlyTheArtifactsTimm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in REFUSED:
            raise ImportError(f"{name} is not available in this test's container")
        if top != "timm":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path if "." in name else [CODE])
        if spec is None or not str(spec.origin).startswith(CODE):
            raise ImportError(f"{name}: only the artifact's code/ may provide timm")
        return spec

sys.meta_path.insert(0, OnlyTheArtifactsTimm())
"""

SERVE = r"""
import json, sys
model_dir, image = sys.argv[2], sys.argv[3]
import inference
loaded = inference.model_fn(model_dir)
body = open(image, "rb").read()
answer = json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(body, "image/png"), loaded), None))
try:
    import timm
    timm_file, timm_version = timm.__file__, timm.__version__
except ImportError as exc:
    timm_file, timm_version = None, str(exc)
print(json.dumps({
    "answer": answer,
    "inference": inference.__file__,
    "timm_file": timm_file,
    "timm_version": timm_version,
    "modules": sorted({name.partition(".")[0] for name in sys.modules}),
}))
"""


def packed_and_extracted(root: Path, architecture: str) -> Path:
    torch.manual_seed(0)
    network = architectures.build_model(architecture, len(LABELS), weights="none")
    config = {
        "name": "breedfilter-offline",
        "architecture": architecture,
        "num_classes": len(LABELS),
        "preprocessing": PRE.to_dict(),
        "top_k": 3,
    }
    artifact.write_model_dir(root / "model", network.state_dict(), LABELS, config)
    tarball = artifact.package(root / "model", root / "model.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith("requirements.txt") or "__pycache__" in n]
    return artifact.extract(tarball, root / "opt" / "ml" / "model")


def serve_offline(model_dir: Path, tmp_path: Path) -> dict:
    """model_fn + one image in a fresh process that can reach no network, no pip, and no timm but code/'s."""
    image = tmp_path / "photo.png"
    image.write_bytes(image_bytes("red", fmt="PNG"))
    code = str(model_dir / "code")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONSTARTUP", "PIP_INDEX_URL"}}
    env.update(PYTHONPATH=code, OMP_NUM_THREADS="1", BREEDFILTER_PRECISION="fp32")
    cwd = tmp_path / "cwd"  # python -c puts the working directory first on the path: an empty one
    cwd.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", PREAMBLE + SERVE, code, str(model_dir), str(image)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_answered(report: dict, model_dir: Path) -> None:
    answer = report["answer"]
    assert [p["label"] for p in answer["predictions"]] and {p["label"] for p in answer["predictions"]} <= set(LABELS)
    assert answer["model"]["name"] == "breedfilter-offline"
    assert Path(report["inference"]).resolve() == (model_dir / "code" / "inference.py").resolve()  # not training/'s
    assert not {"pip", "huggingface_hub", "safetensors", "yaml"} & set(report["modules"])


def test_a_timm_model_serves_from_its_vendored_timm_with_no_network_and_no_pip(tmp_path):
    model_dir = packed_and_extracted(tmp_path, "timm/test_efficientnet")
    config = json.loads((model_dir / "config.json").read_text())
    installed = importlib.metadata.version("timm")
    assert config["vendored"] == {"timm": installed}
    assert not (model_dir / "code" / "requirements.txt").exists()
    assert (model_dir / "code" / f"timm-{installed}.dist-info" / "licenses" / "LICENSE").is_file()  # Apache-2.0
    assert not list((model_dir / "code" / "timm").rglob("__pycache__"))  # nothing compiled came along

    report = serve_offline(model_dir, tmp_path)

    assert_answered(report, model_dir)
    assert Path(report["timm_file"]).resolve() == (model_dir / "code" / "timm" / "__init__.py").resolve()
    assert report["timm_version"] == installed


def test_a_torchvision_model_needs_no_timm_at_all(tmp_path):
    model_dir = packed_and_extracted(tmp_path, "mobilenet_v3_small")
    assert json.loads((model_dir / "config.json").read_text())["vendored"] == {}
    assert sorted(p.name for p in (model_dir / "code").iterdir()) == sorted(artifact.CODE_FILES)

    report = serve_offline(model_dir, tmp_path)

    assert_answered(report, model_dir)
    assert report["timm_file"] is None  # the guard hides the venv's timm, and the model did not need it
    assert "timm" not in report["modules"]


def test_an_artifact_that_would_install_at_start_is_refused(tmp_path):
    model_dir = packed_and_extracted(tmp_path, "timm/test_efficientnet")
    requirements = model_dir / "code" / "requirements.txt"
    requirements.write_text("# nothing to install\n\n")
    assert artifact.check_model_dir(model_dir)["architecture"] == "timm/test_efficientnet"  # empty: harmless
    requirements.write_text("timm==1.0.31\n")
    with pytest.raises(artifact.ArtifactError, match=r"pip-install timm==1\.0\.31 at start"):
        artifact.package(model_dir, tmp_path / "again.tar.gz")  # no tarball that installs at start is made
    assert not (tmp_path / "again.tar.gz").exists()
    requirements.unlink()
    (model_dir / "code" / "timm" / "__init__.py").unlink()
    with pytest.raises(artifact.ArtifactError, match=r"needs code/timm/__init__\.py inside the artifact"):
        artifact.check_model_dir(model_dir)


def old_style_artifact(tmp_path: Path) -> Path:
    """A timm model packed as artifacts were before (code/requirements.txt, no vendored timm)."""
    model_dir = packed_and_extracted(tmp_path, "timm/test_efficientnet")
    config = json.loads((model_dir / "config.json").read_text())
    del config["vendored"]
    (model_dir / "config.json").write_text(json.dumps(config))
    shutil.rmtree(model_dir / "code" / "timm")
    (model_dir / "code" / "requirements.txt").write_text("timm==1.0.31\n")
    tarball = tmp_path / "old.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
    return tarball


def test_an_artifact_written_before_vendoring_is_refused_for_an_endpoint(tmp_path):
    tarball = old_style_artifact(tmp_path)
    with pytest.raises(artifact.ArtifactError) as refused:
        artifact.read_config(tarball)
    assert "timm/test_efficientnet needs timm inside the artifact" in str(refused.value)
    assert "pip-install timm==1.0.31 at start" in str(refused.value)


def test_the_twin_still_serves_an_artifact_written_before_vendoring(tmp_path, caplog, monkeypatch):
    """The twin serves with this environment's packages: an old artifact works there, with a warning."""
    monkeypatch.setattr(inference, "_decode", inference._decode)  # model_fn sets it: put it back afterwards
    tarball = old_style_artifact(tmp_path)
    with caplog.at_level("WARNING", logger="breedfilter.artifact"):
        model = ArtifactModel(tarball)
    try:
        answer = model(image_bytes("red"), "image/jpeg")
    finally:
        model.close()
    assert {p["label"] for p in answer["predictions"]} <= set(LABELS)
    assert "needs timm inside the artifact" in caplog.text and "serves here" in caplog.text


def test_writing_again_leaves_no_vendored_package_of_an_earlier_architecture(tmp_path):
    model_dir = packed_and_extracted(tmp_path, "timm/test_efficientnet")
    torch.manual_seed(0)
    network = architectures.build_model("mobilenet_v3_small", len(LABELS), weights="none")
    config = {"architecture": "mobilenet_v3_small", "num_classes": len(LABELS), "preprocessing": PRE.to_dict()}
    artifact.write_model_dir(tmp_path / "model", network.state_dict(), LABELS, config)
    assert sorted(p.name for p in (tmp_path / "model" / "code").iterdir()) == sorted(artifact.CODE_FILES)
    assert model_dir.is_dir()


def test_the_twin_says_when_its_timm_is_not_the_artifacts(tmp_path, caplog, monkeypatch):
    """The local twin imports training/ and this environment's timm (not code/'s): model_fn warns on a mismatch."""
    monkeypatch.setattr(inference, "_decode", inference._decode)  # model_fn sets it: put it back afterwards
    model_dir = packed_and_extracted(tmp_path, "timm/test_efficientnet")
    with caplog.at_level("WARNING", logger="breedfilter.inference"):
        inference.model_fn(str(model_dir))
    assert "carries timm" not in caplog.text  # the same version: silent
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "vendored": {"timm": "0.9.0"}}))
    with caplog.at_level("WARNING", logger="breedfilter.inference"):
        inference.model_fn(str(model_dir))
    assert f"carries timm 0.9.0 in code/, but this process imported timm {importlib.metadata.version('timm')}" in (
        caplog.text
    )
