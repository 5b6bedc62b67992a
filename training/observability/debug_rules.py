"""The debugger's rules: SageMaker Debugger's built-in rules, evaluated while the model trains.

Each rule watches what debugger.py feeds it: every step's loss (``on_step``), every TensorStats
record of a sampled step (``on_record``) and every epoch row with that epoch's per-class counts
(``on_epoch``). A hook returns a ``Finding`` when the rule fires, so the debugger can log it and stop training
when the rule's action is ``stop``. A condition that keeps holding fires once; it fires again only after it
cleared (so ``count`` in the verdict is the number of times a problem began, not the number of checks).
``verdict()`` gives the rule's result for debugger.json, fired or not, with the numbers it checked.

Names, parameters and defaults follow SageMaker's built-in rules where they carry over to what we measure
(norms and means per sampled step, epoch rows); each class docstring says how a rule was adapted and why.

    build_rules("default")                      every rule (--debugger-rules; see rule_spec.py)
    build_rules("none,exploding_tensor=stop")   only that one

    used by debugger.py; not run on its own
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from . import rule_spec

SOURCE = "debugger"
SATURATING = ("Sigmoid", "Tanh")  # gates, not hidden features: their spread says nothing about initialisation


@dataclass(frozen=True)
class Finding:
    """One firing: where (global step, 1-based epoch, tensor / layer / class) and why."""

    step: int | None
    epoch: int | None
    tensor: str | None
    evidence: str
    value: float | None = None


class Rule:
    """A rule's thresholds, firing state and hooks. Subclasses set the class attributes and override hooks."""

    name: ClassVar[str] = ""
    default_action: ClassVar[str] = "log"
    defaults: ClassVar[dict[str, float]] = {}
    integers: ClassVar[frozenset[str]] = frozenset()  # thresholds that count steps, epochs or records
    recommendation: ClassVar[str] = ""

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        self.action = action or self.default_action
        self.thresholds = {key: float(value) for key, value in {**self.defaults, **(thresholds or {})}.items()}
        for key, value in self.thresholds.items():
            self._validate(key, value)
        self.findings: list[Finding] = []
        self._holding: set[str] = set()

    def _validate(self, key: str, value: float) -> None:
        where = f"{self.name}.{key}={value:g}"
        if key not in self.defaults:
            raise rule_spec.RuleSpecError(f"{self.name} has no threshold {key!r} (it has: {', '.join(self.defaults)})")
        if not math.isfinite(value) or value < 0:
            raise rule_spec.RuleSpecError(f"{where}: must be a finite number >= 0")
        if key in self.integers:
            if value != int(value):
                raise rule_spec.RuleSpecError(f"{where}: must be a whole number")
            if ("patience" in key or key in ("num_steps", "steps")) and value < 1:
                raise rule_spec.RuleSpecError(f"{where}: must be at least 1")

    def _int(self, key: str) -> int:
        return int(self.thresholds[key])

    # -- hooks -------------------------------------------------------------------------------------------
    def on_step(self, global_step: int, epoch: int, loss: float) -> Finding | None:
        """Every training step (``epoch`` 1-based)."""
        return None

    def on_record(self, record: Mapping[str, Any]) -> Finding | None:
        """Every TensorStats record (a sampled step)."""
        return None

    def on_epoch(self, row: Mapping[str, Any], classes: Mapping[str, Sequence[Any]] | None) -> Finding | None:
        """End of an epoch: its row, and ``classes`` = {"labels", "seen", "wrong"} for that epoch."""
        return None

    # -- state -------------------------------------------------------------------------------------------
    @property
    def fired(self) -> bool:
        return bool(self.findings)

    def _fire(self, key: str, finding: Finding) -> Finding | None:
        """Record a firing unless the condition ``key`` already holds from an earlier check."""
        if key in self._holding:
            return None
        self._holding.add(key)
        self.findings.append(finding)
        return finding

    def _clear(self, key: str) -> None:
        self._holding.discard(key)

    def summary(self) -> tuple[str, str]:
        """("ok" or "not_applicable", what was checked with numbers) for a rule that did not fire."""
        raise NotImplementedError

    def verdict(self) -> dict[str, Any]:
        common = {"thresholds": self.thresholds, "action": self.action}
        if self.findings:
            first = self.findings[0]
            return rule_spec.verdict(
                self.name,
                SOURCE,
                "fired",
                first.evidence,
                self.recommendation,
                step=first.step,
                epoch=first.epoch,
                tensor=first.tensor,
                count=len(self.findings),
                **common,
            )
        status, evidence = self.summary()
        return rule_spec.verdict(self.name, SOURCE, status, evidence, self.recommendation, **common)


