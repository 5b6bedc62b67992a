"""The model artifact: the model dir SageMaker tars into ``model.tar.gz``, and that tarball for local runs.

Layout (DESIGN.md, SageMaker PyTorch serving)::

    model.pth            state dict (loads with weights_only=True)
    labels.json          class names in index order
    config.json          architecture, preprocessing, sha256 of model.pth, version, metrics, hyperparameters
    open_set.pt          calibration, unknown-image detector and thresholds (training/open_set.py; optional)
    code/inference.py    model_fn / input_fn / predict_fn / output_fn
    code/imaging.py      decoding and preprocessing, shared with training's evaluation
    code/architectures.py
    code/open_set.py, code/s3_pointer.py   the open-set decisions; photos read by S3 pointer
    code/requirements.txt
    deployment.py, config.yaml   the same handlers as a Ray Serve application (AWS's Ray Serve container)

    python training/artifact.py out/train/model.tar.gz     # checks an artifact and prints its config
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from inference import ArtifactError, check_artifact, sha256_file  # the endpoint's own checks, for writing too

FORMAT = "breedfilter-model/1"
WEIGHTS_FILE = "model.pth"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"
HERE = Path(__file__).resolve().parent
OPEN_SET_FILE = "open_set.pt"
CODE_FILES = ("inference.py", "imaging.py", "architectures.py", "open_set.py", "s3_pointer.py")
CODE_REQUIREMENTS = HERE / "inference-requirements.txt"
# AWS's Ray Serve container for SageMaker reads these two at the artifact's root (serve_deployment.py).
RAY_SERVE_FILES = {"deployment.py": "serve_deployment.py"}
RAY_SERVE_CONFIG = "config.yaml"
RAY_SERVE_CONFIG_TEXT = """\
# Ray Serve application for AWS's SageMaker Ray Serve container (written by training/artifact.py).
applications:
  - name: breedfilter
    route_prefix: /
    import_path: deployment:app
    deployments:
      - name: Classifier
        max_ongoing_requests: 64
"""


def make_version(weights_sha256: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{weights_sha256[:8]}"


def write_model_dir(
    model_dir: Path,
    state_dict: dict[str, torch.Tensor],
    labels: list[str],
    config: dict[str, Any],
    open_set_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write weights, labels, config (completed with sha256, version, format), the open-set state and code/;
    returns the config."""
    if config.get("num_classes") != len(labels):
        raise ArtifactError(f"config says {config.get('num_classes')} classes, labels.json has {len(labels)}")
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / WEIGHTS_FILE
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, weights)
    digest = sha256_file(weights)
    decisions: dict[str, Any] = {}
    if open_set_state is not None:
        torch.save(open_set_state, model_dir / OPEN_SET_FILE)
        decisions = {"open_set_file": OPEN_SET_FILE, "open_set_sha256": sha256_file(model_dir / OPEN_SET_FILE)}
    else:
        (model_dir / OPEN_SET_FILE).unlink(missing_ok=True)
    config = {
        "format": FORMAT,
        **config,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": digest,
        "labels_file": LABELS_FILE,
        **decisions,
        "version": config.get("version") or make_version(digest),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    (model_dir / LABELS_FILE).write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    code = model_dir / "code"
    code.mkdir(exist_ok=True)
    for name in CODE_FILES:
        shutil.copy2(HERE / name, code / name)
    shutil.copy2(CODE_REQUIREMENTS, code / "requirements.txt")
    for target, source in RAY_SERVE_FILES.items():
        shutil.copy2(HERE / source, model_dir / target)
    (model_dir / RAY_SERVE_CONFIG).write_text(RAY_SERVE_CONFIG_TEXT, encoding="utf-8")
    return config


def package(model_dir: Path, tarball: Path) -> Path:
    """``model.tar.gz`` with the model dir's contents at its root, as SageMaker packs SM_MODEL_DIR."""
    check_model_dir(model_dir)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tmp = tarball.with_name(f".{tarball.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    tmp.replace(tarball)
    return tarball


def extract(tarball: Path, destination: Path) -> Path:
    """Unpack safely (no absolute paths, no ``..``, no links) and check the layout."""
    check_model_dir(_unpack(tarball, destination))
    return destination


def _unpack(tarball: Path, destination: Path) -> Path:
    with tarfile.open(tarball, "r:*") as tar:
        tar.extractall(destination, filter="data")
    return destination


def check_model_dir(model_dir: Path) -> dict[str, Any]:
    """The config, after checking every file is there and passes the endpoint's own ``check_artifact``."""
    expected = (WEIGHTS_FILE, LABELS_FILE, CONFIG_FILE, "code/requirements.txt", *(f"code/{f}" for f in CODE_FILES))
    missing = [name for name in expected if not (model_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"{model_dir} is not a model artifact: missing {', '.join(missing)}")
    return check_artifact(model_dir).config


def read_config(tarball: Path) -> dict[str, Any]:
    """The config of a checked ``model.tar.gz`` (unpacked to a temporary dir, checked once)."""
    with tempfile.TemporaryDirectory() as tmp:
        return check_model_dir(_unpack(tarball, Path(tmp)))


def describe(config: dict[str, Any]) -> str:
    out = io.StringIO()
    for key in ("name", "version", "architecture", "num_classes", "preprocessing", "weights_sha256", "metrics"):
        out.write(f"{key}: {json.dumps(config.get(key))}\n")
    return out.getvalue()


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        path = Path(arg)
        print(describe(read_config(path) if path.is_file() else check_model_dir(path)))
