"""Models by name: torchvision's (``resnet50``, ``efficientnet_b0``, ``convnext_tiny``…) and timm's (``timm/<name>``).

One job: build a classifier with a new head for ``num_classes``, from ImageNet weights, a local state dict, or
nothing, and say how its inputs must be preprocessed (taken from the weights' own config, never a hard-coded
mean/std). train.py builds the model with it; inference.py rebuilds the same architecture to load the artifact.

    python training/architectures.py resnet50 timm/tf_efficientnet_lite0    # prints each model's preprocessing
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import imaging

TIMM_PREFIX = "timm/"
_AUXILIARY_HEADS = frozenset({"googlenet", "inception_v3"})
WEIGHTS_CHOICES = ("imagenet", "none", "PATH")
PRETRAINED_HEAD_ATTRIBUTE = "breedfilter_pretrained_head"


class WeightsUnavailable(RuntimeError):
    """The requested pretrained weights cannot be had (offline, unknown file, wrong architecture)."""


class UnknownArchitecture(ValueError):
    """The model name is neither a torchvision classification model nor ``timm/<a timm model>``."""


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def build_model(name: str, num_classes: int, weights: str = "none") -> nn.Module:
    """``name`` with a fresh ``num_classes`` head; ``weights``: ``imagenet``, ``none`` or a state dict file."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, not {num_classes}")
    if weights == "imagenet":
        return _timm_imagenet(name, num_classes) if is_timm(name) else _torchvision_imagenet(name, num_classes)
    model = _timm(name, num_classes) if is_timm(name) else _torchvision(name, num_classes)
    if weights != "none":
        load_backbone_state(model, Path(weights), name)
    return model


def pretrained_head(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The pretrained weights' own classifier (ImageNet's ``weight`` and ``bias``) that the new head replaced,
    when it fits the same features; None for ``--weights none`` or weights without it. open_set.py uses it."""
    head = getattr(model, PRETRAINED_HEAD_ATTRIBUTE, None)
    return dict(head) if head else None


def _keep_pretrained_head(model: nn.Module, state: Mapping[str, torch.Tensor], head_keys: set[str]) -> None:
    """Remember the pretrained classifier (from ``state``) whose input is the new head's input."""
    new_head = head_module(model)
    weight_key = next((k for k in head_keys if k.endswith("weight")), None)
    if weight_key is None or weight_key not in state or not isinstance(new_head, nn.Linear):
        return
    weight = state[weight_key]
    if weight.ndim != 2 or weight.shape[1] != new_head.in_features:
        return
    kept = {"weight": weight.detach().float().cpu().clone()}
    bias_key = weight_key.removesuffix("weight") + "bias"
    if bias_key in state:
        kept["bias"] = state[bias_key].detach().float().cpu().clone()
    object.__setattr__(model, PRETRAINED_HEAD_ATTRIBUTE, kept)


def default_preprocessing(name: str) -> imaging.Preprocessing:
    """How the model's pretrained weights expect their input: resize, crop, interpolation, mean/std."""
    if is_timm(name):
        cfg = _timm_module().create_model(name.removeprefix(TIMM_PREFIX), pretrained=False).pretrained_cfg
        crop = int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        return imaging.Preprocessing(
            resize=math.floor(crop / crop_pct),
            crop=crop,
            interpolation=str(cfg.get("interpolation") or "bilinear"),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
        )
    transforms = _torchvision_weights(name).transforms()
    return imaging.Preprocessing(
        resize=int(transforms.resize_size[0]),
        crop=int(transforms.crop_size[0]),
        interpolation=transforms.interpolation.value,
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
    )


