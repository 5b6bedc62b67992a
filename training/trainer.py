"""The training loop: epochs of steps with the recipe, validation, early stopping, checkpoints and resume.

Every source of randomness is reseeded from (seed, epoch) at the start of each epoch (shuffle order, data
loader workers, augmentation, dropout), so a run resumed from ``last.pt`` continues exactly as an
uninterrupted run would. Callbacks see each step and epoch and may stop training (the debugger uses this).
A divergence guard (training/divergence.py) watches the losses whatever the callbacks do: after an epoch whose
loss went NaN/Inf or grew by orders of magnitude it raises ``TrainingDiverged`` on every rank at once (the
epoch is validated and the callbacks see it first; its checkpoint is not written), so no model is written
from a run that blew up.

Used by train.py; not run on its own.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import architectures
import checkpoints
import ddp
import divergence
import evaluation
import feature_cache
import recipe
from divergence import TrainingDiverged  # train.py catches it as trainer.TrainingDiverged

# Under DDP the ranks agree on a NaN/Inf step loss (one tiny all-reduce) every this many steps; alone, every step.
DIVERGENCE_CHECK_STEPS = 10


class Callback(Protocol):
    """Hooks into the loop. Returning True from either asks training to stop (after this step: the epoch is cut
    short and still validated); a ``stop_reason`` attribute, when the callback has one, says why. Under DDP every
    rank's callbacks must return the same answer (the debugger broadcasts rank 0's)."""

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> bool | None: ...
    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> bool: ...


@dataclass
class StepInfo:
    epoch: int
    step: int
    global_step: int
    loss: float
    batch_size: int
    data_seconds: float  # waiting for the loader (and copying the batch to the device)
    compute_seconds: float  # forward + backward + optimizer
    forward_backward_seconds: float = 0.0
    optimizer_seconds: float = 0.0  # optimizer step, scaler update, scheduler
    targets: torch.Tensor | None = None  # the batch's labels, on the device (the debugger counts classes)
    predictions: torch.Tensor | None = None  # the arg-max of the logits, on the device


@dataclass
class Plan:
    epochs: int
    steps_per_epoch: int
    optimizer: str
    lr: float
    backbone_lr_ratio: float
    unfreeze_epoch: int
    momentum: float
    weight_decay: float
    scheduler: str
    warmup_epochs: float
    label_smoothing: float
    grad_clip: float
    amp: str
    channels_last: bool
    early_stopping_patience: int
    seed: int
    freeze_bn: bool = False

    @classmethod
    def from_options(cls, options: Any, steps_per_epoch: int) -> Plan:
        """The plan train.py's options give (each field from the option of its name), for this many steps."""
        named = {f.name: getattr(options, f.name) for f in fields(cls) if f.name != "steps_per_epoch"}
        return cls(steps_per_epoch=steps_per_epoch, **named)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)