class ExplodingTensor(Rule):
    """SageMaker's ExplodingTensor: NaN/Inf or huge values. Fires at once on a non-finite training loss (every
    step), or in a record on: NaN/Inf in any weight or activation output, or a gradient or weight norm above
    ``threshold`` (SageMaker's default 1e20, applied here to the L2 norm of each tensor).

    NaN/Inf in gradients while every weight stayed finite is how a skipped optimizer step looks: the fp16 loss
    scaler (``--amp on`` on GPUs without bfloat16) skips a step whose gradients overflowed and lowers its
    scale, which is normal in the first steps. Without a scaler, a non-finite gradient reaches the weights in
    the same step (the record is taken after the optimizer step), so this rule fires on that instead. Skipped
    steps fire only when ``skipped_patience`` sampled steps in a row are skipped (training is not moving).
    """

    name = "exploding_tensor"
    default_action = "stop"
    defaults: ClassVar[dict[str, float]] = {"threshold": 1e20, "skipped_patience": 3}
    integers = frozenset({"skipped_patience"})
    recommendation = (
        "Lower --lr (try 10x smaller), keep --grad-clip on (e.g. 1.0), and if it happens with --amp on, "
        "retry with --amp off; check the training images for corrupt files (--verify-images true)."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._steps = 0
        self._records = 0
        self._largest_grad: tuple[float, str, int] | None = None
        self._largest_weight: tuple[float, str, int] | None = None
        self._skipped: list[int] = []  # steps of the current run of skipped records
        self._skipped_total = 0

    def on_step(self, global_step: int, epoch: int, loss: float) -> Finding | None:
        self._steps += 1
        if math.isfinite(loss):
            self._clear("loss")
            return None
        evidence = f"the training loss is {loss} at step {global_step} (epoch {epoch})"
        return self._fire("loss", Finding(global_step, epoch, "loss", evidence, loss))

    def on_record(self, record: Mapping[str, Any]) -> Finding | None:
        self._records += 1
        step, epoch = record.get("global_step"), record.get("epoch")
        limit = self.thresholds["threshold"]
        problems: list[tuple[str, str, float]] = []  # (tensor, what, value)
        bad_gradients: list[str] = []
        for name, entry in record.get("params", {}).items():
            grad, weight = entry.get("grad_norm"), entry.get("weight_norm")
            # A norm can overflow to inf from finite values (float32 squares above 3e38): that is a huge norm.
            if entry.get("weight_nonfinite", 0) > 0:
                problems.append((name, f"{entry['weight_nonfinite']:.0f} NaN/Inf weight values", math.nan))
            elif weight is not None:
                self._largest_weight = _larger(self._largest_weight, weight, name, step)
                if not weight <= limit:
                    problems.append((name, f"a weight norm of {weight:.3g} (above {limit:.0e})", weight))
            if entry.get("grad_nonfinite", 0) > 0:
                bad_gradients.append(name)
            elif grad is not None:
                self._largest_grad = _larger(self._largest_grad, grad, name, step)
                if not grad <= limit:
                    problems.append((name, f"a gradient norm of {grad:.3g} (above {limit:.0e})", grad))
        for name, entry in record.get("activations", {}).items():
            if entry.get("nonfinite", 0) > 0:
                problems.append((name, f"{entry['nonfinite']:.0f} NaN/Inf activation outputs", math.nan))
        if problems:
            self._skipped = []
            tensor, what, value = problems[0]
            more = [name for name, _, _ in problems[1:]]
            evidence = f"{what} in {tensor} at step {step} (epoch {epoch})"
            if more:
                evidence += f"; also {len(more)} more tensors ({_names(more)})"
            if bad_gradients:
                evidence += f"; NaN/Inf gradients in {len(bad_gradients)} tensors ({_names(bad_gradients)})"
            return self._fire("record", Finding(step, epoch, tensor, evidence, value))
        self._clear("record")
        if not bad_gradients:
            self._skipped = []
            self._clear("skipped")
            return None
        self._skipped.append(step)
        self._skipped_total += 1
        if len(self._skipped) < self._int("skipped_patience"):
            return None
        evidence = (
            f"NaN/Inf gradients with finite weights on {len(self._skipped)} sampled steps in a row "
            f"(steps {_steps(self._skipped)}): every optimizer step there was skipped, training is not moving; "
            f"first tensor {bad_gradients[0]}"
        )
        return self._fire("skipped", Finding(step, epoch, bad_gradients[0], evidence, math.inf))

    def summary(self) -> tuple[str, str]:
        if not self._steps and not self._records:
            return "not_applicable", "no training step was observed"
        parts = [f"no NaN/Inf in {self._steps} step losses and {self._records} sampled steps"]
        for label, largest in (("gradient", self._largest_grad), ("weight", self._largest_weight)):
            if largest:
                value, tensor, step = largest
                parts.append(f"largest {label} norm {value:.3g} ({tensor}, step {step})")
        parts[-1] += f", below {self.thresholds['threshold']:.0e}"
        if self._skipped_total:
            parts.append(f"{self._skipped_total} sampled steps skipped by the loss scaler (NaN/Inf gradients only)")
        return "ok", "; ".join(parts)


class VanishingGradient(Rule):
    """SageMaker's VanishingGradient: gradients whose mean absolute value is below ``threshold`` (1e-7).

    SageMaker fires on any one tensor; healthy networks always have a few (a bias before a BatchNorm, a quiet
    squeeze-excite path: 4-11% of tensors measured on timm EfficientNet/MobileNet and a pretrained
    EfficientNet-Lite0), so this rule fires when at least ``share`` of the trainable tensors that got a
    gradient are below the threshold, on ``patience`` sampled steps in a row. A zeroed network has 97-99% of
    its tensors at exactly 0. Healthy starts come close, for a step or a few: with a zero new head
    (--head-init zero) the first step's backbone gradients are all 0, and timm ResNets (whose residual
    blocks start with a zero last BatchNorm) have 52-78% of tensors below 1e-7 on the first steps.
    """

    name = "vanishing_gradient"
    defaults: ClassVar[dict[str, float]] = {"threshold": 1e-7, "share": 0.75, "patience": 2}
    integers = frozenset({"patience"})
    recommendation = (
        "Start from pretrained weights (--weights imagenet) rather than an untrained or zeroed network, check that "
        "the layers you mean to train are not frozen (--unfreeze-epoch), and try a larger --lr."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._records = 0
        self._run = 0
        self._smallest: tuple[float, str, int] | None = None
        self._largest_share: tuple[float, int] | None = None

    def on_record(self, record: Mapping[str, Any]) -> Finding | None:
        step, epoch = record.get("global_step"), record.get("epoch")
        values = {
            name: entry["grad_mean_abs"]
            for name, entry in record.get("params", {}).items()
            if "grad_mean_abs" in entry and math.isfinite(entry["grad_mean_abs"])
        }
        if not values:
            return None
        self._records += 1
        threshold = self.thresholds["threshold"]
        small = [name for name, value in values.items() if value < threshold]
        share = len(small) / len(values)
        for name, value in values.items():
            if self._smallest is None or value < self._smallest[0]:
                self._smallest = (value, name, step)
        if self._largest_share is None or share > self._largest_share[0]:
            self._largest_share = (share, step)
        if share < self.thresholds["share"] or not small:
            self._run = 0
            self._clear("vanishing")
            return None
        self._run += 1
        if self._run < self._int("patience"):
            return None
        evidence = (
            f"{len(small)} of {len(values)} trainable tensors ({share:.0%}) have a gradient mean-abs below "
            f"{threshold:.0e} on {self._run} sampled steps in a row (to step {step}), e.g. {_names(small)}"
        )
        return self._fire("vanishing", Finding(step, epoch, small[0], evidence, values[small[0]]))

    def summary(self) -> tuple[str, str]:
        if not self._records:
            return "not_applicable", "no gradient statistics were recorded (gradients collection off?)"
        value, tensor, step = self._smallest  # type: ignore[misc]
        share, share_step = self._largest_share  # type: ignore[misc]
        return "ok", (
            f"smallest gradient mean-abs {value:.3g} ({tensor}, step {step}) over {self._records} sampled steps; "
            f"at most {share:.0%} of tensors below {self.thresholds['threshold']:.0e} on one step "
            f"(step {share_step}; fires at {self.thresholds['share']:.0%})"
        )


class PoorWeightInitialization(Rule):
    """SageMaker's PoorWeightInitialization, on the sampled steps within the first ``steps`` global steps.

    SageMaker compares the variance of ReLU inputs across layers (max/min above 10) and the spread of the
    gradient distribution. We record activation outputs (their std per layer), gradient norms and weight
    norms, so this rule fires when one of these holds on ``patience`` sampled steps in a row:

    - a weight tensor (not a bias) is all zeros and its gradient is zero too: it can never move (a zeroed
      network). A zero new head (--head-init zero) gets a gradient, so it does not count;
    - activations collapsed: the output std of most (more than half) non-gating activation layers is below
      ``distribution_range`` (0.001);
    - the spread of activation std across those layers (max/min, zero-std layers left out) exceeds
      ``threshold``. On std, not variance, and 100, not 10: healthy default-initialised networks measured
      up to 24x (torchvision AlexNet, MobileNetV3: 21x, timm GhostNet: 12x; ResNets and EfficientNets 1-7x,
      a pretrained EfficientNet-Lite0 4.4x), while a deep MLP with N(0, 1) weights grows by ~6x per layer.
      Sigmoid and Tanh outputs (squeeze-excite gates) are left out of both activation checks.
    """

    name = "poor_weight_initialization"
    defaults: ClassVar[dict[str, float]] = {"threshold": 100.0, "distribution_range": 1e-3, "patience": 1, "steps": 10}
    integers = frozenset({"patience", "steps"})
    recommendation = (
        "Use pretrained weights (--weights imagenet) or the layers' default initialisation; only the new head may "
        "start at zero (--head-init zero). Check any custom init code for zeroed or badly scaled weights."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._records = 0
        self._run = 0
        self._std_range: tuple[float, float, int] | None = None  # (min, max, layers) over the window
        self._largest_spread: tuple[float, int] | None = None
        self._weights_checked = 0

    def on_record(self, record: Mapping[str, Any]) -> Finding | None:
        step, epoch = record.get("global_step"), record.get("epoch")
        if step is None or step > self._int("steps"):
            return None
        self._records += 1
        problem = self._problem(record)
        if problem is None:
            self._run = 0
            self._clear("init")
            return None
        self._run += 1
        if self._run < self._int("patience"):
            return None
        tensor, evidence, value = problem
        evidence += f" at step {step}" + (f" ({self._run} sampled steps in a row)" if self._run > 1 else "")
        return self._fire("init", Finding(step, epoch, tensor, evidence, value))

    def _problem(self, record: Mapping[str, Any]) -> tuple[str, str, float] | None:
        weights = {
            name: entry
            for name, entry in record.get("params", {}).items()
            if not name.endswith("bias") and entry.get("numel", 2) > 1 and "weight_norm" in entry
        }
        self._weights_checked = max(self._weights_checked, len(weights))
        stuck = [
            name
            for name, entry in weights.items()
            if entry["weight_norm"] == 0 and entry.get("grad_mean_abs", entry.get("grad_norm", 0.0)) == 0
        ]
        if stuck:
            evidence = (
                f"{len(stuck)} of {len(weights)} weight tensors are all zeros with a zero gradient, so they "
                f"cannot move ({_names(stuck)})"
            )
            return stuck[0], evidence, 0.0
        stds = {
            name: entry["std"]
            for name, entry in record.get("activations", {}).items()
            if entry.get("kind") not in SATURATING and math.isfinite(entry.get("std", math.nan))
        }
        if not stds:
            return None
        low, high = min(stds.values()), max(stds.values())
        previous = self._std_range
        self._std_range = (
            (min(previous[0], low), max(previous[1], high), len(stds)) if previous else (low, high, len(stds))
        )
        limit = self.thresholds["distribution_range"]
        collapsed = [name for name, value in stds.items() if value < limit]
        if len(collapsed) > len(stds) / 2:
            evidence = (
                f"activations collapsed: the output std of {len(collapsed)} of {len(stds)} activation layers is "
                f"below {limit:g} (largest {high:.3g}; {_names(collapsed)})"
            )
            return collapsed[0], evidence, low
        positive = {name: value for name, value in stds.items() if value > 0}
        if len(positive) < 2:
            return None
        smallest = min(positive, key=positive.__getitem__)
        largest = max(positive, key=positive.__getitem__)
        spread = positive[largest] / positive[smallest]
        if self._largest_spread is None or spread > self._largest_spread[0]:
            self._largest_spread = (spread, record.get("global_step", 0))
        if spread <= self.thresholds["threshold"]:
            return None
        evidence = (
            f"activation std spreads {spread:.3g}x across {len(positive)} layers (limit "
            f"{self.thresholds['threshold']:g}x): {positive[smallest]:.3g} in {smallest}, "
            f"{positive[largest]:.3g} in {largest}"
        )
        return smallest, evidence, spread

    def summary(self) -> tuple[str, str]:
        steps = self._int("steps")
        if not self._records:
            return "not_applicable", f"no sampled step within the first {steps} steps (a resumed run?)"
        parts = [f"{self._records} sampled steps within the first {steps} checked"]
        parts.append(f"no all-zero weight tensor among {self._weights_checked}")
        if self._std_range:
            low, high, layers = self._std_range
            text = f"activation std {low:.3g} to {high:.3g} across {layers} layers"
            if self._largest_spread:
                text += f" (largest spread {self._largest_spread[0]:.3g}x, limit {self.thresholds['threshold']:g}x)"
            parts.append(text)
        else:
            parts.append("no activation statistics (activations collection off?)")
        return "ok", "; ".join(parts)


class LossNotDecreasing(Rule):
    """SageMaker's LossNotDecreasing, on the loss of every training step in windows of ``num_steps`` steps.

    SageMaker compares single losses ``num_steps`` saved steps apart (saved every 500 steps by default); our
    losses are every step, with batch-size noise, so the rule compares window means instead (25 steps: the
    mean of a window moves a few percent by noise where the loss of one step moves 30% or more). After the
    first window (the start, a grace period), it fires when, for ``patience`` windows in a row:

    - stalled: the window's mean is not at least ``diff_percent`` below the first window's mean. Measured
      against the start and not against the previous window, so a run that learned and then converged to a
      plateau does not fire; a run that never learns (or fell back to its starting loss) does.
    - rising: the window's mean is above the lowest window mean so far by more than
      ``increase_threshold_percent`` of the first window's mean (SageMaker's "loss is increasing").

    A resumed run (first step seen > 1) has no start-of-training loss: only the rising check runs there.
    Non-finite losses are left to exploding_tensor.
    """

    name = "loss_not_decreasing"
    defaults: ClassVar[dict[str, float]] = {
        "num_steps": 25,
        "diff_percent": 10.0,
        "increase_threshold_percent": 50.0,
        "patience": 2,
    }
    integers = frozenset({"num_steps", "patience"})
    recommendation = (
        "Check the learning rate first (--lr: try 10x larger if the loss is flat, 10x smaller if it rises), that "
        "the model trains at all (--unfreeze-epoch, not an all-frozen network), and that the labels match the "
        "images; a model trained from scratch (--weights none) needs more --epochs."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._first_step: int | None = None
        self._steps = 0
        self._current: list[float] = []
        self._current_first = 0
        self._windows: list[tuple[int, int, float]] = []  # (first step, last step, mean loss)
        self._stalled = 0
        self._rising = 0
        self._largest_rise = 0.0

    def on_step(self, global_step: int, epoch: int, loss: float) -> Finding | None:
        if self._first_step is None:
            self._first_step = global_step
        if self._steps % self._int("num_steps") == 0:
            self._current_first = global_step
        self._steps += 1
        if math.isfinite(loss):
            self._current.append(loss)
        if self._steps % self._int("num_steps"):
            return None
        losses, self._current = self._current, []
        if not losses:
            return None
        mean = sum(losses) / len(losses)
        self._windows.append((self._current_first, global_step, mean))
        return self._check(global_step, epoch)

    def _check(self, step: int, epoch: int) -> Finding | None:
        if len(self._windows) < 2:
            return None
        start = self._windows[0][2]
        first, last, mean = self._windows[-1]
        if start <= 0:
            return None
        best = min(window[2] for window in self._windows)
        rise = (mean - best) / start * 100
        self._largest_rise = max(self._largest_rise, rise)
        progress = (start - mean) / start * 100
        resumed = self._first_step != 1
        self._stalled = self._stalled + 1 if not resumed and progress < self.thresholds["diff_percent"] else 0
        self._rising = self._rising + 1 if rise > self.thresholds["increase_threshold_percent"] else 0
        patience = self._int("patience")
        span = f"{patience} windows of {self._int('num_steps')} steps in a row"
        if self._rising >= patience:
            low = min(self._windows, key=lambda window: window[2])
            evidence = (
                f"the mean training loss rose to {mean:.4g} (steps {first}-{last}) from its lowest window mean "
                f"{best:.4g} (steps {low[0]}-{low[1]}): {rise:.0f}% of the starting loss {start:.4g}, above "
                f"{self.thresholds['increase_threshold_percent']:g}% ({span})"
            )
            if self._stalled >= patience:
                self._holding.add("stalled")  # back above its start: the same problem, reported once
            return self._fire("rising", Finding(step, epoch, "loss", evidence, mean))
        self._clear("rising")
        if self._stalled >= patience:
            evidence = (
                f"the mean training loss over steps {first}-{last} is {mean:.4g}, {_change(start, mean)} the first "
                f"window's {start:.4g} (steps {self._windows[0][0]}-{self._windows[0][1]}); it should be at least "
                f"{self.thresholds['diff_percent']:g}% below ({span})"
            )
            return self._fire("stalled", Finding(step, epoch, "loss", evidence, mean))
        self._clear("stalled")
        return None

    def summary(self) -> tuple[str, str]:
        size = self._int("num_steps")
        if len(self._windows) < 2:
            return "not_applicable", f"{self._steps} steps seen: the rule needs 2 windows of {size} steps"
        (first_a, first_b, start), (last_a, last_b, end) = self._windows[0], self._windows[-1]
        text = (
            f"{len(self._windows)} windows of {size} steps: mean loss {start:.4g} (steps {first_a}-{first_b}) to "
            f"{end:.4g} (steps {last_a}-{last_b}), {_change(start, end)} the first"
            if start > 0
            else f"{len(self._windows)} windows of {size} steps, starting loss {start:.4g}"
        )
        text += f"; largest rise {self._largest_rise:.0f}% of the starting loss"
        if self._first_step != 1:
            text += f"; resumed at step {self._first_step}, so only the rising check ran"
        return "ok", text


class Overfit(Rule):
    """SageMaker's Overfit, per epoch: (valid_loss - train_loss) / train_loss above ``ratio_threshold`` for
    ``patience`` epochs in a row, counting epochs whose last step is at or after ``start_step``.

    SageMaker's default ratio (0.1) would fire on the normal generalisation gap of a healthy fine-tune, so the
    default is 1.0 (validation loss at least double the training loss), and the gap must also exceed
    ``min_gap`` in absolute terms, so tiny losses on easy data (0.002 vs 0.02) do not fire. Our training loss
    is the epoch's running mean with augmentation and label smoothing, the validation loss plain
    cross-entropy, which only makes the rule more conservative.
    """

    name = "overfit"
    defaults: ClassVar[dict[str, float]] = {"ratio_threshold": 1.0, "min_gap": 0.25, "patience": 2, "start_step": 0}
    integers = frozenset({"patience", "start_step"})
    recommendation = (
        "Regularise or stop earlier: stronger --augment (trivialaugment), more --weight-decay, --label-smoothing "
        "0.1, fewer --epochs or --early-stopping-patience 2; more training images help most."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._last_step = 0
        self._epochs = 0
        self._run = 0
        self._largest: tuple[float, float, int] | None = None  # (ratio, gap, epoch)

    def on_step(self, global_step: int, epoch: int, loss: float) -> Finding | None:
        self._last_step = global_step
        return None

    def on_epoch(self, row: Mapping[str, Any], classes: Mapping[str, Sequence[Any]] | None) -> Finding | None:
        train, valid, epoch = row.get("train_loss"), row.get("valid_loss"), row.get("epoch")
        if train is None or valid is None or not (math.isfinite(train) and math.isfinite(valid)):
            return None
        if self._last_step < self._int("start_step"):
            return None
        self._epochs += 1
        gap = valid - train
        ratio = gap / train if train > 0 else (math.inf if gap > 0 else 0.0)
        if self._largest is None or ratio > self._largest[0]:
            self._largest = (ratio, gap, epoch)
        if ratio <= self.thresholds["ratio_threshold"] or gap <= self.thresholds["min_gap"]:
            self._run = 0
            self._clear("overfit")
            return None
        self._run += 1
        if self._run < self._int("patience"):
            return None
        evidence = (
            f"validation loss {valid:.4g} vs training loss {train:.4g} at epoch {epoch}: (valid - train) / train = "
            f"{ratio:.3g} above {self.thresholds['ratio_threshold']:g} and a gap of {gap:.3g} above "
            f"{self.thresholds['min_gap']:g}, {self._run} epochs in a row"
        )
        return self._fire("overfit", Finding(self._last_step or None, epoch, "valid_loss", evidence, ratio))

    def summary(self) -> tuple[str, str]:
        if not self._largest:
            return "not_applicable", "no epoch with finite training and validation losses was checked"
        ratio, gap, epoch = self._largest
        return "ok", (
            f"largest (valid - train) / train {ratio:.3g} at epoch {epoch} (gap {gap:.3g}) over {self._epochs} "
            f"epochs; fires above {self.thresholds['ratio_threshold']:g} with a gap above "
            f"{self.thresholds['min_gap']:g} for {self._int('patience')} epochs"
        )


class Overtraining(Rule):
    """SageMaker's Overtraining, per epoch: fires when the validation loss has not improved on its best by more
    than ``delta`` for ``patience_validation`` epochs, or the training loss has not for ``patience_train``
    epochs, while training goes on. SageMaker counts saved steps (10 and 5); an epoch is our unit, and 5
    epochs each: the default early stopping (--early-stopping-patience 3, on validation accuracy) usually
    ends such a run first, so this fires when early stopping is off or accuracy inches up while loss does not.
    """

    name = "overtraining"
    defaults: ClassVar[dict[str, float]] = {"patience_train": 5, "patience_validation": 5, "delta": 0.01}
    integers = frozenset({"patience_train", "patience_validation"})
    recommendation = (
        "Stop earlier: set --early-stopping-patience (e.g. 3) or fewer --epochs; the saved model is already the "
        "best epoch's, so the extra epochs only cost time."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._epochs = 0
        self._best: dict[str, tuple[float, int]] = {}  # "valid"/"train" -> (best loss, its epoch)
        self._last: dict[str, float] = {}
        self._history: dict[int, dict[str, float]] = {}  # epoch -> its losses

    def on_epoch(self, row: Mapping[str, Any], classes: Mapping[str, Sequence[Any]] | None) -> Finding | None:
        epoch = row.get("epoch")
        losses = {"valid": row.get("valid_loss"), "train": row.get("train_loss")}
        if epoch is None or any(v is None or not math.isfinite(v) for v in losses.values()):
            return None
        self._epochs += 1
        delta = self.thresholds["delta"]
        self._history[epoch] = dict(losses)
        stale = {}
        for key, value in losses.items():
            best = self._best.get(key)
            if best is None or value < best[0] - delta:
                self._best[key] = (value, epoch)
            stale[key] = epoch - self._best[key][1]
            self._last[key] = value
        finding = None
        for key, patience in (("valid", "patience_validation"), ("train", "patience_train")):
            if stale[key] < self._int(patience):
                self._clear(key)
                continue
            best, best_epoch = self._best[key]
            other = "train" if key == "valid" else "valid"
            evidence = (
                f"the {_split(key)} loss has not improved by more than {delta:g} for {stale[key]} epochs: best "
                f"{best:.4g} at epoch {best_epoch}, {losses[key]:.4g} at epoch {epoch} (the {_split(other)} loss "
                f"went from {self._history[best_epoch][other]:.4g} to {losses[other]:.4g} meanwhile)"
            )
            finding = finding or self._fire(key, Finding(None, epoch, f"{key}_loss", evidence, losses[key]))
        return finding

    def summary(self) -> tuple[str, str]:
        if not self._best:
            return "not_applicable", "no epoch with finite losses was checked"
        parts = []
        for key, patience in (("valid", "patience_validation"), ("train", "patience_train")):
            best, epoch = self._best[key]
            parts.append(
                f"{_split(key)} loss best {best:.4g} at epoch {epoch}, last {self._last[key]:.4g} "
                f"(fires after {self._int(patience)} epochs without a {self.thresholds['delta']:g} improvement)"
            )
        return "ok", f"{self._epochs} epochs: " + "; ".join(parts)


class ClassImbalance(Rule):
    """SageMaker's ClassImbalance, on the training labels and predictions the debugger counts per epoch.

    - counts: once ``samples`` training labels have been seen (SageMaker's parameter; it keeps a partial
      first epoch from judging), fires when the most-seen class was seen more than ``threshold_imbalance``
      times as often as the least-seen one, or a class was never seen (a class with no images at all is
      stopped earlier by the dataset checks);
    - mispredictions: from the second epoch on, fires when a class (seen at least 5 times that epoch) was
      mispredicted on more than ``threshold_misprediction`` of its training images while the model is right
      on more than 1 - threshold_misprediction of all of them (overall training error below 0.3 by default).
      SageMaker checks every class at every step; early in training every class is mostly wrong, which says
      nothing about imbalance, so the overall error must be low for one class's failure to stand out.
    """

    name = "class_imbalance"
    defaults: ClassVar[dict[str, float]] = {"threshold_imbalance": 10.0, "threshold_misprediction": 0.7, "samples": 500}
    integers = frozenset({"samples"})
    min_class_images = 5
    recommendation = (
        "Balance the training set: add images of the rare or mispredicted classes (or cap the common ones), and "
        "check those classes' labels; a stronger --augment helps rare classes a little."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._labels: list[str] = []
        self._seen: list[int] = []
        self._counts_checked = False
        self._worst: tuple[float, str, int] | None = None  # (misprediction rate, class, epoch) while checked
        self._misprediction_epochs = 0

    def on_epoch(self, row: Mapping[str, Any], classes: Mapping[str, Sequence[Any]] | None) -> Finding | None:
        if not classes or not classes.get("labels"):
            return None
        labels = [str(label) for label in classes["labels"]]
        seen = [int(n) for n in classes.get("seen", [0] * len(labels))]
        wrong = [int(n) for n in classes.get("wrong", [0] * len(labels))]
        if self._labels != labels:
            self._labels, self._seen = labels, [0] * len(labels)
        self._seen = [a + b for a, b in zip(self._seen, seen, strict=True)]
        epoch = row.get("epoch")
        return self._check_counts(epoch) or self._check_mispredictions(epoch, seen, wrong)

    def _check_counts(self, epoch: int | None) -> Finding | None:
        total = sum(self._seen)
        if total < self._int("samples"):
            return None
        self._counts_checked = True
        low = min(range(len(self._seen)), key=self._seen.__getitem__)
        high = max(range(len(self._seen)), key=self._seen.__getitem__)
        ratio = self._seen[high] / self._seen[low] if self._seen[low] else math.inf
        if ratio <= self.thresholds["threshold_imbalance"]:
            self._clear("counts")
            return None
        if self._seen[low] == 0:
            never = [label for label, n in zip(self._labels, self._seen, strict=True) if n == 0]
            evidence = (
                f"{len(never)} of {len(self._labels)} classes never seen in {total} training labels: {_names(never)}"
            )
        else:
            evidence = (
                f"class {self._labels[high]} was seen {self._seen[high]} times and {self._labels[low]} only "
                f"{self._seen[low]} in {total} training labels: a ratio of {ratio:.3g}, above "
                f"{self.thresholds['threshold_imbalance']:g}"
            )
        return self._fire("counts", Finding(None, epoch, self._labels[low], evidence, ratio))

    def _check_mispredictions(self, epoch: int | None, seen: list[int], wrong: list[int]) -> Finding | None:
        if epoch is None or epoch < 2 or not sum(seen):
            return None
        self._misprediction_epochs += 1
        limit = self.thresholds["threshold_misprediction"]
        overall = sum(wrong) / sum(seen)
        rates = {
            label: w / n for label, n, w in zip(self._labels, seen, wrong, strict=True) if n >= self.min_class_images
        }
        if not rates:
            return None
        worst = max(rates, key=rates.__getitem__)
        if self._worst is None or rates[worst] > self._worst[0]:
            self._worst = (rates[worst], worst, epoch)
        if rates[worst] <= limit or overall >= 1 - limit:
            self._clear("mispredictions")
            return None
        index = self._labels.index(worst)
        evidence = (
            f"class {worst}: {wrong[index]} of its {seen[index]} training images mispredicted in epoch {epoch} "
            f"({rates[worst]:.0%}, above {limit:.0%}) while the overall training error is {overall:.0%}"
        )
        return self._fire("mispredictions", Finding(None, epoch, worst, evidence, rates[worst]))

    def summary(self) -> tuple[str, str]:
        if not self._labels:
            return "not_applicable", "no per-class training counts were recorded"
        total = sum(self._seen)
        parts = []
        if self._counts_checked:
            low, high = min(self._seen), max(self._seen)
            parts.append(
                f"training labels per class {low} to {high} (ratio {high / low:.3g}, limit "
                f"{self.thresholds['threshold_imbalance']:g}) over {total} labels"
            )
        else:
            parts.append(f"class counts not judged: {total} labels seen, the rule waits for {self._int('samples')}")
        if self._worst:
            rate, label, epoch = self._worst
            parts.append(f"highest per-class training misprediction {rate:.0%} ({label}, epoch {epoch})")
        elif not self._misprediction_epochs:
            parts.append("mispredictions not judged (they are from the second epoch on)")
        status = "ok" if self._counts_checked or self._worst else "not_applicable"
        return status, "; ".join(parts)


class DeadRelu(Rule):
    """SageMaker's DeadRelu: a ReLU/ReLU6 layer with more than ``threshold_layer`` percent of dead units
    (SageMaker's unit and default, 50) on ``patience`` sampled steps in a row. A channel counts as dead when
    it has no positive output anywhere in the sampled batch (TensorStats' ``dead_fraction``): activity 0%,
    where SageMaker's ``threshold_inactivity`` allows 1% (it sees whole tensors over steps; we see one batch).
    Healthy networks measured at most 12.5% (batch 8). LeakyReLU, SiLU and GELU cannot die: not checked.
    """

    name = "dead_relu"
    defaults: ClassVar[dict[str, float]] = {"threshold_layer": 50.0, "patience": 3}
    integers = frozenset({"patience"})
    recommendation = (
        "Lower --lr (ReLUs usually die after a too-large step), keep --grad-clip on (e.g. 1.0), and prefer "
        "pretrained weights (--weights imagenet); check custom init code for large negative biases."
    )

    def __init__(self, action: str | None = None, thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__(action, thresholds)
        self._records = 0
        self._runs: dict[str, int] = {}
        self._largest: tuple[float, str, int] | None = None
        self._layers: set[str] = set()

    def on_record(self, record: Mapping[str, Any]) -> Finding | None:
        step, epoch = record.get("global_step"), record.get("epoch")
        dead = {
            name: entry["dead_fraction"]
            for name, entry in record.get("activations", {}).items()
            if "dead_fraction" in entry and math.isfinite(entry["dead_fraction"])
        }
        if not dead:
            return None
        self._records += 1
        self._layers.update(dead)
        limit = self.thresholds["threshold_layer"] / 100
        new = []
        for name, value in dead.items():
            if self._largest is None or value > self._largest[0]:
                self._largest = (value, name, step)
            if value <= limit:
                self._runs[name] = 0
                self._clear(name)
                continue
            self._runs[name] = self._runs.get(name, 0) + 1
            if self._runs[name] >= self._int("patience") and name not in self._holding:
                self._holding.add(name)
                new.append(name)
        if not new:
            return None
        first = new[0]
        evidence = (
            f"{dead[first]:.0%} of the units of {first} ({_kind(record, first)}) are dead (no positive output in "
            f"the batch) on {self._runs[first]} sampled steps in a row, to step {step}; limit "
            f"{self.thresholds['threshold_layer']:g}%"
        )
        if len(new) > 1:
            evidence += f"; also {_names(new[1:])}"
        finding = Finding(step, epoch, first, evidence, dead[first])
        self.findings.append(finding)
        return finding

    def summary(self) -> tuple[str, str]:
        if not self._records:
            return "not_applicable", "no ReLU/ReLU6 layer was recorded (SiLU/GELU models, or activations off)"
        value, layer, step = self._largest  # type: ignore[misc]
        return "ok", (
            f"largest dead share {value:.0%} ({layer}, step {step}) across {len(self._layers)} ReLU layers and "
            f"{self._records} sampled steps; limit {self.thresholds['threshold_layer']:g}% for "
            f"{self._int('patience')} steps in a row"
        )


RULES: tuple[type[Rule], ...] = (
    ExplodingTensor,
    VanishingGradient,
    PoorWeightInitialization,
    LossNotDecreasing,
    Overfit,
    Overtraining,
    ClassImbalance,
    DeadRelu,
)
CATALOGUE: dict[str, tuple[str, dict[str, float]]] = {
    rule.name: (rule.default_action, {key: float(value) for key, value in rule.defaults.items()}) for rule in RULES
}


def build_rules(spec: str) -> list[Rule]:
    """The enabled rules of a ``--debugger-rules`` spec, in catalogue order (raises RuleSpecError)."""
    by_name = {rule.name: rule for rule in RULES}
    return [
        by_name[name](setting.action, setting.thresholds)
        for name, setting in rule_spec.parse_rule_spec(spec, CATALOGUE).items()
    ]


def _larger(current: tuple[float, str, int] | None, value: float, name: str, step: Any) -> tuple[float, str, int]:
    return (value, name, step) if current is None or value > current[0] else current


def _names(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _steps(steps: Sequence[int]) -> str:
    return ", ".join(str(step) for step in steps)


def _change(start: float, value: float) -> str:
    percent = (start - value) / start * 100
    return f"{percent:.1f}% below" if percent >= 0 else f"{-percent:.1f}% above"


def _split(key: str) -> str:
    return "validation" if key == "valid" else "training"


def _kind(record: Mapping[str, Any], layer: str) -> str:
    return str(record.get("activations", {}).get(layer, {}).get("kind", "ReLU"))
