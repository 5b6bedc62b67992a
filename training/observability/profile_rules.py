"""The profiler's rules: SageMaker Profiler's built-in rules, adapted to what profiler.py measures, each
verdict with the numbers it checked and a concrete recommendation (train.py flags, or what to change around it).

``evaluate(profile, spec)`` takes the profile document (profiler.json's content without "rules") and returns one
verdict per enabled rule (``rule_spec.verdict``, source "profiler"): "fired", "ok", or "not_applicable" (no GPU in
this run, nothing measured yet). Thresholds keep SageMaker's names and defaults where they carry over; rules:

    LowGPUUtilization      per GPU, in consecutive windows of ``window`` system samples (the first ``patience``
                           samples skipped: start-up): p95 utilisation < threshold_p95 (70%) -> underused; or
                           p95 >= threshold_p95 and p5 < threshold_p5 (10%) -> fluctuating (the GPU idles between
                           bursts). Not applicable without a GPU.
    CPUBottleneck          with a GPU (SageMaker's rule): a sample is a bottleneck when some core is busy
                           > cpu_threshold (90%) while some GPU is < gpu_threshold (10%); fires when more than
                           ``threshold`` (50%) of the samples are. On the CPU (no GPU to starve) it checks that the
                           data pipeline competes with the model for the same cores: steps wait on data more than
                           data_wait_threshold (25%) of the time AND all cores together are busy > cpu_threshold
                           in more than ``threshold`` % of the samples.
    IOBottleneck           a sample is a bottleneck when cpu_iowait_percent > io_threshold (50%) (and, with a GPU,
                           some GPU is < gpu_threshold); fires when more than ``threshold`` (50%) of the samples
                           are. Not applicable when iowait was not measured.
    Dataloader             SageMaker counts loader processes against cores (min_threshold 70%, max_threshold
                           200%); we know the worker count, and we measure what matters more, the time steps wait
                           for data: fires when the data wait exceeds data_wait_threshold (25%) of step time (each
                           epoch's first step left out: worker start-up), or when num_workers > max_threshold % of
                           the cores. min_threshold only shapes the advice (how many workers to try).
    BatchSize              all of: CPU p95 (mean of cores) < cpu_threshold_p95 (70%), GPU utilisation p95 <
                           gpu_threshold_p95 (70%), GPU memory p95 < gpu_memory_threshold_p95 (70%), in some
                           window -> a larger --batch-size would use the GPU better. Not applicable without a GPU.
    StepOutlier            the outliers of step_timing.py (median + k x MAD, each epoch's first step left
                           out; SageMaker uses mean + 3 std, which one huge step inflates) that are also slower than
                           median_multiple (3) x the median step, so a busy shared machine's jitter does not count;
                           fires when there are more than n_outliers (2: one or two slow steps on a shared machine
                           are noise, a pattern is not; SageMaker 10, without the 3x guard).
    GPUMemoryIncrease      allocated CUDA memory (gpu_memory records, the first ``patience`` skipped): the mean of a
                           later ``window`` of records exceeds the first window's mean by more than ``increase``
                           (5) percentage points of the GPU's total memory (SageMaker's unit; percent of the first
                           window when the total is unknown). Not applicable without a GPU.
    MaxInitializationTime  init_seconds (process start to the end of the first step) > threshold minutes (20).

    used by profiler.py (python training/train.py --profiler on ...); not run on its own
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import rule_spec

SOURCE = "profiler"

CATALOGUE: dict[str, tuple[str, dict[str, float]]] = {
    "LowGPUUtilization": ("log", {"threshold_p95": 70.0, "threshold_p5": 10.0, "window": 500.0, "patience": 5.0}),
    "CPUBottleneck": (
        "log",
        {"threshold": 50.0, "cpu_threshold": 90.0, "gpu_threshold": 10.0, "data_wait_threshold": 25.0, "patience": 5.0},
    ),
    "IOBottleneck": ("log", {"threshold": 50.0, "io_threshold": 50.0, "gpu_threshold": 10.0, "patience": 5.0}),
    "Dataloader": ("log", {"data_wait_threshold": 25.0, "min_threshold": 70.0, "max_threshold": 200.0}),
    "BatchSize": (
        "log",
        {
            "cpu_threshold_p95": 70.0,
            "gpu_threshold_p95": 70.0,
            "gpu_memory_threshold_p95": 70.0,
            "window": 500.0,
            "patience": 5.0,
        },
    ),
    "StepOutlier": ("log", {"median_multiple": 3.0, "n_outliers": 2.0}),
    "GPUMemoryIncrease": ("log", {"increase": 5.0, "window": 10.0, "patience": 1.0}),
    "MaxInitializationTime": ("log", {"threshold": 20.0}),
}

MIN_SAMPLES = 3  # system samples needed (after the skipped ones) before a sample-based rule judges anything
MIN_STEPS = 5  # steps needed before StepOutlier judges anything

Verdict = dict[str, Any]


def evaluate(profile: Mapping[str, Any], spec: str = "") -> list[Verdict]:
    """One verdict per rule that ``spec`` enables (``rule_spec.RuleSpecError`` for a bad spec)."""
    verdicts = []
    for name, setting in rule_spec.parse_rule_spec(spec, CATALOGUE).items():
        try:
            found = RULES[name](profile, setting.thresholds)
        except Exception as error:  # a rule must never end a training run: report it instead
            found = _verdict(
                "not_applicable",
                f"rule error: {type(error).__name__}: {error}",
                "report this as a bug in profile_rules.py",
            )
        found.update(rule=name, action=setting.action, thresholds=dict(setting.thresholds))
        verdicts.append(found)
    return verdicts


# ---------------------------------------------------------------- the rules


def low_gpu_utilization(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    samples, skipped = _samples(profile, t["patience"])
    unjudged = _gpu_unjudged(profile, samples, skipped)
    if unjudged:
        return unjudged
    low, fluctuating, fine = [], [], []
    for gpu, values in _gpu_values(samples, "utilization_percent").items():
        windows = [(_quantile(w, 0.95), _quantile(w, 0.05)) for w in _windows(values, t["window"])]
        if not windows:
            continue
        worst_low = min(windows, key=lambda w: w[0])
        if worst_low[0] < t["threshold_p95"]:
            low.append((gpu, worst_low, len(values)))
            continue
        swings = [w for w in windows if w[1] < t["threshold_p5"]]
        if swings:
            fluctuating.append((gpu, min(swings, key=lambda w: w[1]), len(values)))
        else:
            fine.append((gpu, worst_low, len(values)))
    if not (low or fluctuating or fine):
        return _not_enough_samples(samples, skipped)
    checked = f"{len(samples)} samples after the first {skipped} (start-up), windows of {int(t['window'])}"
    if not low and not fluctuating:
        parts = "; ".join(f"GPU {g}: lowest window p95 {p95:.0f}%, p5 {p5:.0f}%" for g, (p95, p5), _ in fine)
        evidence = (
            f"{parts} (underused below p95 {t['threshold_p95']:.0f}%, fluctuating below p5 "
            f"{t['threshold_p5']:.0f}%; {checked})"
        )
        return _verdict("ok", evidence, "nothing to do")
    parts = [f"GPU {g}: p95 utilisation {p95:.0f}% < {t['threshold_p95']:.0f}%" for g, (p95, _), _ in low]
    parts += [
        f"GPU {g}: utilisation swings between p5 {p5:.0f}% (< {t['threshold_p5']:.0f}%) and p95 {p95:.0f}%"
        for g, (p95, p5), _ in fluctuating
    ]
    evidence = "; ".join(parts) + f" ({checked})"
    data = _data_wait(profile)
    if data and data["share"] * 100 > CATALOGUE["Dataloader"][1]["data_wait_threshold"]:
        advice = (
            f"the GPU waits for batches (steps wait on data {data['share']:.0%} of the time): "
            + _workers_advice(profile)
            + "; see the Dataloader and CPUBottleneck verdicts"
        )
    elif low:
        advice = (
            f"the GPU has work to spare: a larger batch ({_batch_flag(profile)}, scaling --lr with it), --amp on "
            "and --channels-last true, or a smaller (cheaper) GPU instance"
        )
    else:
        advice = (
            "the GPU idles between bursts: look for pauses in the step loop (validation, checkpoint writes, "
            "logging that syncs the GPU) and keep the loader ahead with more --num-workers "
            f"({_workers_on_cores(profile)})"
        )
    return _verdict("fired", evidence, advice, count=len(low) + len(fluctuating))


def cpu_bottleneck(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    samples, skipped = _samples(profile, t["patience"])
    if _is_gpu_run(profile):
        unjudged = _gpu_unjudged(profile, samples, skipped)
        if unjudged:
            return unjudged
        bottlenecks = sum(
            1
            for s in samples
            if max(_cores(s), default=0.0) > t["cpu_threshold"]
            and min(_gpu_list(s, "utilization_percent"), default=100.0) < t["gpu_threshold"]
        )
        share = 100 * bottlenecks / len(samples)
        evidence = (
            f"{bottlenecks} of {len(samples)} samples ({share:.0f}%) had a core busy > {t['cpu_threshold']:.0f}% "
            f"while a GPU was < {t['gpu_threshold']:.0f}% (fires above {t['threshold']:.0f}% of samples; the first "
            f"{skipped} samples skipped)"
        )
        if share <= t["threshold"]:
            return _verdict("ok", evidence, "nothing to do", count=bottlenecks)
        advice = (
            "the CPU cannot feed the GPU: "
            + _workers_advice(profile)
            + "; lighten the per-image work (--augment standard or none, a smaller --image-size), or an instance "
            "with more vCPUs per GPU"
        )
        return _verdict("fired", evidence, advice, count=bottlenecks)
    # CPU run: there is no GPU to starve; what hurts is the loader and the model fighting over the same cores.
    data = _data_wait(profile)
    if not data:
        return _verdict("not_applicable", "not enough data: no training step measured yet", "nothing to do")
    if len(samples) < MIN_SAMPLES:
        return _not_enough_samples(samples, skipped)
    busy = sum(1 for s in samples if _mean(_cores(s)) > t["cpu_threshold"])
    busy_share = 100 * busy / len(samples)
    waits = data["share"] * 100 > t["data_wait_threshold"]
    evidence = (
        f"CPU run: steps wait on data {data['share']:.0%} of the time (limit {t['data_wait_threshold']:.0f}%) and "
        f"all {_cpu_count(profile, samples)} cores together were busy > {t['cpu_threshold']:.0f}% in {busy} of "
        f"{len(samples)} samples ({busy_share:.0f}%, limit {t['threshold']:.0f}%): it fires when both are over"
    )
    if not (waits and busy_share > t["threshold"]):
        return _verdict("ok", evidence, "nothing to do", count=busy)
    advice = (
        f"the data pipeline and the model compete for the same {_cpu_count(profile, samples)} busy cores, so more "
        f"--num-workers than cores cannot help ({_workers_on_cores(profile)}): make each image cheaper (--augment "
        "standard or none, a smaller --image-size) or use a larger instance (more cores, or a GPU)"
    )
    return _verdict("fired", evidence, advice, count=busy)


def io_bottleneck(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    samples, skipped = _samples(profile, t["patience"])
    measured = [s for s in samples if isinstance(s.get("cpu_iowait_percent"), (int, float))]
    if samples and not measured:
        return _verdict(
            "not_applicable", "iowait not measured (no cpu_iowait_percent in the system samples)", "nothing to do"
        )
    if len(measured) < MIN_SAMPLES:
        return _not_enough_samples(measured, skipped)
    gpu = _is_gpu_run(profile) and not _no_gpu(profile, measured)
    bottlenecks = [
        s
        for s in measured
        if s["cpu_iowait_percent"] > t["io_threshold"]
        and (not gpu or min(_gpu_list(s, "utilization_percent"), default=100.0) < t["gpu_threshold"])
    ]
    share = 100 * len(bottlenecks) / len(measured)
    iowait = [s["cpu_iowait_percent"] for s in measured]
    while_gpu = f" while a GPU was < {t['gpu_threshold']:.0f}%" if gpu else ""
    evidence = (
        f"iowait > {t['io_threshold']:.0f}%{while_gpu} in {len(bottlenecks)} of {len(measured)} samples "
        f"({share:.0f}%, fires above {t['threshold']:.0f}%); iowait median {statistics.median(iowait):.0f}%, "
        f"max {max(iowait):.0f}%"
    )
    if share <= t["threshold"]:
        return _verdict("ok", evidence, "nothing to do", count=len(bottlenecks))
    advice = (
        "the CPUs wait on storage: copy the data to local disk first (SageMaker: File mode, or FastFile mode "
        "instead of reading each image over the network), pack small images into fewer larger files, and overlap "
        f"reads with more --num-workers ({_workers_on_cores(profile)})"
    )
    return _verdict("fired", evidence, advice, count=len(bottlenecks))


def dataloader(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    data = _data_wait(profile)
    workers, cores = profile.get("num_workers"), profile.get("cpu_count")
    too_many = (
        isinstance(workers, int) and isinstance(cores, int) and cores > 0 and workers > cores * t["max_threshold"] / 100
    )
    if not data and not too_many:
        return _verdict("not_applicable", "not enough data: no training step measured yet", "nothing to do")
    parts, step, epoch = [], None, None
    if data:
        median = f", median {data['median']:.3g} s a step" if data["median"] is not None else ""
        parts.append(
            f"steps waited for data {data['share']:.0%} of the step time{median} ({data['basis']}; "
            f"fires above {t['data_wait_threshold']:.0f}%)"
        )
        if data["worst"]:
            worst = data["worst"]
            step, epoch = worst.get("global_step"), worst.get("epoch")
            parts.append(f"longest wait {worst['data_seconds']:.3g} s at step {step} (epoch {epoch})")
    parts.append(_workers_on_cores(profile))
    evidence = "; ".join(parts)
    waits = bool(data) and data["share"] * 100 > t["data_wait_threshold"]
    if too_many:
        evidence += f" (more than {t['max_threshold']:.0f}% of the cores)"
        advice = f"{workers} workers on {cores} cores fight over the cores (and memory): set --num-workers {cores}" + (
            " and see why the data is slow (IOBottleneck, CPUBottleneck)" if waits else ""
        )
        return _verdict("fired", evidence, advice, step=step if waits else None, epoch=epoch if waits else None)
    if not waits:
        return _verdict("ok", evidence, "nothing to do")
    advice = _workers_advice(profile, t["min_threshold"])
    return _verdict("fired", evidence, advice, step=step, epoch=epoch, count=data["slow_steps"])


def batch_size(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    samples, skipped = _samples(profile, t["patience"])
    unjudged = _gpu_unjudged(profile, samples, skipped)
    if unjudged:
        return unjudged
    findings, fine = [], []
    for gpu in sorted(_gpu_values(samples, "utilization_percent")):
        rows = [row for row in (_cpu_gpu_memory(s, gpu) for s in samples) if row]
        if len(rows) < MIN_SAMPLES:
            continue  # memory not measured for this GPU
        quantiles = [
            (gpu, *(_quantile([r[k] for r in window], 0.95) for k in range(3)))
            for window in _windows(rows, t["window"])
        ]
        low = [
            q
            for q in quantiles
            if q[1] < t["cpu_threshold_p95"] and q[2] < t["gpu_threshold_p95"] and q[3] < t["gpu_memory_threshold_p95"]
        ]
        if low:
            findings.append(low[0])
        else:
            fine.append(min(quantiles, key=lambda q: q[2]))
    if not findings and not fine:
        return _verdict("not_applicable", "GPU memory not measured in the samples", "nothing to do")
    limits = (
        f"CPU p95 < {t['cpu_threshold_p95']:.0f}%, GPU p95 < {t['gpu_threshold_p95']:.0f}% and GPU memory p95 < "
        f"{t['gpu_memory_threshold_p95']:.0f}% together"
    )
    describe = "; ".join(
        f"GPU {g}: CPU p95 {c:.0f}%, utilisation p95 {u:.0f}%, memory p95 {m:.0f}%" for g, c, u, m in findings or fine
    )
    evidence = f"{describe} (fires on {limits}; {len(samples)} samples)"
    if not findings:
        return _verdict("ok", evidence, "nothing to do")
    memory_p95 = max(m for *_, m in findings)
    factor = max(2, min(8, int(t["gpu_memory_threshold_p95"] // max(memory_p95, 1.0))))
    advice = (
        f"CPU, GPU and GPU memory all have room: a larger batch ({_batch_flag(profile, factor)}: memory p95 "
        f"{memory_p95:.0f}% leaves room for about {factor}x; scale --lr with it), or a smaller, cheaper GPU instance"
    )
    return _verdict("fired", evidence, advice, count=len(findings))


def step_outlier(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    steps = profile.get("steps") or {}
    summary = steps.get("summary") or {}
    count = summary.get("steps") or 0
    median = summary.get("median_step_seconds")
    if count < MIN_STEPS or not median:
        return _verdict(
            "not_applicable", f"not enough data: {count} step(s) measured, {MIN_STEPS} needed", "nothing to do"
        )
    bar = t["median_multiple"] * median
    robust = summary.get("outlier_threshold_seconds")
    outliers = [o for o in summary.get("outliers") or [] if o.get("step_seconds", 0) > bar]
    robust_text = f" ({robust:.3g} s)" if isinstance(robust, (int, float)) else ""
    limit = f"median + k x MAD{robust_text} and {t['median_multiple']:g}x the median ({bar:.3g} s)"
    if len(outliers) <= t["n_outliers"]:
        evidence = (
            f"{len(outliers)} of {count} steps slower than both {limit}; median {median:.3g} s, slowest "
            f"{summary.get('max_step_seconds', median):.3g} s (fires above {t['n_outliers']:g})"
        )
        return _verdict("ok", evidence, "nothing to do", count=len(outliers))
    slowest = sorted(outliers, key=lambda o: -o["step_seconds"])
    named = ", ".join(f"step {o['global_step']} (epoch {o['epoch']}) {o['step_seconds']:.3g} s" for o in slowest[:5])
    more = f" and {len(outliers) - 5} more" if len(outliers) > 5 else ""
    evidence = f"{len(outliers)} of {count} steps slower than {limit}: {named}{more}; median {median:.3g} s"
    series = {s.get("global_step"): s for s in steps.get("series") or []}
    split = series.get(slowest[0]["global_step"])
    if split and split.get("data_seconds", 0) > 0.5 * split.get("step_seconds", math.inf):
        advice = (
            f"step {slowest[0]['global_step']} spent {split['data_seconds']:.3g} of {split['step_seconds']:.3g} s "
            "waiting for data: slow reads (copy the data to local disk / FastFile mode) or too few loader workers "
            f"to absorb a slow image ({_workers_on_cores(profile)})"
        )
    else:
        advice = (
            "the slow steps were slow in compute: another process on the machine (see the CPU samples at that "
            "time), Python garbage collection, or cuDNN autotuning a new input shape (a smaller last batch); if "
            "they repeat, look at them in the torch profiler trace"
        )
    return _verdict(
        "fired", evidence, advice, step=slowest[0]["global_step"], epoch=slowest[0].get("epoch"), count=len(outliers)
    )


def gpu_memory_increase(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    samples, _ = _samples(profile, 0)
    if not _is_gpu_run(profile):
        return _verdict("not_applicable", _no_gpu(profile, samples) or "no GPU in this run", "nothing to do")
    records = [r for r in profile.get("gpu_memory") or [] if isinstance(r.get("allocated_bytes"), (int, float))]
    skip = int(t["patience"])
    records = records[skip:]
    if len(records) < 4:
        return _verdict(
            "not_applicable",
            f"not enough data: {len(records)} GPU memory records after the first {skip}, 4 needed",
            "nothing to do",
        )
    values = [float(r["allocated_bytes"]) for r in records]
    width = max(2, min(int(t["window"]), len(values) // 2))
    baseline = _mean(values[:width])
    totals = [v for values in _gpu_values(samples, "memory_total_bytes").values() for v in values if v]
    total = max(totals) if totals else None
    unit = f"of the GPU's {_gb(total)}" if total else "of the first window (GPU total memory unknown)"
    scale = 100 / total if total else 100 / max(baseline, 1.0)
    rises = [
        ((_mean(values[end - width + 1 : end + 1]) - baseline) * scale, end)
        for end in range(2 * width - 1, len(values))
    ]
    over = [r for r in rises if r[0] > t["increase"]]
    growth, at = over[0] if over else max(rises)
    record = records[at]
    evidence = (
        f"allocated memory: the first {width} records average {_gb(baseline)}; "
        f"{'the window' if over else 'the highest later window'} of {width} ending at step "
        f"{record.get('global_step')} is {growth:+.1f} points {unit} (fires above {t['increase']:g})"
    )
    if growth <= t["increase"]:
        return _verdict("ok", evidence, "nothing to do")
    advice = (
        "memory grows step after step: something keeps tensors alive across steps (accumulate loss.item(), not "
        "the loss tensor; detach() what you store); until fixed, a smaller --batch-size only delays CUDA out of memory"
    )
    return _verdict("fired", evidence, advice, step=record.get("global_step"))


def max_initialization_time(profile: Mapping[str, Any], t: Mapping[str, float]) -> Verdict:
    seconds = profile.get("init_seconds")
    if not isinstance(seconds, (int, float)):
        return _verdict("not_applicable", "not enough data: no training step has finished yet", "nothing to do")
    evidence = (
        f"process start to the end of the first step: {seconds / 60:.1f} min ({seconds:.0f} s), "
        f"limit {t['threshold']:g} min"
    )
    if seconds <= t["threshold"] * 60:
        return _verdict("ok", evidence, "nothing to do")
    advice = (
        "start-up is slow: skip decoding every image up front with --verify-images false once the data is known "
        "good, read the data in FastFile mode instead of downloading it all first, and cache pretrained weights in "
        "the image or the model channel"
    )
    return _verdict("fired", evidence, advice, step=1)


RULES: dict[str, Callable[[Mapping[str, Any], Mapping[str, float]], Verdict]] = {
    "LowGPUUtilization": low_gpu_utilization,
    "CPUBottleneck": cpu_bottleneck,
    "IOBottleneck": io_bottleneck,
    "Dataloader": dataloader,
    "BatchSize": batch_size,
    "StepOutlier": step_outlier,
    "GPUMemoryIncrease": gpu_memory_increase,
    "MaxInitializationTime": max_initialization_time,
}

# ---------------------------------------------------------------- helpers


def _verdict(
    status: str, evidence: str, recommendation: str, step: int | None = None, epoch: int | None = None, count: int = 0
) -> Verdict:
    """A verdict without its rule, action and thresholds (evaluate fills them)."""
    return rule_spec.verdict("", SOURCE, status, evidence, recommendation, {}, step=step, epoch=epoch, count=count)


def _samples(profile: Mapping[str, Any], patience: float) -> tuple[list[dict[str, Any]], int]:
    """The system samples after the first ``patience`` (start-up: model load, first CUDA kernels)."""
    samples = [s for s in ((profile.get("system") or {}).get("samples") or []) if isinstance(s, dict)]
    skip = min(int(patience), len(samples))
    return samples[skip:], skip


def _not_enough_samples(samples: Sequence[Any], skipped: int) -> Verdict:
    return _verdict(
        "not_applicable",
        f"not enough data: {len(samples)} system sample(s) after the first {skipped}, {MIN_SAMPLES} needed",
        "nothing to do",
    )


def _is_gpu_run(profile: Mapping[str, Any]) -> bool:
    return profile.get("device") == "cuda" or bool(profile.get("gpu_count"))


def _gpu_unjudged(profile: Mapping[str, Any], samples: Sequence[dict[str, Any]], skipped: int) -> Verdict | None:
    """The not-applicable verdict of a rule that reads GPU samples, when there are none (or too few) to judge."""
    absent = _no_gpu(profile, samples)
    if absent:
        return _verdict("not_applicable", absent, "nothing to do")
    if len(samples) < MIN_SAMPLES:
        return _not_enough_samples(samples, skipped)
    return None


def _no_gpu(profile: Mapping[str, Any], samples: Sequence[dict[str, Any]]) -> str:
    """Why the GPU rules cannot judge this run ('' when they can)."""
    seen = max((len(s.get("gpu") or []) for s in samples), default=0)
    if not _is_gpu_run(profile):
        extra = f" (although NVML sees {seen} GPU(s): is CUDA visible to torch?)" if seen else ""
        return f"no GPU in this run: it trained on the CPU{extra}"
    if samples and not seen:
        return "GPU utilisation not measured (no NVML readings in the samples)"
    return ""


def _cores(sample: Mapping[str, Any]) -> list[float]:
    value = sample.get("cpu_percent")
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value or []]


def _gpu_list(sample: Mapping[str, Any], key: str) -> list[float]:
    return [float(g[key]) for g in sample.get("gpu") or [] if isinstance(g.get(key), (int, float))]


def _cpu_gpu_memory(sample: Mapping[str, Any], gpu: int) -> tuple[float, float, float] | None:
    """(CPU busy % as the mean of the cores, GPU ``gpu`` utilisation %, its memory used %), or None."""
    readings = sample.get("gpu") or []
    if gpu >= len(readings):
        return None
    reading = readings[gpu]
    used, total, busy = (
        reading.get("memory_used_bytes"),
        reading.get("memory_total_bytes"),
        reading.get("utilization_percent"),
    )
    if not all(isinstance(v, (int, float)) for v in (used, total, busy)) or not total:
        return None
    return _mean(_cores(sample)), float(busy), 100 * used / total


def _gpu_values(samples: Sequence[Mapping[str, Any]], key: str) -> dict[int, list[float]]:
    """GPU index -> its readings of ``key``, in sample order."""
    values: dict[int, list[float]] = {}
    for sample in samples:
        for index, gpu in enumerate(sample.get("gpu") or []):
            if isinstance(gpu.get(key), (int, float)):
                values.setdefault(index, []).append(float(gpu[key]))
    return values


def _windows(values: Sequence[Any], window: float) -> list[list[Any]]:
    """Consecutive windows of ``window`` values; a short tail joins the window before it."""
    size = max(1, int(window))
    chunks = [list(values[i : i + size]) for i in range(0, len(values), size)]
    if len(chunks) > 1 and len(chunks[-1]) < max(MIN_SAMPLES, size // 2):
        chunks[-2].extend(chunks.pop())
    return chunks


def _data_wait(profile: Mapping[str, Any]) -> dict[str, Any] | None:
    """Share of step time spent waiting for data, each epoch's first step left out (worker start-up) when the
    series allows; else the summary's share over all steps. None before any step."""
    steps = profile.get("steps") or {}
    summary = steps.get("summary") or {}
    series = [s for s in steps.get("series") or [] if "data_seconds" in s and "step_seconds" in s]
    steady = [s for s in series if s.get("step", 1) >= 1]
    whole = (summary.get("share") or {}).get("data_seconds")
    if steady and sum(s["step_seconds"] for s in steady) > 0:
        share = sum(s["data_seconds"] for s in steady) / sum(s["step_seconds"] for s in steady)
        overall = f"; all steps: {whole:.0%}" if isinstance(whole, (int, float)) else ""
        basis = f"{len(steady)} steps, each epoch's first left out{overall}"
        chosen = steady
    elif isinstance(whole, (int, float)):
        share, chosen = whole, series
        basis = f"all {summary.get('steps', len(series))} steps"
    else:
        return None
    waits = [s["data_seconds"] for s in chosen]
    return {
        "share": share,
        "basis": basis,
        "median": statistics.median(waits) if waits else None,
        "worst": max(chosen, key=lambda s: s["data_seconds"]) if chosen else None,
        "slow_steps": sum(1 for s in chosen if s["data_seconds"] > 0.5 * s["step_seconds"]),
    }


