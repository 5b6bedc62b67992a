"""SageMaker PyTorch inference handlers: ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``.

One job: serve a breedfilter ``model.tar.gz`` (``model.pth`` + ``labels.json`` + ``config.json`` +
``code/``) under the endpoint contract of DESIGN.md. The SageMaker PyTorch container imports this file as
``code/inference.py``; the local endpoint server calls ``model_fn`` and ``predict_bytes``.

- Request: image bytes (``image/jpeg``, ``image/png``, ``image/webp``, ``application/x-image``,
  ``application/octet-stream``), or a batch ``application/json`` ``{"images": ["<base64>", ...]}``
  (also ``{"instances": [{"b64": "<base64>"}, ...]}``), at most ``BREEDFILTER_MAX_BATCH`` (64) images.
- Answer (``application/json``): ``{"predictions": [{"label", "index", "probability"}, ...top-k, best first],
  "model": {"name", "version"}, "known": bool, "unknown_score": float|null, "threshold": float|null}``;
  a batch answers ``{"results": [<answer or {"error": {"reason", "status"}}>, ...], "model": {...}}``, so one
  bad image does not fail the others.
- Decisions (``open_set.pt``, fitted by train.py; see training/open_set.py): probabilities are calibrated
  (temperature scaling), ``known`` is false for an image of none of the labels (its ``unknown_score`` is above
  the model's own unknown threshold), ``threshold`` is the model's own probability threshold, chosen on
  validation for a target precision. An artifact without ``open_set.pt`` (trained before) still serves: raw
  softmax, every image known, ``unknown_score`` and ``threshold`` null, and ``model_fn`` logs that it is so.
- Bad input is a clear 4xx (``InferenceError``: 400 undecodable, 406 unacceptable Accept, 413 too many pixels or
  images, 415 unsupported content type); the container sends ``{"error": reason, "status": code}`` as the body.

Decoding and preprocessing are ``imaging.decode_rgb`` and ``imaging.eval_transform``: the functions train.py's
evaluation uses. Settings by environment: ``BREEDFILTER_TOP_K``, ``BREEDFILTER_MAX_BATCH``,
``BREEDFILTER_MAX_PIXELS``, ``BREEDFILTER_TORCH_THREADS``.

    python code/inference.py IMAGE...                   # in an unpacked artifact: classify files, print answers
    python training/inference.py --model-dir DIR IMAGE...
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import architectures
import imaging
import open_set
import s3_pointer

LOG = logging.getLogger("breedfilter.inference")

ARTIFACT_FORMATS = frozenset({"breedfilter-model/1"})
CONFIG_FILE = "config.json"
DEFAULT_WEIGHTS_FILE = "model.pth"
DEFAULT_LABELS_FILE = "labels.json"
DEFAULT_TOP_K = 3
MAX_BATCH = 64
# Dynamic batching of single-image requests (serve_deployment.py on Ray Serve, the twin's endpoint server): at
# most SERVE_MAX_BATCH images per forward pass, and a forming batch waits at most SERVE_BATCH_WAIT_S for more.
SERVE_MAX_BATCH = 16
SERVE_BATCH_WAIT_S = 0.005

IMAGE_CONTENT_TYPES = imaging.IMAGE_CONTENT_TYPES
JSON_CONTENT_TYPE = "application/json"
CONTENT_TYPES = IMAGE_CONTENT_TYPES | {JSON_CONTENT_TYPE}

try:  # in the SageMaker container: the toolkit answers these with their status code
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # locally: the same shape

    class _ToolkitError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``sagemaker_inference.errors.BaseInferenceToolkitError`` (same constructor, attributes)."""

        def __init__(self, status_code: int, message: str, phrase: str):
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)


class InferenceError(_ToolkitError):
    """A request the model will not answer: ``status_code`` 4xx, ``reason`` for people, ``message`` JSON body.

    The SageMaker toolkit sends ``message`` (then a traceback line) with ``status_code``; the local endpoint
    server can use ``status``/``reason`` (the same names as its own ``BadInput``).
    """

    def __init__(self, status_code: int, reason: str, phrase: str | None = None):
        self.reason = reason
        self.status = status_code
        super().__init__(status_code, json.dumps(self.body()), phrase or HTTPStatus(status_code).phrase)

    def body(self) -> dict[str, Any]:
        return {"error": self.reason, "status": self.status}

    def __str__(self) -> str:
        return f"{self.status} {self.phrase}: {self.reason}"

    @classmethod
    def from_input(cls, exc: imaging.ImageInputError) -> InferenceError:
        return cls(exc.status, exc.reason)


