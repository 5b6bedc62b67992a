"""The debugger's eyes: per-layer statistics of a model in training, every ``interval`` steps.

For each parameter that trains (``requires_grad`` and a gradient this step: frozen layers are skipped, the
smdebug failure mode), at a sampled step: the gradient norm, the weight norm, the update/weight ratio
(‖w_t − w_{t−1}‖ / ‖w_{t−1}‖, from a snapshot taken the step before), and NaN/Inf counts. For activation
modules (ReLU family, GELU, SiLU, Sigmoid, Tanh) forward hooks, live only on sampled steps, record the
fraction of zeros (dead units), the saturated fraction (sigmoid/tanh near their bounds) and NaN/Inf counts.
Collections as SageMaker Debugger names them: losses, gradients, weights, biases, activations.

    used by debugger.py; not run on its own
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.ELU)
SATURATING = (nn.Sigmoid, nn.Tanh)
SAMPLE_ITEMS = 4  # batch items whose activations are counted element by element (zeros, saturation)
RECTIFYING = (nn.ReLU, nn.ReLU6)  # a unit can die: zero output for every input


@dataclass
class TensorStats:
    """A trainer callback; ``records`` holds one dict per sampled step: {step, epoch, loss, params, activations}."""

    interval: int = 10
    collections: frozenset[str] = frozenset({"losses", "gradients", "weights", "biases", "activations"})
    records: list[dict[str, Any]] = field(default_factory=list)
    intervals: dict[str, int] = field(default_factory=dict)  # per collection, where it differs from ``interval``

    def __post_init__(self) -> None:
        self._snapshot: dict[str, torch.Tensor] = {}
        self._hooks: list[Any] = []
        self._activations: dict[str, dict[str, float]] = {}
        self._capturing = False
        self._active: frozenset[str] = frozenset()  # the collections this sampled step records

    def attach(self, model: nn.Module, next_step: int = 1) -> None:
        """Register activation hooks once (they record only on sampled steps) and arm for ``next_step``."""
        if "activations" in self.collections and not self._hooks:
            for name, module in model.named_modules():
                if isinstance(module, ACTIVATIONS):
                    self._hooks.append(module.register_forward_hook(self._activation_hook(name, module)))
        self.arm(model, next_step)

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def due(self, global_step: int) -> frozenset[str]:
        """The collections recorded at ``global_step`` (each every its own interval; all of them at step 1)."""
        return frozenset(
            c for c in self.collections if global_step == 1 or global_step % self.intervals.get(c, self.interval) == 0
        )

    def wants(self, global_step: int) -> bool:
        return bool(self.due(global_step))

    def arm(self, model: nn.Module, global_step: int) -> None:
        """Before step ``global_step`` runs: snapshot the weights and arm the hooks when it is sampled."""
        self._active = self.due(global_step)
        self._capturing = bool(self._active)
        if {"weights", "biases"} & self._active:
            self._snapshot = {n: p.detach().clone() for n, p in _named_trainable(model)}

    def on_step_end(self, trainer: Any, step: Any) -> None:
        """Record a sampled step (its gradients are still in ``.grad``), then arm for the next one."""
        self.after_step(trainer.model, step)
        self.arm(trainer.model, step.global_step + 1)

    def after_step(self, model: nn.Module, step: Any) -> dict[str, Any] | None:
        """After step ``step.global_step``: the record of a sampled step (gradients are still in ``.grad``)."""
        if not self._capturing:
            return None
        self._capturing = False
        # Every statistic stays on the device until one transfer at the end: no per-tensor sync on a GPU.
        names, rows = [], []
        nan = torch.tensor(float("nan"))
        wanted = bool({"gradients", "weights", "biases"} & self._active)
        for name, parameter in _named_trainable(model) if wanted else []:
            if parameter.grad is None:  # no gradient reached it this step (frozen branch, unused head)
                continue
            grad, weight = parameter.grad.detach().float(), parameter.detach().float()
            before = self._snapshot.get(name)
            nan = nan.to(weight.device)
            rows.append(
                torch.stack(
                    [
                        torch.linalg.vector_norm(grad),
                        grad.abs().mean(),
                        (~torch.isfinite(grad)).sum().float(),
                        torch.linalg.vector_norm(weight),
                        (~torch.isfinite(weight)).sum().float(),
                        nan if before is None else torch.linalg.vector_norm(before.float()),
                        nan if before is None else torch.linalg.vector_norm(weight - before.float()),
                    ]
                )
            )
            names.append((name, parameter.numel()))
        values = torch.stack(rows).cpu().tolist() if rows else []
        params = {}
        for (name, numel), (g_norm, g_mean, g_bad, w_norm, w_bad, previous, change) in zip(names, values, strict=True):
            kind = "biases" if name.endswith("bias") else "weights"
            entry: dict[str, float] = {"numel": numel}
            if "gradients" in self._active:
                entry.update(grad_norm=g_norm, grad_mean_abs=g_mean, grad_nonfinite=g_bad)
            if kind in self._active:
                entry.update(weight_norm=w_norm, weight_nonfinite=w_bad)
                if previous == previous:  # a snapshot was taken (not NaN)
                    entry["update_ratio"] = change / previous if previous > 0 else float("inf") if change else 0.0
            params[name] = entry
        record = {
            "global_step": step.global_step,
            "epoch": step.epoch + 1,
            "params": params,
            "activations": {name: _resolved(stats) for name, stats in self._activations.items()},
        }
        if "losses" in self._active:
            record["loss"] = step.loss
        self._snapshot, self._activations, self._active = {}, {}, frozenset()
        self.records.append(record)
        return record

    def _activation_hook(self, name: str, module: nn.Module) -> Any:
        saturating = isinstance(module, SATURATING)
        rectifying = isinstance(module, RECTIFYING)

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            # Validation (without gradients) runs between a sampled step's arming and its forward pass: not
            # recorded. Not module.training: a frozen BatchNorm puts its fused activation in eval mode too.
            if "activations" not in self._active or not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                return
            # Activations can be large (batch x channels x 112 x 112): reductions that need no temporary tensor
            # run over all of it (sum, norm, per-channel maxima: a few ms each on a CPU); counts that do (zeros,
            # saturated values) over the first SAMPLE_ITEMS items of the batch; NaN/Inf show in the sum, and
            # are counted exactly only then.
            values = output.detach().float()
            sample = values[:SAMPLE_ITEMS] if values.dim() >= 2 else values
            size = max(1, sample.numel())
            parts = [1 - torch.count_nonzero(sample) / size, values.sum(), torch.linalg.vector_norm(values)]
            keys = ["zero_fraction", "_sum", "_norm"]
            if saturating:
                low = 0.0 if isinstance(module, nn.Sigmoid) else -1.0
                near = ((sample - low).abs() < 1e-3) | ((1 - sample).abs() < 1e-3)
                parts.append(torch.count_nonzero(near) / size)
                keys.append("saturated_fraction")
            if rectifying and values.dim() >= 2:  # channels (dim 1) with no positive output anywhere in the batch
                peak = values.amax(dim=[d for d in range(values.dim()) if d != 1])
                parts.append((peak <= 0).float().mean())
                keys.append("dead_fraction")
            if values.is_cuda or not bool(torch.isfinite(parts[1])):  # on a GPU the pass is cheaper than a sync
                parts.append((~torch.isfinite(values)).sum().float())
                keys.append("nonfinite")
            stats = {"kind": type(module).__name__, "_values": (keys, torch.stack(parts)), "_numel": values.numel()}
            self._activations[name] = stats

        return hook


def _resolved(stats: dict[str, Any]) -> dict[str, Any]:
    """The device-side numbers, fetched: mean and standard deviation from the sum and the norm."""
    keys, values = stats.pop("_values")
    count = stats.pop("_numel")
    stats.update(zip(keys, values.cpu().tolist(), strict=True))
    total, norm = stats.pop("_sum"), stats.pop("_norm")
    mean = total / max(1, count)
    spread = norm * norm / max(1, count) - mean * mean  # NaN stays NaN (max() would hide it)
    variance = (max(0.0, spread) if math.isfinite(spread) else spread) * count / max(1, count - 1)
    stats["mean"], stats["std"] = mean, math.sqrt(variance) if math.isfinite(variance) else float("nan")
    stats.setdefault("nonfinite", 0.0)
    return stats


def _named_trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]
