"""The training profiler: where the time goes, and what to change. A trainer callback on maintained parts.

- a system sampler thread (system_monitor.py: CPU per core, memory, disk and network I/O, GPUs via NVML)
  every ``--profiler-interval`` seconds;
- every step's split into data wait, forward + backward and optimizer (step_timing.py), outlier steps,
  and on CUDA the allocator's memory after each step;
- ``torch.profiler`` over a window of steps (``--profiler-steps 6:3``: 3 steps from step 6), exported as a
  Chrome/Perfetto trace (OUTPUT_DIR/profiler_trace.json.gz) with the top operators by self time;
- the rules of profile_rules.py at each epoch end and at the end, each with a recommendation;
- OUTPUT_DIR/profiler.json, rewritten each epoch.
Under torchrun only rank 0 profiles (its steps wait for the others at each all-reduce, so its split shows theirs).
With ``sync_timing`` the trainer synchronises CUDA inside each step so the split is exact (the price is the
overlap of optimizer and next batch).

    python training/train.py --data DIR --profiler on [--profiler-steps 6:3] [--profiler-rules Dataloader.threshold=0.3]
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import psutil
import torch

import ddp

from . import profile_rules, rule_spec, run_files, step_timing, system_monitor

log = logging.getLogger("train")

TRACE = "profiler_trace.json.gz"
TOP_OPERATORS = 20
WARMUP_STEPS = 5


class Profiler:
    def __init__(
        self,
        output_dir: Path,
        world: ddp.World,
        num_workers: int,
        batch_size: int,
        rules: str = "",
        interval: float = 1.0,
        window: tuple[int, int] = (6, 3),
    ) -> None:
        self.output_dir = output_dir
        self.world = world
        self.num_workers = num_workers
        self.batch_size = batch_size
        self.spec = rules
        rule_spec.parse_rule_spec(rules, profile_rules.CATALOGUE)  # a bad spec fails here, before any training
        self.window = window
        self.sampler = system_monitor.SystemSampler(interval) if world.is_main else None
        self.timer = step_timing.StepTimer()
        self.gpu_memory: list[dict[str, int]] = []
        self.init_seconds: float | None = None
        self.torch_profiler: dict[str, Any] | None = None
        self.rules: list[dict[str, Any]] = []
        self.stop_reason = ""
        self.seconds = 0.0
        self._torch: Any = None
        self._reported: set[str] = set()

    # -- lifetime ----------------------------------------------------------------------------------------
    def start(self) -> Profiler:
        if self.sampler is not None:
            self.sampler.start()
            first, length = self.window
            log.info(
                "profiler: system every %.1f s, step timing, torch.profiler on steps %d-%d",
                self.sampler.interval,
                first,
                first + length - 1,
            )
            if length and first <= 1:
                self._start_torch_profiler()
        return self

    def close(self) -> Path | None:
        """Stop sampling and tracing, evaluate the rules one last time, write profiler.json."""
        if self.sampler is None:
            return None
        self.sampler.stop()
        if self._torch is not None:
            self._stop_torch_profiler()
        self.evaluate()
        return self.write()

    # -- the trainer's callbacks -------------------------------------------------------------------------
    def on_step_end(self, trainer: Any, step: Any) -> bool:
        if self.sampler is None:
            return False
        started = time.perf_counter()
        self.timer.on_step_end(trainer, step)
        if self.init_seconds is None:
            self.init_seconds = round(time.time() - psutil.Process(os.getpid()).create_time(), 3)
        if trainer.device.type == "cuda":
            device = trainer.device
            self.gpu_memory.append(
                {
                    "global_step": step.global_step,
                    "allocated_bytes": torch.cuda.memory_allocated(device),
                    "reserved_bytes": torch.cuda.memory_reserved(device),
                    "max_allocated_bytes": torch.cuda.max_memory_allocated(device),
                }
            )
        first, length = self.window
        if self._torch is None and length and step.global_step == first - 1 and self.torch_profiler is None:
            self._start_torch_profiler()
        elif self._torch is not None and step.global_step >= first + length - 1:
            self._stop_torch_profiler()
        self.seconds += time.perf_counter() - started
        return False

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> bool:
        if self.sampler is None:
            return False
        started = time.perf_counter()
        stop = self.evaluate()
        self.write()
        self.seconds += time.perf_counter() - started
        return stop

    # -- rules -------------------------------------------------------------------------------------------
    def evaluate(self) -> bool:
        """Run the rules on what is measured so far; log each rule the first time it fires. True: stop."""
        self.rules = profile_rules.evaluate(self.document(with_rules=False), self.spec)
        stop = False
        for verdict in self.rules:
            if verdict["status"] != "fired":
                continue
            if verdict["rule"] not in self._reported:
                self._reported.add(verdict["rule"])
                log.warning("profiler: %s: %s. %s", verdict["rule"], verdict["evidence"], verdict["recommendation"])
            if verdict["action"] == "stop":
                stop = True
                self.stop_reason = (
                    self.stop_reason or f"stopped by the profiler: {verdict['rule']}: {verdict['evidence']}"
                )
        return stop

    # -- torch.profiler ----------------------------------------------------------------------------------
    def _start_torch_profiler(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.world.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        else:  # kineto's "gpuGetDeviceCount failed" ERROR line on a machine without GPUs misleads: quiet it
            os.environ.setdefault("KINETO_LOG_LEVEL", "5")
        first, length = self.window
        self.torch_profiler = {"steps": [first, first + length - 1], "trace": None, "top_operators": []}
        self._torch = torch.profiler.profile(activities=activities, record_shapes=False, with_stack=False)
        self._torch.start()

    def _stop_torch_profiler(self) -> None:
        profiler, self._torch = self._torch, None
        profiler.stop()
        steps = self.timer.steps
        first = self.torch_profiler["steps"][0]
        self.torch_profiler["steps"] = [first, steps[-1]["global_step"] if steps else first]
        path = self.output_dir / TRACE
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            profiler.export_chrome_trace(str(path))
            if hasattr(profiler, "wait_for_exports"):
                profiler.wait_for_exports()
            self.torch_profiler["trace"] = TRACE
        except Exception as exc:  # a trace that cannot be written must not end the training run
            log.warning("profiler: could not write the trace %s: %s", path, exc)
        self.torch_profiler["top_operators"] = top_operators(profiler)

    # -- profiler.json -----------------------------------------------------------------------------------
    def document(self, with_rules: bool = True) -> dict[str, Any]:
        samples = list(self.sampler.samples) if self.sampler is not None else []
        document = {
            "device": self.world.device.type,
            "gpu_count": len(self.sampler.gpus) if self.sampler is not None else 0,
            "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "world_size": self.world.size,
            "init_seconds": self.init_seconds,
            "system": {
                "interval": self.sampler.interval if self.sampler is not None else None,
                "samples": run_files.thin(samples),
            },
            "steps": {
                "summary": self.timer.summary(exclude=self._not_outliers()),
                "series": run_files.thin(self.timer.steps),
            },
            "gpu_memory": run_files.thin(self.gpu_memory),
            "torch_profiler": self.torch_profiler,
            "seconds": round(self.seconds + (self.sampler.sampling_seconds if self.sampler else 0.0), 3),
        }
        if with_rules:
            document["rules"] = self.rules
        return document

    def _not_outliers(self) -> set[int]:
        """Steps that are slow by design: warm-up (allocator, cuDNN autotuning) and the torch.profiler window."""
        first, length = self.window
        return set(range(1, WARMUP_STEPS + 1)) | set(range(first, first + length))

    def write(self) -> Path:
        return run_files.write_json(self.output_dir / "profiler.json", self.document())


def top_operators(profiler: Any, limit: int = TOP_OPERATORS) -> list[dict[str, Any]]:
    """The operators with the most self time in the window (CPU, plus the device's where it ran on one)."""
    events = profiler.key_averages()
    rows = []
    for event in events:
        self_device = getattr(event, "self_device_time_total", 0.0) or 0.0
        rows.append(
            {
                "name": event.key,
                "calls": int(event.count),
                "cpu_total_ms": event.cpu_time_total / 1000,
                "self_cpu_ms": event.self_cpu_time_total / 1000,
                "device_total_ms": (getattr(event, "device_time_total", 0.0) or 0.0) / 1000,
                "self_device_ms": self_device / 1000,
            }
        )
    device = any(row["self_device_ms"] for row in rows)
    key = "self_device_ms" if device else "self_cpu_ms"
    whole = sum(row[key] for row in rows) or 1.0
    rows.sort(key=lambda row: row[key], reverse=True)
    for row in rows:
        row["self_share"] = row[key] / whole
    return rows[:limit]
