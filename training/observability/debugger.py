"""The training debugger: a trainer callback that looks inside training and stops it when a rule says so.

What it does (SageMaker Debugger's job, on maintained parts: PyTorch hooks and TensorBoard):
- every step: the loss and the class distribution of the inputs (counted on the device, no sync);
- every ``--debugger-interval`` steps (and step 1): per-layer statistics from tensor_stats.py
  (gradient and weight norms, update/weight ratio, NaN/Inf counts, activation zero/dead/saturated fractions);
  frozen layers are skipped, so a frozen backbone costs nothing and breaks nothing;
- the rules of debug_rules.py on every step, sampled step and epoch; a rule whose action is ``stop``
  stops training after that step (as SageMaker's StopTraining action), with the step, tensor and evidence;
- TensorBoard scalars under ``debugger/…`` (beside train.py's epoch curves) and OUTPUT_DIR/debugger.json,
  rewritten each epoch so a run that dies still leaves its evidence.
Under torchrun rank 0 measures (gradients are all-reduced, so its statistics are everyone's) and its stop
decision is broadcast on sampled steps, so all ranks stop at the same step.

    python training/train.py --data DIR --debugger on [--debugger-interval 20] [--debugger-rules overfit=stop]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import ddp

from . import debug_rules, rule_spec, run_files, tensor_stats

log = logging.getLogger("train")

COLLECTIONS = rule_spec.COLLECTIONS
LAYER_KEYS = ("grad_norm", "weight_norm", "update_ratio", "grad_mean_abs")
ACTIVATION_KEYS = ("zero_fraction", "dead_fraction", "std", "saturated_fraction")


class Debugger:
    def __init__(
        self,
        output_dir: Path,
        labels: list[str],
        world: ddp.World,
        interval: int = 20,
        collections: Mapping[str, int] | frozenset[str] = frozenset(COLLECTIONS),
        rules: str = "",
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.labels = labels
        self.world = world
        self.interval = interval
        # {collection: its own interval}; 0 (or a plain set of names) means ``interval``
        every = dict(collections) if isinstance(collections, Mapping) else dict.fromkeys(collections, 0)
        self.collections = frozenset(every)
        self.intervals = {name: steps or interval for name, steps in every.items()}
        self.rules = debug_rules.build_rules(rules)  # a bad spec fails here, before any training
        self.stats = tensor_stats.TensorStats(
            interval=interval,
            collections=self.collections - {"inputs"},
            intervals={name: steps for name, steps in every.items() if steps},
        )
        self.stop_reason = ""
        self.stopped_by: dict[str, Any] | None = None
        self.seconds = 0.0
        self.records = 0
        self.losses: list[list[float]] = []
        self.epochs: list[dict[str, Any]] = []
        self.layers: dict[str, dict[str, list[list[float]]]] = {}
        self.activations: dict[str, dict[str, Any]] = {}
        self.nonfinite: dict[str, Any] = {"first_step": None, "tensors": []}
        self.per_epoch: list[dict[str, Any]] = []
        self._seen: torch.Tensor | None = None
        self._wrong: torch.Tensor | None = None
        self._pending_stop = False
        self._model: torch.nn.Module | None = None
        self.writer: Any = None
        if world.is_main and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: the debugger writes debugger.json only")
            else:
                tensorboard_dir.mkdir(parents=True, exist_ok=True)
                self.writer = SummaryWriter(log_dir=str(tensorboard_dir), filename_suffix=".debugger")

    # -- the trainer's callbacks -------------------------------------------------------------------------
    def attach(self, model: torch.nn.Module, next_step: int = 1) -> None:
        self._model = model
        if self.world.is_main:
            self.stats.attach(model, next_step)
        names = ", ".join(f"{rule.name}={rule.action}" for rule in self.rules) or "none"
        every = ", ".join(
            f"{name} every {steps}"
            for name, steps in sorted(self.intervals.items())
            if name not in ("losses", "inputs")
        )
        log.info("debugger: %s steps (losses and inputs: each step); rules %s", every, names)

    def on_step_end(self, trainer: Any, step: Any) -> bool:
        started = time.perf_counter()
        if self.world.is_main:
            self._observe_step(trainer, step)
        stop = self._pending_stop
        if self.world.distributed and self.stats.wants(step.global_step):  # every rank samples the same steps
            stop = ddp.broadcast_flag(stop, self.world)
        elif self.world.distributed:
            stop = False  # decided on the next sampled step, for every rank at once
        self.seconds += time.perf_counter() - started
        return stop

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        if not self.world.is_main:
            return False
        started = time.perf_counter()
        self.epochs.append(dict(row))
        classes = self._epoch_classes(row["epoch"])
        for rule in self.rules:
            self._handle(rule, rule.on_epoch(row, classes))
        if self.writer is not None:
            for index, label in enumerate(self.labels):
                self.writer.add_scalar(f"debugger/inputs/{label}", classes["seen"][index], row["epoch"])
            self.writer.flush()
        self.write()
        self.seconds += time.perf_counter() - started
        return self._pending_stop

    def close(self) -> Path | None:
        """Remove the hooks and write debugger.json (also after a failed run: what was seen until then)."""
        self.stats.detach()
        if self.writer is not None:
            self.writer.close()
        return self.write() if self.world.is_main else None

    # -- what a step shows -------------------------------------------------------------------------------
    def _observe_step(self, trainer: Any, step: Any) -> None:
        epoch = step.epoch + 1
        if "inputs" in self.collections and step.targets is not None:
            self._count_classes(step.targets, step.predictions)
        if "losses" in self.collections:
            self.losses.append([step.global_step, step.loss])
            if self.writer is not None:
                self.writer.add_scalar("debugger/loss/step", step.loss, step.global_step)
        if not math.isfinite(step.loss):
            self._first_nonfinite(step.global_step, ["loss"])
        for rule in self.rules:
            self._handle(rule, rule.on_step(step.global_step, epoch, step.loss))
        record = self.stats.after_step(trainer.model, step)
        self.stats.arm(trainer.model, step.global_step + 1)
        if record is not None:
            self.stats.records.clear()  # kept as series by _keep: the raw records are not needed
            self._keep(record)
            for rule in self.rules:
                self._handle(rule, rule.on_record(record))

    def _count_classes(self, targets: torch.Tensor, predictions: torch.Tensor | None) -> None:
        size = len(self.labels)
        seen = torch.bincount(targets.detach().flatten(), minlength=size)[:size]
        self._seen = seen if self._seen is None else self._seen + seen
        if predictions is not None:
            wrong = torch.bincount(targets[predictions != targets].flatten(), minlength=size)[:size]
            self._wrong = wrong if self._wrong is None else self._wrong + wrong

    def _epoch_classes(self, epoch: int) -> dict[str, Any]:
        """This epoch's counts per class (one transfer from the device per epoch)."""
        zeros = [0] * len(self.labels)
        seen = self._seen.cpu().tolist() if self._seen is not None else zeros
        wrong = self._wrong.cpu().tolist() if self._wrong is not None else zeros
        self._seen = self._wrong = None
        self.per_epoch.append({"epoch": epoch, "seen": seen, "wrong": wrong})
        return {"labels": self.labels, "seen": seen, "wrong": wrong}

    def _keep(self, record: dict[str, Any]) -> None:
        step = record["global_step"]
        self.records += 1
        bad = []
        for name, entry in record["params"].items():
            series = self.layers.setdefault(name, {key: [] for key in LAYER_KEYS})
            for key in LAYER_KEYS:
                if key in entry:
                    series[key].append([step, entry[key]])
                    if self.writer is not None and math.isfinite(entry[key]):
                        self.writer.add_scalar(f"debugger/{key}/{name}", entry[key], step)
            if entry.get("grad_nonfinite") or entry.get("weight_nonfinite"):
                bad.append(name)
        for name, stats in record["activations"].items():
            series = self.activations.setdefault(name, {"kind": stats.get("kind", "")})
            for key in ACTIVATION_KEYS:
                if key in stats:
                    series.setdefault(key, []).append([step, stats[key]])
                    if self.writer is not None and math.isfinite(stats[key]):
                        self.writer.add_scalar(f"debugger/activation_{key}/{name}", stats[key], step)
            if stats.get("nonfinite"):
                bad.append(name)
        if bad:
            self._first_nonfinite(step, bad)

    def _first_nonfinite(self, step: int, tensors: list[str]) -> None:
        if self.nonfinite["first_step"] is None or self.nonfinite["first_step"] == step:
            self.nonfinite["first_step"] = step
            self.nonfinite["tensors"] = sorted(set(self.nonfinite["tensors"]) | set(tensors))

    def _handle(self, rule: Any, finding: Any) -> None:
        if finding is None:
            return
        where = f"at step {finding.step}" + (f" (epoch {finding.epoch})" if finding.epoch else "")
        tensor = f" on {finding.tensor}" if finding.tensor else ""
        if rule.action == "stop" and not self._pending_stop:
            self._pending_stop = True
            self.stopped_by = rule.verdict()
            self.stop_reason = f"stopped by the debugger: {rule.name} {where}{tensor}: {finding.evidence}"
            log.warning("debugger: %s fired %s%s: %s; stopping training", rule.name, where, tensor, finding.evidence)
        elif rule.verdict()["count"] == 1:  # say it once; the verdict counts the rest
            log.warning("debugger: %s fired %s%s: %s", rule.name, where, tensor, finding.evidence)

    # -- debugger.json -----------------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        totals_seen = [sum(e["seen"][i] for e in self.per_epoch) for i in range(len(self.labels))]
        totals_wrong = [sum(e["wrong"][i] for e in self.per_epoch) for i in range(len(self.labels))]
        return {
            "interval": self.interval,
            "collections": sorted(self.collections),
            "intervals": self.intervals,
            "labels": self.labels,
            "rules": [rule.verdict() for rule in self.rules],
            "stopped_by": self.stopped_by,
            "losses": run_files.thin(self.losses),
            "epochs": self.epochs,
            "classes": {
                "labels": self.labels,
                "seen": totals_seen,
                "wrong": totals_wrong,
                "per_epoch": self.per_epoch,
            },
            "layers": {name: {k: run_files.thin(v) for k, v in series.items()} for name, series in self.layers.items()},
            "activations": {
                name: {k: v if k == "kind" else run_files.thin(v) for k, v in series.items()}
                for name, series in self.activations.items()
            },
            "nonfinite": self.nonfinite,
            "records": self.records,
            "seconds": round(self.seconds, 3),
        }

    def write(self) -> Path:
        return run_files.write_json(self.output_dir / "debugger.json", self.document())
