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
    code/timm/, code/timm-<version>.dist-info/   timm/<name> architectures only: the installed timm, vendored
    deployment.py, config.yaml   the same handlers as a Ray Serve application (AWS's Ray Serve container)

Nothing is installed when an endpoint starts: there is no ``code/requirements.txt`` (the containers pip-install
one at start, which needs the package index and rules out network isolation). torch, torchvision, numpy and
Pillow come with the containers; timm, which only ``timm/<name>`` architectures use, is copied from this
environment into ``code/`` (pure Python; the containers put ``code/`` first on the path, so ``import timm``
finds it). It imports without its optional huggingface_hub, safetensors and pyyaml, which serving never uses.
config.json's ``vendored`` names what was copied (``{"timm": "1.0.31"}``; ``{}`` for torchvision models).

    python training/artifact.py out/train/model.tar.gz     # checks an artifact and prints its config
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import logging
import shutil
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from architectures import is_timm
from inference import ArtifactError, check_artifact, sha256_file  # the endpoint's own checks, for writing too

LOG = logging.getLogger("breedfilter.artifact")
FORMAT = "breedfilter-model/1"
WEIGHTS_FILE = "model.pth"
LABELS_FILE = "labels.json"
CONFIG_FILE = "config.json"
HERE = Path(__file__).resolve().parent
OPEN_SET_FILE = "open_set.pt"
CODE_FILES = ("inference.py", "imaging.py", "architectures.py", "open_set.py", "s3_pointer.py")
VENDORED_KEY = "vendored"  # config.json: {package: version} copied into code/
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
# Parts of a vendored package that serving never reads: timm's ImageNet class-name tables (4.3 MB of text, read only
# by timm.data.ImageNetInfo and RealLabels), 60% of the vendored timm's compressed size.
VENDOR_LEAVE_OUT = {"timm": ("data/_info",)}
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


def vendored_packages(architecture: str) -> tuple[str, ...]:
    """The packages an architecture needs at serving time beyond the container's torch/torchvision/Pillow/numpy."""
    return ("timm",) if is_timm(architecture) else ()


def vendor(package: str, code: Path) -> str:
    """Copy the installed pure-Python ``package`` into ``code/`` (no ``__pycache__``, nothing of
    ``VENDOR_LEAVE_OUT``), with its METADATA and licence files in ``code/<package>-<version>.dist-info/``;
    returns its version."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError(
            f'{package} is not installed here, so it cannot be copied into the artifact: pip install -e ".[training]"'
        )
    source = Path(next(iter(spec.submodule_search_locations)))
    native = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.suffix in NATIVE_SUFFIXES)
    if native:
        raise ArtifactError(f"{package} at {source} is not pure Python ({', '.join(native[:3])}): cannot vendor it")
    dist = importlib.metadata.distribution(package)
    left_out = {source / part for part in VENDOR_LEAVE_OUT.get(package, ())}

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or n.endswith(".pyc") or Path(directory) / n in left_out}

    shutil.copytree(source, code / package, ignore=ignore)
    info = code / f"{package}-{dist.version}.dist-info"
    for file in dist.files or ():
        parts = file.parts
        if parts[0].endswith(".dist-info") and (
            file.name == "METADATA" or "licenses" in parts or file.name.upper().startswith(("LICENSE", "NOTICE"))
        ):
            target = info.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dist.locate_file(file), target)
    return dist.version


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
    code = model_dir / "code"
    shutil.rmtree(code, ignore_errors=True)  # no code (or vendored package) of an earlier run stays behind
    code.mkdir()
    for name in CODE_FILES:
        shutil.copy2(HERE / name, code / name)
    vendored = {package: vendor(package, code) for package in vendored_packages(str(config.get("architecture")))}
    config = {
        "format": FORMAT,
        **config,
        VENDORED_KEY: vendored,
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


def extract(tarball: Path, destination: Path, *, offline: bool = True) -> Path:
    """Unpack safely (no absolute paths, no ``..``, no links) and check the layout (``check_model_dir``)."""
    check_model_dir(_unpack(tarball, destination), offline=offline)
    return destination


def _unpack(tarball: Path, destination: Path) -> Path:
    with tarfile.open(tarball, "r:*") as tar:
        tar.extractall(destination, filter="data")
    return destination


def check_model_dir(model_dir: Path, *, offline: bool = True) -> dict[str, Any]:
    """The config, after checking every file is there and passes the endpoint's own ``check_artifact``, and that
    serving it installs nothing (``install_problems``). ``offline=False`` (the local twin, which serves with this
    environment's packages) logs those problems instead of refusing the artifact."""
    expected = (WEIGHTS_FILE, LABELS_FILE, CONFIG_FILE, *(f"code/{f}" for f in CODE_FILES))
    missing = [name for name in expected if not (model_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"{model_dir} is not a model artifact: missing {', '.join(missing)}")
    config = check_artifact(model_dir).config
    problems = install_problems(model_dir, config)
    if problems and offline:
        raise ArtifactError(f"{model_dir}: {'; '.join(problems)}; write the model dir again with this artifact.py")
    for problem in problems:
        LOG.warning("%s: %s (it serves here, with this environment's packages)", model_dir, problem)
    return config


def install_problems(model_dir: Path, config: dict[str, Any]) -> list[str]:
    """What an endpoint would have to download at start for this artifact: packages its architecture needs that
    are not in code/, and a code/requirements.txt with anything to install. Empty for an artifact written here."""
    vendored = config.get(VENDORED_KEY, {})
    if not isinstance(vendored, dict):
        return [f"{CONFIG_FILE}: {VENDORED_KEY} must map package names to versions, not {vendored!r}"]
    problems = []
    needed = [p for p in vendored_packages(config["architecture"]) if p not in vendored]
    missing = [f"code/{p}/__init__.py" for p in vendored if not (model_dir / "code" / p / "__init__.py").is_file()]
    if needed or missing:
        problems.append(
            f"{config['architecture']} needs {', '.join(needed + missing)} inside the artifact, or the endpoint "
            "would have to install it at start"
        )
    requirements = model_dir / "code" / "requirements.txt"
    if requirements.is_file() and _installs(requirements):
        problems.append(
            f"code/requirements.txt asks the container to pip-install {', '.join(_installs(requirements))} at start "
            "(no network-isolated endpoint can)"
        )
    return problems


def _installs(requirements: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


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