class ArtifactError(RuntimeError):
    """The model artifact is unusable: wrong format, corrupt weights, labels that do not fit, bad config."""


@dataclass(frozen=True)
class DecodeSettings:
    """How request bodies are decoded: ``input_fn`` has no model argument, so ``model_fn`` sets these."""

    draft_size: tuple[int, int] | None = None
    max_pixels: int = imaging.MAX_PIXELS
    max_batch: int = MAX_BATCH


@dataclass(frozen=True)
class LoadedModel:
    """What ``model_fn`` returns and ``predict_fn`` receives."""

    model: torch.nn.Module
    labels: tuple[str, ...]
    config: Mapping[str, Any]
    preprocessing: imaging.Preprocessing
    device: torch.device
    transform: Callable[[Image.Image], torch.Tensor]
    top_k: int
    decode: DecodeSettings
    detector: open_set.Detector | None = None
    tap: open_set.FeatureTap | None = None
    autocast_dtype: torch.dtype | None = None  # the forward pass's lower precision (None: fp32)

    @property
    def identity(self) -> dict[str, str]:
        return {"name": str(self.config.get("name", "unknown")), "version": str(self.config.get("version", "unknown"))}


_decode = DecodeSettings()  # replaced by model_fn with the loaded model's settings


# ---------------------------------------------------------------------------------------------------------------
# model_fn


@dataclass(frozen=True)
class CheckedArtifact:
    """What ``check_artifact`` found valid in a model dir, before any model is built."""

    config: dict[str, Any]
    labels: tuple[str, ...]
    weights_path: Path
    num_classes: int
    architecture: str
    preprocessing: imaging.Preprocessing
    open_set_path: Path | None = None


def check_artifact(model_dir: str | os.PathLike[str]) -> CheckedArtifact:
    """Check the artifact in ``model_dir``: format, weights sha256, labels vs num_classes, preprocessing,
    architecture. ``model_fn`` loads what it returns; ``artifact.py`` checks what it writes and unpacks with it."""
    root = Path(model_dir)
    config = _read_json(root / CONFIG_FILE, "config")
    if not isinstance(config, dict):
        raise ArtifactError(f"{root / CONFIG_FILE}: expected a JSON object, got {type(config).__name__}")
    if config.get("format") not in ARTIFACT_FORMATS:
        raise ArtifactError(
            f"{root / CONFIG_FILE}: unknown artifact format {config.get('format')!r}; "
            f"this inference.py reads {sorted(ARTIFACT_FORMATS)}"
        )
    weights_path = _member(root, config.get("weights_file", DEFAULT_WEIGHTS_FILE), "weights_file")
    labels_path = _member(root, config.get("labels_file", DEFAULT_LABELS_FILE), "labels_file")
    _verify_sha256(weights_path, config.get("weights_sha256"))

    labels = _read_labels(labels_path)
    num_classes = config.get("num_classes", len(labels))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ArtifactError(f"{root / CONFIG_FILE}: num_classes must be a positive integer, not {num_classes!r}")
    if len(labels) != num_classes:
        raise ArtifactError(
            f"{labels_path} has {len(labels)} labels but {CONFIG_FILE} says num_classes={num_classes}: "
            "labels and weights come from different trainings"
        )
    try:
        preprocessing = imaging.Preprocessing.from_dict(config.get("preprocessing"))
    except ValueError as exc:
        raise ArtifactError(f"{root / CONFIG_FILE}: {exc}") from None
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        raise ArtifactError(f"{root / CONFIG_FILE}: architecture must be a model name, not {architecture!r}")
    open_set_path = None
    if config.get("open_set_file") is not None:
        open_set_path = _member(root, config["open_set_file"], "open_set_file")
        _verify_sha256(open_set_path, config.get("open_set_sha256"), "open_set_sha256")
    return CheckedArtifact(config, labels, weights_path, num_classes, architecture, preprocessing, open_set_path)