def _cpu_count(profile: Mapping[str, Any], samples: Sequence[Mapping[str, Any]] = ()) -> int | str:
    cores = profile.get("cpu_count")
    if isinstance(cores, int) and cores > 0:
        return cores
    seen = max((len(_cores(s)) for s in samples), default=0)
    return seen or "?"


def _workers_on_cores(profile: Mapping[str, Any]) -> str:
    workers = profile.get("num_workers")
    return f"this run used {'?' if workers is None else workers} loader workers on {_cpu_count(profile)} cores"


def _workers_advice(profile: Mapping[str, Any], min_threshold: float = 70.0) -> str:
    """What to do about slow data, from the worker count against the cores."""
    workers, cores = profile.get("num_workers"), profile.get("cpu_count")
    used = _workers_on_cores(profile)
    if not isinstance(workers, int) or not isinstance(cores, int) or cores < 1:
        return f"raise --num-workers towards the number of cores ({used})"
    if cores == 1:
        return f"{used}: loading and training share one core; use a larger instance with more cores"
    if workers < cores * min_threshold / 100:
        suggest = (
            min(cores, 8) if workers == 0 else min(cores, max(workers * 2, math.ceil(cores * min_threshold / 100)))
        )
        return f"{used}: try --num-workers {suggest}"
    return (
        f"{used}, already about one per core: make each image cheaper (a smaller --image-size, --augment standard "
        "or none), read from local disk (FastFile mode / copy the data first), or use a larger instance with more cores"
    )


def _batch_flag(profile: Mapping[str, Any], factor: int = 2) -> str:
    size = profile.get("batch_size")
    if isinstance(size, int) and size > 0:
        return f"try --batch-size {size * factor}; this run used {size} per GPU"
    return f"try --batch-size {factor}x this run's"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _gb(value: float | None) -> str:
    return "?" if value is None else f"{value / 1e9:.2f} GB"
