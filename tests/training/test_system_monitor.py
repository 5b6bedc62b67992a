"""The profiler's system sampler on this machine: CPU per core, memory, I/O rates; GPUs only where NVML is."""

from __future__ import annotations

import threading

import psutil

from observability import system_monitor


def test_samples_cpu_per_core_memory_and_io_while_work_runs():
    sampler = system_monitor.SystemSampler(interval=0.05)
    with sampler:
        total = 0
        while len(sampler.samples) < 4:  # keep one core busy until a few samples are in
            total += sum(i * i for i in range(10_000))
    assert total > 0
    rows = list(sampler.samples)
    assert all(len(row["cpu_percent"]) == psutil.cpu_count() for row in rows)
    assert max(max(row["cpu_percent"]) for row in rows) > 0  # the busy loop shows up
    assert all(0 < row["memory_percent"] <= 100 and row["process_rss_bytes"] > 0 for row in rows)
    rates = ("disk_read_bytes_per_s", "disk_write_bytes_per_s", "net_recv_bytes_per_s", "net_sent_bytes_per_s")
    assert all(row[name] >= 0 for row in rows for name in rates)
    assert [row["time"] for row in rows] == sorted(row["time"] for row in rows)
    assert [row["t"] for row in rows] == sorted(row["t"] for row in rows) and rows[0]["t"] > 0
    assert all(0 <= row["cpu_iowait_percent"] <= 100 for row in rows)
    if system_monitor._nvml() is None:
        assert all(row["gpu"] == [] for row in rows)  # no driver: no GPU fields, no error
    assert sampler.sampling_seconds > 0
    assert not [t for t in threading.enumerate() if t.name == "system-sampler"]  # stopped and joined