def model_fn(model_dir: str) -> LoadedModel:
    """Load the artifact in ``model_dir`` after ``check_artifact``: the model in eval mode, ready to predict."""
    global _decode
    root = Path(model_dir)
    checked = check_artifact(root)
    config, labels, weights_path = checked.config, checked.labels, checked.weights_path
    num_classes, architecture, preprocessing = checked.num_classes, checked.architecture, checked.preprocessing
    top_k = _top_k(config, num_classes)
    decode = DecodeSettings(
        draft_size=preprocessing.draft_size(),
        max_pixels=_env_int("BREEDFILTER_MAX_PIXELS", imaging.MAX_PIXELS),
        max_batch=_env_int("BREEDFILTER_MAX_BATCH", MAX_BATCH),
    )

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = _configure_threads() if device.type == "cpu" else None
    network = architectures.build_model(architecture, num_classes, weights="none")
    _check_vendored(config, root)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(_plain_state_dict(state, weights_path), strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{weights_path} does not fit {architecture} with {num_classes} classes: {exc}") from None
    network.requires_grad_(False)
    network = network.eval().to(device, memory_format=torch.channels_last)
    detector = _load_detector(checked.open_set_path, network, num_classes)
    if detector is None:
        LOG.warning(
            "%s has no open_set.pt (trained before calibration existed): probabilities are the raw softmax, every "
            "image counts as one of the labels, and the answer has no threshold of its own; retrain with train.py "
            "to get calibrated probabilities, unknown-image detection and a threshold for a target precision",
            root,
        )

    loaded = LoadedModel(
        model=network,
        labels=labels,
        config=config,
        preprocessing=preprocessing,
        device=device,
        transform=imaging.eval_transform(preprocessing),
        top_k=top_k,
        decode=decode,
        detector=detector,
        tap=open_set.FeatureTap(architectures.head_module(network)) if detector is not None else None,
        autocast_dtype=serving_precision(device),
    )
    _decode = decode
    LOG.info(
        "loaded %s %s (%s, %d classes, top_k=%d) on %s%s, %s, from %s",
        loaded.identity["name"],
        loaded.identity["version"],
        architecture,
        num_classes,
        top_k,
        device,
        f" with {threads} threads" if threads else "",
        "fp32" if loaded.autocast_dtype is None else f"{loaded.autocast_dtype} autocast",
        root,
    )
    return loaded


def _check_vendored(config: Mapping[str, Any], root: Path) -> None:
    """Warn when a package the artifact carries in code/ (config.json ``vendored``, e.g. ``{"timm": "1.0.31"}``)
    was imported here in another version: the containers import code/'s copy first; the local twin imports
    training/ and this environment's packages, which can differ from what the artifact was trained with."""
    vendored = config.get("vendored") or {}
    for package, version in vendored.items() if isinstance(vendored, Mapping) else ():
        module = sys.modules.get(package)
        found = getattr(module, "__version__", None)
        if module is not None and found != version:
            LOG.warning(
                "%s carries %s %s in code/, but this process imported %s %s from %s: answers may differ from the "
                "endpoint's",
                root,
                package,
                version,
                package,
                found,
                getattr(module, "__file__", "?"),
            )


PRECISION_VARIABLE = "BREEDFILTER_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def serving_precision(device: torch.device) -> torch.dtype | None:
    """The forward pass's autocast dtype, chosen at load time from ``BREEDFILTER_PRECISION``:

    ``auto`` (the default) bf16 where the hardware runs it natively (a CUDA GPU that supports it, or a CPU with
    AVX512-BF16/AMX), else fp32; ``fp32`` none; ``bf16`` bfloat16 autocast; ``fp16`` float16 on a GPU.
    Probabilities, calibration and scores stay in float64/float32. Measured on dogs-imagewoof10's test photos
    (bench/serving_precision.py): bf16 +0.14 accuracy points, 2.7x the images/s of fp32 on an AVX512-BF16 CPU.
    """
    raw = os.environ.get(PRECISION_VARIABLE, "auto").strip().lower() or "auto"
    if raw not in PRECISIONS:
        raise ArtifactError(f"{PRECISION_VARIABLE}={raw!r}: expected one of {', '.join(PRECISIONS)}")
    if raw == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
        raw = "bf16" if native else "fp32"
    if raw == "fp16" and device.type != "cuda":
        raise ArtifactError(f"{PRECISION_VARIABLE}=fp16 needs a GPU; use bf16 or auto on a CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[raw]


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo where there is one."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing ({what} of the model artifact)") from None
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


def _member(root: Path, name: Any, key: str) -> Path:
    """A file named in config.json, which must be a plain file name inside the artifact."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in {".", ".."}:
        raise ArtifactError(f"{root / CONFIG_FILE}: {key} must be a file name inside the artifact, not {name!r}")
    path = root / name
    if not path.is_file():
        raise ArtifactError(f"{path}: missing ({key} in {CONFIG_FILE})")
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _verify_sha256(path: Path, expected: Any, key: str = "weights_sha256") -> None:
    if not isinstance(expected, str) or len(expected) != 64:
        raise ArtifactError(f"{CONFIG_FILE}: {key} must be a 64-digit hex digest, not {expected!r}")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ArtifactError(
            f"{path}: sha256 {actual} does not match {CONFIG_FILE} {key} {expected.lower()}: "
            "the file is corrupt or belongs to another artifact"
        )


def _load_detector(path: Path | None, network: torch.nn.Module, num_classes: int) -> open_set.Detector | None:
    """The calibration, unknown-image detector and thresholds in ``open_set.pt`` (None when the artifact has none)."""
    if path is None:
        return None
    try:
        detector = open_set.Detector.from_state(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # unpickling refused, wrong format, missing keys
        raise ArtifactError(f"{path}: not a usable open-set state ({type(exc).__name__}: {exc})") from None
    if detector.method is not None and detector.method not in open_set.METHODS:
        raise ArtifactError(f"{path}: unknown open-set method {detector.method!r}")
    head = architectures.head_module(network)
    features = getattr(head, "in_features", None)
    bank = detector.stats.get("knn_bank")
    if bank is not None and features is not None and bank.shape[1] != features:
        raise ArtifactError(f"{path}: its kNN bank has {bank.shape[1]} features, the model {features}")
    means = detector.stats.get("class_means")
    if means is not None and means.shape[0] != num_classes:
        raise ArtifactError(f"{path}: its class means are for {means.shape[0]} classes, the model has {num_classes}")
    return detector


def _read_labels(path: Path) -> tuple[str, ...]:
    labels = _read_json(path, "labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) and v.strip() for v in labels):
        raise ArtifactError(f"{path}: expected a non-empty JSON list of label names")
    duplicates = sorted({v for v in labels if labels.count(v) > 1})
    if duplicates:
        raise ArtifactError(f"{path}: duplicate labels {duplicates}")
    return tuple(labels)


def _plain_state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict, without the ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefixes."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}


def _top_k(config: Mapping[str, Any], num_classes: int) -> int:
    raw: Any = os.environ.get("BREEDFILTER_TOP_K") or config.get("top_k") or DEFAULT_TOP_K
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ArtifactError(f"top_k (BREEDFILTER_TOP_K or config.json top_k) must be a positive integer, not {raw!r}")
    return min(value, num_classes)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ArtifactError(f"{name} must be a positive integer, not {raw!r}")
    return value


def _configure_threads() -> int | None:
    """CPU threads per model-server worker: BREEDFILTER_TORCH_THREADS, else CPUs / workers, else torch's default.

    The container runs one process per worker (SAGEMAKER_MODEL_SERVER_WORKERS, else one per CPU on CPU
    instances), and torch would give each of them every core; OMP_NUM_THREADS, when set, already decided.
    """
    explicit = _env_int("BREEDFILTER_TORCH_THREADS", 0)
    if explicit:
        threads = explicit
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers_env = os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS")
        if workers_env and workers_env.isdigit() and int(workers_env) > 0:
            workers = int(workers_env)
        elif os.environ.get("SAGEMAKER_PROGRAM"):  # inside the SageMaker container: its default, a worker per CPU
            workers = cpus
        else:
            return torch.get_num_threads()  # a local process: torch's default
        threads = max(1, cpus // workers)
    torch.set_num_threads(threads)
    return threads


# ---------------------------------------------------------------------------------------------------------------
# input_fn


def input_fn(request_body: Any, content_type: str) -> Image.Image | list[Image.Image | imaging.ImageInputError]:
    """An RGB image (image content types), or a list of images and per-item errors (``application/json``)."""
    return decode_request(request_body, content_type, _decode)


def decode_request(
    body: Any, content_type: str | None, settings: DecodeSettings
) -> Image.Image | list[Image.Image | imaging.ImageInputError]:
    media_type = _media_type(content_type)
    if media_type in IMAGE_CONTENT_TYPES:
        data = _as_bytes(body)
        try:
            return imaging.decode_rgb(data, draft_size=settings.draft_size, max_pixels=settings.max_pixels)
        except imaging.ImageInputError as exc:
            raise InferenceError.from_input(exc) from None
    if media_type == JSON_CONTENT_TYPE:
        payload = _json_payload(body)
        if s3_pointer.is_pointer(payload):  # a photo too large for a request body: the endpoint reads it
            try:
                data = s3_pointer.read(payload)
                return imaging.decode_rgb(data, draft_size=settings.draft_size, max_pixels=settings.max_pixels)
            except s3_pointer.PointerError as exc:
                raise InferenceError(exc.status, exc.reason) from None
            except imaging.ImageInputError as exc:
                raise InferenceError.from_input(exc) from None
        return _decode_batch(payload, settings)
    raise InferenceError(
        415, f"unsupported content type {content_type!r}; send one of {', '.join(sorted(CONTENT_TYPES))}"
    )


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if body is None:
        return b""
    raise InferenceError(400, f"expected the image as binary data, got {type(body).__name__}")


def _json_payload(body: Any) -> Any:
    try:
        return json.loads(body if isinstance(body, str) else _as_bytes(body))  # bytes: UTF-8/16/32 detected
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InferenceError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InferenceError(400, "request body is JSON nested too deeply") from None


def _decode_batch(payload: Any, settings: DecodeSettings) -> list[Image.Image | imaging.ImageInputError]:
    items = _batch_items(payload)
    if not items:
        raise InferenceError(400, "the batch has no images")
    if len(items) > settings.max_batch:
        raise InferenceError(413, f"batch of {len(items)} images exceeds the limit of {settings.max_batch}")
    decoded: list[Image.Image | imaging.ImageInputError] = []
    pixels = 0
    for position, item in enumerate(items):
        try:
            data = _b64_item(item, position)
            image = imaging.decode_rgb(data, draft_size=settings.draft_size, max_pixels=settings.max_pixels)
        except imaging.ImageInputError as exc:
            decoded.append(exc)
            continue
        pixels += image.width * image.height
        if pixels > settings.max_pixels:  # the whole batch is held decoded at once: one image's cap for all
            raise InferenceError(
                413,
                f"the batch decodes to more than {settings.max_pixels} pixels (at image {position}); "
                f"send fewer or smaller images per request",
            )
        decoded.append(image)
    return decoded


def _batch_items(payload: Any) -> list[Any]:
    expected = 'expected {"images": ["<base64>", ...]} or {"instances": [{"b64": "<base64>"}, ...]}'
    if not isinstance(payload, dict):
        raise InferenceError(400, f"{expected}, got JSON {type(payload).__name__}")
    for key in ("images", "instances"):
        if key in payload:
            items = payload[key]
            if not isinstance(items, list):
                raise InferenceError(400, f"{expected}: {key!r} is {type(items).__name__}, not a list")
            return items
    raise InferenceError(400, f"{expected}, got keys {sorted(payload)}")


def _b64_item(item: Any, position: int) -> bytes:
    if isinstance(item, dict) and isinstance(item.get("b64"), str):
        item = item["b64"]
    if not isinstance(item, str):
        raise imaging.ImageInputError(f"item {position}: expected a base64 string or {{'b64': ...}}", 400)
    if item.startswith("data:") and "," in item:  # a data URL: data:image/jpeg;base64,....
        item = item.split(",", 1)[1]
    compact = "".join(item.split()).translate(str.maketrans("-_", "+/"))  # MIME line breaks, URL-safe alphabet
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise imaging.ImageInputError(f"item {position}: invalid base64 ({exc})", 400) from None


# ---------------------------------------------------------------------------------------------------------------
# predict_fn


def predict_fn(input_data: Any, model: LoadedModel) -> dict[str, Any]:
    """The answer ``output_fn`` serialises: ``{"predictions", "model"}``, or ``{"results", "model"}`` for a batch."""
    if isinstance(input_data, Image.Image):
        return {**classify_images(model, [input_data])[0], "model": model.identity}
    if isinstance(input_data, imaging.ImageInputError):
        raise InferenceError.from_input(input_data)
    if isinstance(input_data, list):
        results: list[dict[str, Any]] = [{} for _ in input_data]
        images = [(i, item) for i, item in enumerate(input_data) if isinstance(item, Image.Image)]
        for i, item in enumerate(input_data):
            if not isinstance(item, Image.Image):
                error = item if isinstance(item, imaging.ImageInputError) else imaging.ImageInputError(str(item))
                results[i] = {"error": {"reason": error.reason, "status": error.status}}
        if images:
            ranked = classify_images(model, [image for _, image in images])
            for (i, _), answer in zip(images, ranked, strict=True):
                results[i] = {**answer, "model": model.identity}
        return {"results": results, "model": model.identity}
    raise TypeError(f"predict_fn expects a PIL image or a list from input_fn, not {type(input_data).__name__}")


def classify_images(model: LoadedModel, images: list[Image.Image]) -> list[dict[str, Any]]:
    """Per image: ``predictions`` (calibrated top-k), ``known``, ``unknown_score`` and ``threshold``."""
    return classify_tensors(model, [model.transform(image) for image in images])


def classify_tensors(model: LoadedModel, tensors: list[torch.Tensor]) -> list[dict[str, Any]]:
    """``classify_images`` on images already through ``model.transform`` (servers transform in the request's
    thread and batch the forward pass). One forward pass at a time per model: the feature tap is shared."""
    batch = torch.stack(tensors)
    batch = batch.to(model.device, memory_format=torch.channels_last, non_blocking=True)
    lower = model.autocast_dtype
    with torch.inference_mode():
        with torch.autocast(model.device.type, dtype=lower or torch.float32, enabled=lower is not None):
            logits = model.model(batch)
        logits = logits.float()
        if model.detector is None or model.tap is None:
            probabilities = torch.softmax(logits.double(), dim=1)
            unknown_scores, known = None, torch.ones(len(tensors), dtype=torch.bool)
            threshold = None
        else:
            probabilities, unknown_scores, known = model.detector.decide(logits, model.tap.take().float())
            threshold = model.detector.probability_threshold
        top = probabilities.topk(model.top_k, dim=1, sorted=True)
    values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
    scores = None if unknown_scores is None else unknown_scores.cpu().tolist()
    known_list = known.cpu().tolist()
    answers = []
    for row, (row_values, row_indices) in enumerate(zip(values, indices, strict=True)):
        if not all(math.isfinite(v) for v in row_values) or (scores is not None and not math.isfinite(scores[row])):
            raise InferenceError(500, "the model produced non-finite scores")
        answers.append(
            {
                "predictions": [
                    {"label": model.labels[index], "index": int(index), "probability": float(value)}
                    for value, index in zip(row_values, row_indices, strict=True)
                ],
                "known": bool(known_list[row]),
                "unknown_score": None if scores is None else float(scores[row]),
                "threshold": threshold,
            }
        )
    return answers


# ---------------------------------------------------------------------------------------------------------------
# output_fn


def output_fn(prediction: Mapping[str, Any], accept: str | None) -> str:
    """JSON text of ``predict_fn``'s answer; 406 unless ``accept`` allows application/json."""
    if not _accepts_json(accept):
        raise InferenceError(406, f"cannot answer as {accept!r}; the model answers {JSON_CONTENT_TYPE}")
    return json.dumps(prediction)


def _accepts_json(accept: str | None) -> bool:
    ranges = [_media_type(part) for part in (accept or "").split(",")]
    return any(r in {"", "*/*", "application/*", JSON_CONTENT_TYPE} for r in ranges)


def predict_bytes(model: LoadedModel, body: bytes, content_type: str) -> dict[str, Any]:
    """input_fn -> predict_fn, with the model's own decode settings: the dict output_fn would serialise."""
    return predict_fn(decode_request(body, content_type, model.decode), model)


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    default_dir = here.parent if (here.parent / CONFIG_FILE).is_file() else None
    parser = argparse.ArgumentParser(description="Classify image files with a breedfilter model artifact.")
    parser.add_argument("--model-dir", type=Path, default=default_dir, required=default_dir is None)
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = model_fn(str(args.model_dir))
    failures = 0
    for path in args.images:
        try:
            answer: dict[str, Any] = predict_bytes(model, path.read_bytes(), "application/x-image")
        except InferenceError as exc:
            failures += 1
            answer = exc.body()
        print(f"{path}\t{json.dumps(answer)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
