"""System sampler for the profiler: CPU per core, memory, disk and network I/O, and GPUs through NVML.

A daemon thread takes one sample every ``interval`` seconds (psutil for the host, NVML via nvidia-ml-py for
each GPU when a driver is there; without one the GPU fields are simply empty). Rates (disk and network bytes
per second) are deltas between samples. Sampling costs well under a millisecond per sample on a 2-core
machine, so the default interval of 1 s costs < 0.1% of one core.

    python system_monitor.py [SECONDS] [INTERVAL]     # prints samples as JSON lines
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class SystemSampler:
    """``with SystemSampler(interval=1.0) as sampler: ...``; ``sampler.samples`` is a list of dicts."""

    interval: float = 1.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    gpus: list[Any] = field(default_factory=list)  # NVML handles
    sampling_seconds: float = 0.0  # time spent sampling (the sampler's own overhead)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process(os.getpid())
        self._nvml = _nvml()
        if self._nvml is not None:
            self.gpus = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self._nvml.nvmlDeviceGetCount())]
        self._last: tuple[float, Any, Any] | None = None
        self._started = time.monotonic()

    def start(self) -> SystemSampler:
        psutil.cpu_percent(percpu=True)  # the first calls only set the reference points
        psutil.cpu_times_percent()
        self._started = time.monotonic()
        self._last = (self._started, psutil.disk_io_counters(), psutil.net_io_counters())
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # shutting down an optional library: nothing to report
                self._nvml.nvmlShutdown()

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            started = time.perf_counter()
            self.samples.append(self.sample())
            self.sampling_seconds += time.perf_counter() - started

    def sample(self) -> dict[str, Any]:
        """One sample now: utilisation since the previous one, rates over the elapsed time."""
        now = time.monotonic()
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        last_time, last_disk, last_net = self._last or (now, disk, net)
        elapsed = max(now - last_time, 1e-6)
        self._last = (now, disk, net)
        memory = psutil.virtual_memory()
        row: dict[str, Any] = {
            "time": time.time(),
            "t": round(now - self._started, 3),
            "cpu_percent": psutil.cpu_percent(percpu=True),
            "cpu_iowait_percent": getattr(psutil.cpu_times_percent(), "iowait", 0.0),  # Linux only
            "memory_percent": memory.percent,
            "memory_used_bytes": memory.total - memory.available,
            "process_rss_bytes": self._process.memory_info().rss,
            "disk_read_bytes_per_s": _rate(disk, last_disk, "read_bytes", elapsed),
            "disk_write_bytes_per_s": _rate(disk, last_disk, "write_bytes", elapsed),
            "net_recv_bytes_per_s": _rate(net, last_net, "bytes_recv", elapsed),
            "net_sent_bytes_per_s": _rate(net, last_net, "bytes_sent", elapsed),
            "gpu": [self._gpu(handle) for handle in self.gpus],
        }
        return row

    def _gpu(self, handle: Any) -> dict[str, float]:
        nvml = self._nvml
        utilisation = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return {
            "utilization_percent": float(utilisation.gpu),
            "memory_used_bytes": float(memory.used),
            "memory_total_bytes": float(memory.total),
        }


def _rate(now: Any, before: Any, name: str, seconds: float) -> float:
    if now is None or before is None:  # some containers expose no disk or network counters
        return 0.0
    return max(0.0, (getattr(now, name) - getattr(before, name)) / seconds)


def _nvml() -> Any:
    """pynvml, initialised, or None where there is no NVIDIA driver (or nvidia-ml-py is not installed)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # ImportError, or NVMLError_LibraryNotFound / DriverNotLoaded: a machine without GPUs
        return None
    return pynvml


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    with SystemSampler(interval) as sampler:
        time.sleep(seconds)
    for row in sampler.samples:
        print(json.dumps(row))
    print(f"# {len(sampler.samples)} samples; sampling took {sampler.sampling_seconds * 1000:.1f} ms", file=sys.stderr)