@dataclass
class Trainer:
    model: nn.Module
    train_loader: DataLoader
    valid_loader: DataLoader
    num_classes: int
    plan: Plan
    world: ddp.World
    checkpoint_dir: Path
    identity: dict[str, Any]
    callbacks: list[Any] = field(default_factory=list)
    sync_timing: bool = False  # synchronise CUDA inside each step so its timing split is exact (the profiler)
    # torch.compile the network the training steps call (evaluation stays eager). Not part of the plan: a run
    # may resume compiled or not, since it changes how the steps run, not what they compute.
    compile: bool = False
    log: Any = print
    # feature_cache.FrozenFeatures: frozen-backbone epochs train and validate the head on these (train.py sets it)
    frozen_features: Any = None

    def __post_init__(self) -> None:
        self.device = self.world.device
        self.model.to(self.device)
        if self.plan.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = recipe.make_optimizer(
            self.model,
            self.plan.optimizer,
            self.plan.lr,
            self.plan.backbone_lr_ratio,
            self.plan.weight_decay,
            self.plan.momentum,
        )
        self.scheduler = recipe.make_scheduler(
            self.optimizer, self.plan.scheduler, self.plan.total_steps, self.plan.warmup_steps
        )
        self.autocast_dtype = _autocast_dtype(self.plan.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast_dtype == torch.float16)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.global_step = 0
        self.best = {"valid_accuracy": -1.0, "valid_loss": math.inf, "epoch": -1}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self.stop_reason = ""
        self.diverged = False
        self._stop_requested = False
        self.guard = divergence.DivergenceGuard(self.num_classes)
        self.last_lr = self.plan.lr
        self._wrapped: nn.Module | None = None
        self._wrapped_trainable: bool | None = None
        self._compiled: tuple[nn.Module, nn.Module] | None = None  # (what was compiled, the compiled module)

    # -- checkpoints -------------------------------------------------------------------------------------
    def resume(self) -> bool:
        state = checkpoints.load_last(self.checkpoint_dir, self.identity)
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when the checkpoint was written without fp16 scaling
            self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.start_epoch = int(state["epoch"]) + 1
        self.global_step = int(state["global_step"])
        self.stopped_early = bool(state.get("stopped_early", False))
        self.stop_reason = str(state.get("stop_reason", ""))
        best_path = self.checkpoint_dir / checkpoints.BEST
        if best_path.is_file():
            self.best_state = torch.load(best_path, map_location="cpu", weights_only=True)
        self.log(
            f"resumed from {self.checkpoint_dir / checkpoints.LAST}, after epoch {self.start_epoch}/{self.plan.epochs}"
        )
        return True

    def _save(self, epoch: int, improved: bool) -> None:
        if not self.world.is_main:
            return
        if improved:
            checkpoints.save_atomic(self.best_state, self.checkpoint_dir / checkpoints.BEST)
        state = {
            "identity": self.identity,
            "epoch": epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best": self.best,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
        }
        checkpoints.save_atomic(state, self.checkpoint_dir / checkpoints.LAST)

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train the planned epochs (or until a stop); raises ``TrainingDiverged`` after a diverged epoch."""
        self.guard.remember(self.history)  # a resumed run's earlier epochs are the references
        for epoch in range(self.start_epoch, self.plan.epochs):
            if self.stopped_early:
                break
            started = time.perf_counter()
            train_loss, train_accuracy, trainable = self._train_epoch(epoch)
            ddp.broadcast_buffers(self.model)
            cached = self._cached(trainable)
            valid = evaluation.evaluate(
                architectures.head_module(self.model) if cached else self.model,
                feature_cache.FeatureLoader(cached.valid, self.valid_loader.batch_size or 1, None)
                if cached
                else self.valid_loader,
                self.num_classes,
                self.device,
                self.autocast_dtype,
                self.plan.channels_last and not cached,
            )
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "valid_loss": valid.loss,
                "valid_accuracy": valid.accuracy,
                "lr": self.last_lr,
                "backbone_trainable": trainable,
                "cached_features": bool(cached),
                "epoch_seconds": round(time.perf_counter() - started, 3),
            }
            self.history.append(row)
            improved = (valid.accuracy, -valid.loss) > (self.best["valid_accuracy"], -self.best["valid_loss"])
            if improved:
                self.best = {"valid_accuracy": valid.accuracy, "valid_loss": valid.loss, "epoch": epoch + 1}
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            # The saved model's score so far: the tuning objective (SageMaker ranks a job by its last value).
            row["best_valid_accuracy"] = self.best["valid_accuracy"]
            # Every rank reaches the same verdict: the row's losses are summed across processes.
            diverged = self.guard.check_epoch(row)
            requested = self._stop_requested  # by a callback during the epoch's steps (the debugger)
            stop = requested or self._early_stop(epoch)
            for callback in self.callbacks:
                if getattr(callback, "on_epoch_end", None) and callback.on_epoch_end(self, row):
                    stop, self.stop_reason = True, self.stop_reason or _reason(callback)
                    requested = True
            self.stopped_early = ddp.broadcast_flag(stop, self.world)
            if self.world.is_main:
                self.log(metric_line(row))
            if diverged:  # not checkpointed: a resumed run starts again from the last healthy epoch
                self._diverge(diverged, row, self.stop_reason if requested else "")
            self._save(epoch, improved)
            ddp.barrier()
        return self.history

    def _diverge(self, finding: str, row: dict[str, Any], stopped_by: str) -> None:
        reason = f"{finding}; {divergence.advice(self.plan.lr, self.plan.grad_clip)}"
        if stopped_by:  # e.g. the debugger's exploding_tensor stopped the epoch on the NaN loss
            reason += f"; {stopped_by}"
        self.diverged, self.stopped_early, self.stop_reason = True, True, reason
        if self.world.is_main:
            self.log(reason)
        raise TrainingDiverged(reason, epoch=int(row["epoch"]))

    def _early_stop(self, epoch: int) -> bool:
        patience = self.plan.early_stopping_patience
        if patience <= 0 or epoch + 1 - self.best["epoch"] < patience:
            return False
        self.stop_reason = f"early stopping: valid accuracy has not improved for {patience} epochs"
        return True

    def _train_epoch(self, epoch: int) -> tuple[float, float, bool]:
        _reseed(self.plan.seed, epoch)
        sampler = self.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if self.train_loader.generator is not None:
            self.train_loader.generator.manual_seed(self.plan.seed * 7919 + epoch)
        trainable = recipe.backbone_trainable(epoch, self.plan.unfreeze_epoch)
        network = self._network(trainable)
        cached = self._cached(trainable)
        loader: Any = self.train_loader
        if cached:  # the frozen backbone's outputs are cached: only the head runs
            network = architectures.head_module(self.model)
            loader = feature_cache.FeatureLoader(cached.train, self.train_loader.batch_size or 1, sampler)
        network.train()
        if not trainable or self.plan.freeze_bn:
            recipe.freeze_backbone_norms(self.model)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        count = torch.zeros((), dtype=torch.int64, device=self.device)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        bad_loss = False  # this rank saw a NaN/Inf step loss this epoch
        waited = time.perf_counter()
        for step, (images, targets) in enumerate(_progress(loader, epoch, self.world)):
            if step >= self.plan.steps_per_epoch:
                break
            images = images.to(self.device, non_blocking=True)
            if self.plan.channels_last and not cached:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(self.device, non_blocking=True)
            computing = time.perf_counter()
            with autocast:
                logits = network(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.plan.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.plan.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(params, self.plan.grad_clip)
            if self.sync_timing and self.device.type == "cuda":  # CUDA is asynchronous: exact split timings
                torch.cuda.synchronize(self.device)
            stepping = time.perf_counter()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.last_lr = self.optimizer.param_groups[-1]["lr"]  # the head's rate this step used
            self.scheduler.step()
            self.global_step += 1
            batch = targets.numel()
            loss_sum += loss.detach().double() * batch
            predictions = logits.detach().argmax(dim=1)
            correct += (predictions == targets).sum()
            count += batch
            step_loss = loss.item()  # waits for the device, so `finished` is honest without a sync
            finished = time.perf_counter()
            bad_loss = self.guard.observe_step(step_loss, self.global_step, epoch + 1) or bad_loss
            info = StepInfo(
                epoch,
                step,
                self.global_step,
                step_loss,
                batch,
                computing - waited,
                finished - computing,
                stepping - computing,
                finished - stepping,
                targets,
                predictions,
            )
            for callback in self.callbacks:
                if getattr(callback, "on_step_end", None) and callback.on_step_end(self, info):
                    self._stop_requested = True
                    self.stop_reason = self.stop_reason or _reason(callback)
            if self._nonfinite_loss(bad_loss, step):  # diverged: validate the epoch, then the guard raises
                break
            if self._stop_requested:
                break
            waited = time.perf_counter()
        ddp.all_sum(loss_sum)
        ddp.all_sum(correct)
        ddp.all_sum(count)
        total = max(1, int(count.item()))
        return float(loss_sum.item()) / total, int(correct.item()) / total, trainable

    def _cached(self, trainable: bool) -> Any:
        """The cached features when this epoch's backbone is frozen and they were computed, else None."""
        return self.frozen_features if (self.frozen_features is not None and not trainable) else None

    def frozen_epochs_left(self) -> bool:
        """Whether an epoch from here on trains with the backbone frozen (so cached features would be used)."""
        return any(
            not recipe.backbone_trainable(e, self.plan.unfreeze_epoch)
            for e in range(self.start_epoch, self.plan.epochs)
        )

    def _nonfinite_loss(self, bad_loss: bool, step: int) -> bool:
        """Whether to end the epoch on a NaN/Inf step loss: at once in one process; under DDP every
        ``DIVERGENCE_CHECK_STEPS`` steps, when any rank saw one (the ranks run the same steps, so they meet
        in the same all-reduce). The epoch's summed loss is NaN/Inf too, so every rank's guard then fires."""
        if not self.world.distributed:
            return bad_loss
        if (step + 1) % DIVERGENCE_CHECK_STEPS:
            return False
        flag = torch.tensor([1 if bad_loss else 0], dtype=torch.int64, device=self.device)
        return bool(ddp.all_sum(flag).item())

    def _network(self, trainable: bool) -> nn.Module:
        """The model as this epoch trains it; under DDP re-wrapped whenever the trainable set changes; with
        ``--compile`` the torch.compile'd form of that."""
        recipe.set_backbone_trainable(self.model, trainable)
        network = self.model
        if self.world.distributed:
            if self._wrapped is None or self._wrapped_trainable != trainable:
                device_ids = [self.world.local_rank] if self.device.type == "cuda" else None
                self._wrapped = DistributedDataParallel(self.model, device_ids=device_ids)
                self._wrapped_trainable = trainable
            network = self._wrapped
        if not self.compile:
            return network
        if self._compiled is None or self._compiled[0] is not network:
            # Shares the parameters: the optimizer, checkpoints and state_dict keys stay the eager model's. A change
            # of the trainable set or of train/eval mode recompiles once (Dynamo's guards), then runs compiled.
            self._compiled = (network, torch.compile(network))
        return self._compiled[1]


def metric_line(row: dict[str, Any], prefix: str = "") -> str:
    """``epoch=3; train_loss=0.5123; valid_accuracy=0.8710;`` — what SageMaker metric definitions scrape."""
    parts = []
    for key, value in row.items():
        if isinstance(value, bool) or value is None:
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        if isinstance(value, float) and key == "lr":
            text = f"{value:.3g}"
        parts.append(f"{prefix}{key}={text};")
    return " ".join(parts)


def _reason(callback: Any) -> str:
    return getattr(callback, "stop_reason", "") or f"stopped by {type(callback).__name__}"


def _reseed(seed: int, epoch: int) -> None:
    value = seed * 1_000_003 + epoch
    random.seed(value)
    torch.manual_seed(value)
    try:
        import numpy as np

        np.random.seed(value % 2**32)
    except ImportError:  # pragma: no cover - numpy comes with torchvision
        pass


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16  # --amp on, on CPU: bfloat16 autocast


def _progress(loader: DataLoader, epoch: int, world: ddp.World):
    if not (world.is_main and sys.stderr.isatty()):
        return loader
    try:
        from tqdm import tqdm
    except ImportError:
        return loader
    return tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, unit="batch")
