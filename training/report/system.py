"""The System usage section (from profiler.json): CPU per core, memory, disk and network, GPU utilisation and
memory, and the PyTorch CUDA allocator per step."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .charts import figure, img, legend, plot, thin
from .markup import esc, fmt_bytes, kv_table, note
from .run import Run
from .values import float_or_nan, get, is_finite


def system_section(run: Run) -> str:
    if run.profiler is None:
        return note(run.why_missing("profiler.json"))
    samples = get(run.profiler, "system", "samples") or []
    if not samples:
        return note("no system samples (the run was shorter than one sampling interval)")
    interval = get(run.profiler, "system", "interval")
    cpu_means = [statistics.fmean(s["cpu_percent"]) for s in samples if s.get("cpu_percent")]
    gpus = [g for s in samples for g in s.get("gpu") or []]
    rows = [
        ("samples", f"{len(samples):,} every {esc(interval)} s"),
        (
            "CPU",
            f"mean {statistics.fmean(cpu_means):.0f}%, peak {max(cpu_means):.0f}% over "
            f"{len(samples[0].get('cpu_percent') or [])} cores"
            if cpu_means
            else "–",
        ),
        (
            "host memory",
            f"peak {max(float_or_nan(s.get('memory_percent')) for s in samples):.0f}%, process RSS peak "
            f"{fmt_bytes(max(float_or_nan(s.get('process_rss_bytes')) for s in samples))}",
        ),
    ]
    if gpus:
        utils = [g.get("utilization_percent") for g in gpus if is_finite(g.get("utilization_percent"))]
        memory = [g.get("memory_used_bytes") for g in gpus if is_finite(g.get("memory_used_bytes"))]
        rows.append(
            (
                "GPU",
                f"{run.profiler.get('gpu_count', '?')} GPU(s): utilisation mean "
                f"{statistics.fmean(utils) if utils else 0:.0f}%, memory peak {fmt_bytes(max(memory or [0]))}",
            )
        )
    else:
        rows.append(("GPU", "none (device " + esc(run.profiler.get("device")) + ")"))
    parts = [kv_table(rows)]
    samples = thin(samples)
    minutes = (samples[-1].get("t") or 0) > 600
    parts.append(plot(lambda: _cpu_figure(samples, minutes), "CPU usage"))
    parts.append(plot(lambda: _memory_io_figure(samples, minutes), "memory and I/O"))
    if gpus:
        parts.append(plot(lambda: _gpu_figure(samples, minutes), "GPU usage"))
    allocator = run.profiler.get("gpu_memory") or []
    if allocator:
        parts.append(plot(lambda: _allocator_figure(allocator), "GPU memory per step"))
    return "".join(parts)


def _times(samples: list[dict[str, Any]], minutes: bool) -> list[float]:
    return [float_or_nan(s.get("t")) / (60 if minutes else 1) for s in samples]


def _time_axis(ax: Any, minutes: bool) -> None:
    ax.set_xlabel("minutes since start" if minutes else "seconds since start", fontsize=9)


def _cpu_figure(samples: list[dict[str, Any]], minutes: bool) -> str:
    fig, (mean_ax, core_ax) = figure(2)
    times = _times(samples, minutes)
    mean_ax.plot(
        times,
        [statistics.fmean(s["cpu_percent"]) if s.get("cpu_percent") else math.nan for s in samples],
        label="mean over cores",
        color="#0072b2",
    )
    mean_ax.plot(
        times,
        [float_or_nan(s.get("cpu_iowait_percent")) for s in samples],
        label="I/O wait",
        color="#d55e00",
        linewidth=0.9,
    )
    mean_ax.set(ylim=(0, 102))
    mean_ax.set_ylabel("%", fontsize=9)
    mean_ax.set_title("CPU utilisation", fontsize=10)
    _time_axis(mean_ax, minutes)
    legend(mean_ax)
    cores = max((len(s.get("cpu_percent") or []) for s in samples), default=0)
    grid = [
        [
            float_or_nan((s.get("cpu_percent") or [])[c]) if c < len(s.get("cpu_percent") or []) else math.nan
            for s in samples
        ]
        for c in range(cores)
    ]
    extent = (times[0], times[-1] if len(times) > 1 else times[0] + 1, cores - 0.5, -0.5)
    image = core_ax.imshow(
        grid, aspect="auto", cmap="viridis", vmin=0, vmax=100, interpolation="nearest", extent=extent
    )
    core_ax.set_title("per core (%)", fontsize=10)
    core_ax.set_ylabel("core", fontsize=9)
    core_ax.grid(False)
    _time_axis(core_ax, minutes)
    fig.colorbar(image, ax=core_ax, fraction=0.05, pad=0.01)
    return img(
        fig,
        "CPU utilisation",
        "Left: mean CPU utilisation over the cores this process may use, and I/O "
        "wait. Right: every core over time (yellow = busy).",
    )


def _memory_io_figure(samples: list[dict[str, Any]], minutes: bool) -> str:
    fig, (mem_ax, disk_ax, net_ax) = figure(3)
    times = _times(samples, minutes)
    mem_ax.plot(times, [float_or_nan(s.get("memory_percent")) for s in samples], color="#0072b2", label="host used %")
    mem_ax.set(ylim=(0, 102))
    mem_ax.set_ylabel("host memory %", fontsize=9)
    rss_ax = mem_ax.twinx()
    rss_ax.plot(
        times,
        [float_or_nan(s.get("process_rss_bytes")) / 1e9 for s in samples],
        color="#cc79a7",
        label="process RSS (GB)",
    )
    rss_ax.set_ylabel("process RSS (GB)", fontsize=9)
    rss_ax.tick_params(labelsize=8)
    rss_ax.set_ylim(bottom=0)
    mem_ax.set_title("memory", fontsize=10)
    handles = mem_ax.get_legend_handles_labels()
    more = rss_ax.get_legend_handles_labels()
    mem_ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="lower right")
    for ax, keys, title in (
        (disk_ax, (("disk_read_bytes_per_s", "read"), ("disk_write_bytes_per_s", "write")), "disk (MB/s)"),
        (net_ax, (("net_recv_bytes_per_s", "received"), ("net_sent_bytes_per_s", "sent")), "network (MB/s)"),
    ):
        for key, label in keys:
            ax.plot(times, [float_or_nan(s.get(key)) / 1e6 for s in samples], linewidth=1, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        legend(ax)
    for ax in (mem_ax, disk_ax, net_ax):
        _time_axis(ax, minutes)
    return img(
        fig,
        "memory, disk and network",
        "Host memory in use and this process's resident memory; disk and network throughput.",
    )


def _gpu_figure(samples: list[dict[str, Any]], minutes: bool) -> str:
    fig, (util_ax, mem_ax) = figure(2)
    times = _times(samples, minutes)
    count = max(len(s.get("gpu") or []) for s in samples)
    for index in range(count):
        rows = [(s.get("gpu") or [])[index] if index < len(s.get("gpu") or []) else {} for s in samples]
        util_ax.plot(
            times, [float_or_nan(g.get("utilization_percent")) for g in rows], linewidth=1, label=f"GPU {index}"
        )
        line = mem_ax.plot(
            times,
            [float_or_nan(g.get("memory_used_bytes")) / 1e9 for g in rows],
            linewidth=1,
            label=f"GPU {index} used",
        )
        totals = [g.get("memory_total_bytes") for g in rows if is_finite(g.get("memory_total_bytes"))]
        if totals:
            mem_ax.axhline(
                max(totals) / 1e9, color=line[0].get_color(), linestyle="--", linewidth=0.8, label=f"GPU {index} total"
            )
    util_ax.set(ylim=(0, 102))
    util_ax.set_title("GPU utilisation (%)", fontsize=10)
    mem_ax.set_title("GPU memory (GB, from NVML)", fontsize=10)
    mem_ax.set_ylim(bottom=0)
    for ax in (util_ax, mem_ax):
        _time_axis(ax, minutes)
        ax.legend(fontsize=7, loc="lower right")
    return img(fig, "GPU utilisation and memory", "Per GPU, sampled through NVML.")


def _allocator_figure(rows: list[dict[str, Any]]) -> str:
    fig, (ax,) = figure(1, height=2.8)
    rows = thin(rows)
    steps = [float_or_nan(r.get("global_step")) for r in rows]
    for key, label in (
        ("allocated_bytes", "allocated"),
        ("reserved_bytes", "reserved"),
        ("max_allocated_bytes", "peak allocated"),
    ):
        ax.plot(steps, [float_or_nan(r.get(key)) / 1e9 for r in rows], linewidth=1.1, label=label)
    ax.set_ylabel("GB", fontsize=9)
    ax.set_xlabel("global step", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.set_title("PyTorch CUDA allocator", fontsize=10)
    legend(ax)
    return img(
        fig,
        "GPU memory per step",
        "Memory held by tensors (allocated), by PyTorch's cache (reserved), "
        "and the peak so far; a steady climb means tensors are being kept across steps.",
    )