def head_module(model: nn.Module) -> nn.Module:
    """The classification layer that is new for our classes (timm's ``get_classifier``, else the last Linear)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UnknownArchitecture(f"{type(model).__name__} has no Linear classification layer")
    return linears[-1]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone, head) parameters: the head gets its own learning rate; the backbone can be frozen."""
    head_ids = {id(p) for p in head_module(model).parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    head = [p for p in model.parameters() if id(p) in head_ids]
    return backbone, head


def init_head(model: nn.Module, mode: str) -> None:
    """Re-initialise the new head: ``zero`` (BiT's fine-tuning practice: every class starts at chance, so the
    first steps do not fight random logits) or ``default`` (``nn.Linear``'s own, what ``model.fc = nn.Linear``
    gives). timm's EfficientNet initialises a 3-class head with weights up to ±0.58, which on 1280 pretrained
    features starts at a loss near 3.5 instead of ln 3."""
    head = head_module(model)
    if not isinstance(head, nn.Linear):
        raise UnknownArchitecture(f"cannot initialise a {type(head).__name__} head")
    if mode == "zero":
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    elif mode == "default":
        head.reset_parameters()
    else:
        raise ValueError(f"unknown head init {mode!r}: zero or default")


def load_backbone_state(model: nn.Module, path: Path, name: str) -> None:
    """Load a local state dict; the head is taken only when its shape matches (else it stays new)."""
    if not path.is_file():
        raise WeightsUnavailable(f"--weights {path}: no such file (use imagenet, none, or a state dict file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(f"--weights {path}: not a loadable state dict ({exc})") from exc
    state = dict(_unwrap_state(state))
    own = model.state_dict()
    head_keys = {k for k, _ in _prefixed(head_module(model), model)}
    _keep_pretrained_head(model, state, head_keys)
    for key in head_keys & state.keys():
        if state[key].shape != own[key].shape:
            del state[key]  # an ImageNet head (1000 classes): ours stays freshly initialised
    missing = sorted(own.keys() - state.keys() - head_keys)
    unexpected = sorted(state.keys() - own.keys())
    resized = sorted(k for k in state.keys() & own.keys() if state[k].shape != own[k].shape)
    if missing or unexpected or resized:
        raise WeightsUnavailable(
            f"--weights {path} does not fit {name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}), "
            f"{len(resized)} of another shape (e.g. {resized[:3]})"
        )
    model.load_state_dict(state, strict=False)


def _unwrap_state(state: Any) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model", "model_state"):
            if wrapper in state and isinstance(state[wrapper], Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping):
        raise WeightsUnavailable(f"expected a state dict (a mapping of tensors), got {type(state).__name__}")
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            yield key.removeprefix("module.").removeprefix("_orig_mod."), value


def _prefixed(module: nn.Module, root: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    names = {id(m): n for n, m in root.named_modules()}
    prefix = names[id(module)]
    for key, value in module.state_dict().items():
        yield (f"{prefix}.{key}" if prefix else key), value


def _offline_hint(name: str, exc: BaseException, which: str = "") -> WeightsUnavailable:
    return WeightsUnavailable(
        f"could not get ImageNet weights {which or 'for ' + name} ({type(exc).__name__}: {exc}). "
        f"Offline? Pass --weights PATH "
        f"(a local state dict file for {name}), or --weights none to train from scratch."
    )


def _torchvision_weights(name: str) -> Any:
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(name).DEFAULT
    except (ValueError, KeyError) as exc:
        raise UnknownArchitecture(_unknown(name)) from exc


def _torchvision(name: str, num_classes: int) -> nn.Module:
    import torchvision.models
    from torchvision.models import get_model, list_models

    if name not in list_models(module=torchvision.models):
        raise UnknownArchitecture(_unknown(name))
    if name in _AUXILIARY_HEADS:
        raise UnknownArchitecture(
            f"{name} is not supported: in training it answers with auxiliary heads besides its logits; "
            f"use resnet50, efficientnet_b0, convnext_tiny or another model with one head"
        )
    return get_model(name, weights=None, num_classes=num_classes)


def _torchvision_imagenet(name: str, num_classes: int) -> nn.Module:
    weights = _torchvision_weights(name)
    model = _torchvision(name, num_classes)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch: all mean "no weights here"
        raise _offline_hint(name, exc, which=str(weights)) from exc
    head_keys = {k for k, _ in _prefixed(head_module(model), model)}
    _keep_pretrained_head(model, state, head_keys)
    model.load_state_dict({k: v for k, v in state.items() if k not in head_keys}, strict=False)
    return model


def _timm_module() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise UnknownArchitecture("timm models need the timm package: pip install timm") from exc
    return timm


def _timm(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    timm = _timm_module()
    bare = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(bare):
        raise UnknownArchitecture(_unknown(name))
    return timm.create_model(bare, pretrained=pretrained, num_classes=num_classes)


def _timm_imagenet(name: str, num_classes: int) -> nn.Module:
    try:
        model = _timm(name, num_classes, pretrained=True)
        full = _timm_module().create_model(name.removeprefix(TIMM_PREFIX), pretrained=True)  # cached by now
        _keep_pretrained_head(model, full.state_dict(), {k for k, _ in _prefixed(head_module(full), full)})
        return model
    except UnknownArchitecture:
        raise
    except Exception as exc:  # huggingface_hub / requests errors when offline
        raise _offline_hint(name, exc) from exc


def _unknown(name: str) -> str:
    return (
        f"unknown model {name!r}: use a torchvision classification model (resnet50, resnet18, resnet34, "
        f"efficientnet_b0, convnext_tiny, mobilenet_v3_large…) or timm/<name> (e.g. timm/tf_efficientnet_lite0)"
    )


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["resnet50"]:
        print(arg, default_preprocessing(arg).to_dict())
