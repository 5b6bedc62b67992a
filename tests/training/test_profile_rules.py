"""The profiler's rules on profile documents shaped like profiler.json (step summaries from step_timing.summarise,
system samples as system_monitor takes them): each rule fires on its planted fault with the numbers and the train.py
flag to change, stays quiet on a healthy run, says "no GPU in this run" on the CPU and "not enough data" on sparse
documents; rule specs switch rules off and move thresholds; and a real sampler + StepTimer run with a slow data
part makes Dataloader fire."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import pytest

from observability import profile_rules, rule_spec, step_timing, system_monitor

GB = 1e9


def steps(
    durations: list[float], data_share: float = 0.05, steps_per_epoch: int | None = None, batch: int = 8
) -> list[dict[str, Any]]:
    """Step rows as StepTimer keeps them (epoch 1-based, step 0-based within the epoch)."""
    per_epoch = steps_per_epoch or len(durations)
    rows = []
    for i, d in enumerate(durations):
        data = d * data_share
        rows.append(
            {
                "epoch": i // per_epoch + 1,
                "step": i % per_epoch,
                "global_step": i + 1,
                "batch_size": batch,
                "data_seconds": data,
                "forward_backward_seconds": (d - data) * 0.8,
                "optimizer_seconds": (d - data) * 0.2,
                "step_seconds": d,
            }
        )
    return rows


def cpu_samples(n: int, busy: float = 40.0, cores: int = 2, iowait: float | None = 0.5) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row = {
            "t": float(i),
            "cpu_percent": [busy] * cores,
            "memory_percent": 30.0,
            "memory_used_bytes": 2 * GB,
            "process_rss_bytes": 1 * GB,
            "disk_read_bytes_per_s": 0.0,
            "disk_write_bytes_per_s": 0.0,
            "net_recv_bytes_per_s": 0.0,
            "net_sent_bytes_per_s": 0.0,
            "gpu": [],
        }
        if iowait is not None:
            row["cpu_iowait_percent"] = iowait
        rows.append(row)
    return rows


def gpu_samples(utilisation: list[float], memory_used: float = 0.8, busy: float = 40.0, total: float = 16 * GB):
    """One sample per utilisation reading, one GPU with ``memory_used`` of its memory in use."""
    rows = cpu_samples(len(utilisation), busy=busy, cores=8)
    for row, u in zip(rows, utilisation, strict=True):
        row["gpu"] = [{"utilization_percent": u, "memory_used_bytes": memory_used * total, "memory_total_bytes": total}]
    return rows


def make_profile(
    step_rows: list[dict[str, Any]], samples: list[dict[str, Any]] | None = None, **fields: Any
) -> dict[str, Any]:
    document = {
        "device": "cpu",
        "gpu_count": 0,
        "cpu_count": 2,
        "num_workers": 2,
        "batch_size": 8,
        "world_size": 1,
        "init_seconds": 30.0,
        "system": {"interval": 1.0, "samples": cpu_samples(20) if samples is None else samples},
        "steps": {"summary": step_timing.summarise(step_rows), "series": step_rows},
        "gpu_memory": [],
        "torch_profiler": None,
    }
    document.update(fields)
    return document


def gpu_profile(step_rows: list[dict[str, Any]], samples: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    base = {"device": "cuda", "gpu_count": 1, "cpu_count": 8, "num_workers": 8, "batch_size": 32}
    return make_profile(step_rows, samples, **{**base, **fields})


def healthy_steps(n: int = 40) -> list[dict[str, Any]]:
    return steps([0.100, 0.104, 0.097, 0.101, 0.099] * (n // 5), data_share=0.05, steps_per_epoch=10)


def by_rule(profile: dict[str, Any], spec: str = "") -> dict[str, dict[str, Any]]:
    return {v["rule"]: v for v in profile_rules.evaluate(profile, spec)}


GPU_RULES = ("LowGPUUtilization", "BatchSize", "GPUMemoryIncrease")


# ---------------------------------------------------------------- catalogue and specs


def test_every_rule_gives_one_verdict_with_sagemaker_names_and_defaults():
    verdicts = profile_rules.evaluate(make_profile(healthy_steps()))
    assert [v["rule"] for v in verdicts] == list(profile_rules.CATALOGUE)
    assert set(profile_rules.CATALOGUE) == {
        "LowGPUUtilization",
        "CPUBottleneck",
        "IOBottleneck",
        "Dataloader",
        "BatchSize",
        "StepOutlier",
        "GPUMemoryIncrease",
        "MaxInitializationTime",
    }
    assert all(v["source"] == "profiler" and v["action"] == "log" for v in verdicts)
    assert all(v["evidence"] and v["recommendation"] for v in verdicts)
    low_gpu = verdicts[0]["thresholds"]
    assert low_gpu["threshold_p95"] == 70 and low_gpu["threshold_p5"] == 10
    assert profile_rules.CATALOGUE["MaxInitializationTime"][1] == {"threshold": 20.0}
    assert profile_rules.CATALOGUE["CPUBottleneck"][1]["cpu_threshold"] == 90


def test_a_healthy_cpu_run_fires_nothing_and_gpu_rules_say_there_is_no_gpu():
    found = by_rule(make_profile(healthy_steps()))
    assert not [name for name, v in found.items() if v["status"] == "fired"]
    for name in GPU_RULES:
        assert found[name]["status"] == "not_applicable"
        assert "no GPU in this run" in found[name]["evidence"]
    for name in ("CPUBottleneck", "IOBottleneck", "Dataloader", "StepOutlier", "MaxInitializationTime"):
        assert found[name]["status"] == "ok", found[name]
    assert "5%" in found["Dataloader"]["evidence"]  # the data share it checked
    assert "2 loader workers on 2 cores" in found["Dataloader"]["evidence"]


def test_specs_switch_rules_off_pick_actions_and_move_thresholds():
    slow_data = make_profile(steps([0.1] * 20, data_share=0.4), num_workers=2)
    assert profile_rules.evaluate(slow_data, "none") == []
    only = profile_rules.evaluate(slow_data, "none,Dataloader=stop")
    assert [(v["rule"], v["action"], v["status"]) for v in only] == [("Dataloader", "stop", "fired")]
    assert by_rule(slow_data)["Dataloader"]["status"] == "fired"
    relaxed = by_rule(slow_data, "Dataloader.data_wait_threshold=50")["Dataloader"]
    assert relaxed["status"] == "ok" and relaxed["thresholds"]["data_wait_threshold"] == 50
    assert "StepOutlier" not in by_rule(slow_data, "StepOutlier=off")
    with pytest.raises(rule_spec.RuleSpecError):
        profile_rules.evaluate(slow_data, "Dataloader.nonsense=1")


# ---------------------------------------------------------------- Dataloader


def test_dataloader_fires_when_steps_wait_for_data_and_names_the_worker_count():
    rows = steps([0.2] * 30, data_share=0.6, steps_per_epoch=10)
    rows[14]["data_seconds"], rows[14]["step_seconds"] = 0.5, 0.58
    verdict = by_rule(make_profile(rows, num_workers=0, cpu_count=2))["Dataloader"]
    assert verdict["status"] == "fired"
    assert "--num-workers 2" in verdict["recommendation"]
    assert "0 loader workers on 2 cores" in verdict["recommendation"]
    assert "63%" in verdict["evidence"] and "median 0.12 s" in verdict["evidence"]
    assert (verdict["step"], verdict["epoch"]) == (15, 2)  # the longest wait
    assert verdict["count"] == 27  # steps past each epoch's first that spent over half their time waiting


def test_dataloader_with_a_worker_per_core_already_points_at_the_data_itself():
    verdict = by_rule(make_profile(steps([0.2] * 20, data_share=0.5), num_workers=4, cpu_count=4))["Dataloader"]
    assert verdict["status"] == "fired"
    assert "--image-size" in verdict["recommendation"] and "FastFile" in verdict["recommendation"]


def test_dataloader_fires_on_far_more_workers_than_cores_even_without_waiting():
    verdict = by_rule(make_profile(healthy_steps(), num_workers=16, cpu_count=2))["Dataloader"]
    assert verdict["status"] == "fired"
    assert "16 workers on 2 cores" in verdict["recommendation"] and "--num-workers 2" in verdict["recommendation"]


def test_dataloader_leaves_out_each_epochs_first_step_worker_start_up():
    rows = steps([0.1] * 12, data_share=0.05, steps_per_epoch=4)
    for row in rows[::4]:  # the first batch of every epoch waits for the workers to start
        row["data_seconds"], row["step_seconds"] = 1.0, 1.1
    profile = make_profile(rows)
    assert profile["steps"]["summary"]["share"]["data_seconds"] > 0.5  # all steps: looks data-bound
    verdict = by_rule(profile)["Dataloader"]
    assert verdict["status"] == "ok", verdict["evidence"]
    assert "first left out" in verdict["evidence"]


# ---------------------------------------------------------------- CPUBottleneck


def test_cpu_bottleneck_on_the_cpu_fires_when_data_waits_while_all_cores_are_saturated():
    rows = steps([0.2] * 20, data_share=0.5)
    verdict = by_rule(make_profile(rows, cpu_samples(20, busy=98.0)))["CPUBottleneck"]
    assert verdict["status"] == "fired"
    assert "--augment" in verdict["recommendation"] and "--image-size" in verdict["recommendation"]
    assert "50%" in verdict["evidence"] and "100%" in verdict["evidence"]
    # the same data wait with idle cores (a loader sleeping on slow storage) is not a CPU problem
    assert by_rule(make_profile(rows, cpu_samples(20, busy=15.0)))["CPUBottleneck"]["status"] == "ok"
    # saturated cores while steps hardly wait: the model itself uses the cores, as it should
    assert by_rule(make_profile(healthy_steps(), cpu_samples(20, busy=98.0)))["CPUBottleneck"]["status"] == "ok"


def test_cpu_bottleneck_on_a_gpu_fires_when_a_busy_core_leaves_the_gpu_idle():
    starved = gpu_samples([5.0] * 30, busy=95.0)
    verdict = by_rule(gpu_profile(healthy_steps(), starved, num_workers=0))["CPUBottleneck"]
    assert verdict["status"] == "fired"
    assert "--num-workers 8" in verdict["recommendation"]
    assert verdict["count"] == 25  # 30 samples, the first 5 skipped as start-up
    fed = gpu_samples([95.0] * 30, busy=95.0)
    assert by_rule(gpu_profile(healthy_steps(), fed))["CPUBottleneck"]["status"] == "ok"


# ---------------------------------------------------------------- IOBottleneck


def test_io_bottleneck_fires_on_high_iowait_and_says_when_iowait_was_not_measured():
    verdict = by_rule(make_profile(healthy_steps(), cpu_samples(20, iowait=70.0)))["IOBottleneck"]
    assert verdict["status"] == "fired"
    assert "FastFile" in verdict["recommendation"] and "--num-workers" in verdict["recommendation"]
    assert "15 of 15 samples" in verdict["evidence"]
    assert by_rule(make_profile(healthy_steps(), cpu_samples(20, iowait=2.0)))["IOBottleneck"]["status"] == "ok"
    missing = by_rule(make_profile(healthy_steps(), cpu_samples(20, iowait=None)))["IOBottleneck"]
    assert missing["status"] == "not_applicable" and "iowait not measured" in missing["evidence"]


def test_io_bottleneck_on_a_gpu_counts_only_samples_where_the_gpu_was_idle():
    samples = gpu_samples([95.0] * 20)
    for row in samples:
        row["cpu_iowait_percent"] = 80.0  # busy disks, but the GPU is fed
    assert by_rule(gpu_profile(healthy_steps(), samples))["IOBottleneck"]["status"] == "ok"
    for row in samples:
        row["gpu"][0]["utilization_percent"] = 3.0
    assert by_rule(gpu_profile(healthy_steps(), samples))["IOBottleneck"]["status"] == "fired"


# ---------------------------------------------------------------- LowGPUUtilization and BatchSize


def test_low_gpu_utilization_fires_on_an_underused_gpu_and_on_fluctuation():
    underused = by_rule(gpu_profile(healthy_steps(), gpu_samples([30.0, 35.0, 25.0] * 10)))["LowGPUUtilization"]
    assert underused["status"] == "fired"
    assert "p95 utilisation 35% < 70%" in underused["evidence"]
    assert "try --batch-size 64; this run used 32 per GPU" in underused["recommendation"]
    swings = by_rule(gpu_profile(healthy_steps(), gpu_samples([100.0, 0.0] * 15)))["LowGPUUtilization"]
    assert swings["status"] == "fired" and "swings between p5 0%" in swings["evidence"]
    busy = by_rule(gpu_profile(healthy_steps(), gpu_samples([90.0, 95.0, 85.0] * 10)))["LowGPUUtilization"]
    assert busy["status"] == "ok" and "p95 95%" in busy["evidence"]


def test_low_gpu_utilization_blames_the_loader_when_steps_wait_for_data():
    waiting = steps([0.2] * 20, data_share=0.6)
    verdict = by_rule(gpu_profile(waiting, gpu_samples([20.0] * 30), num_workers=2))["LowGPUUtilization"]
    assert verdict["status"] == "fired"
    assert "--num-workers 6" in verdict["recommendation"] and "2 loader workers on 8 cores" in verdict["recommendation"]


def test_the_start_up_samples_are_skipped_so_an_idle_first_few_seconds_do_not_fire():
    warming = gpu_samples([0.0] * 5 + [95.0] * 30)
    assert by_rule(gpu_profile(healthy_steps(), warming))["LowGPUUtilization"]["status"] == "ok"
    counted = by_rule(gpu_profile(healthy_steps(), warming), "LowGPUUtilization.patience=0")["LowGPUUtilization"]
    assert counted["status"] == "fired"  # the idle start counted: the 5th percentile is 0%


def test_batch_size_fires_when_cpu_gpu_and_gpu_memory_all_have_room():
    roomy = by_rule(gpu_profile(healthy_steps(), gpu_samples([30.0] * 30, memory_used=0.1, busy=20.0)))
    verdict = roomy["BatchSize"]
    assert verdict["status"] == "fired"
    assert "memory p95 10%" in verdict["evidence"]
    assert "try --batch-size 224; this run used 32 per GPU" in verdict["recommendation"]  # 70 // 10 = 7x
    full = by_rule(gpu_profile(healthy_steps(), gpu_samples([30.0] * 30, memory_used=0.9, busy=20.0)))
    assert full["BatchSize"]["status"] == "ok"
    cpu_bound = by_rule(gpu_profile(healthy_steps(), gpu_samples([30.0] * 30, memory_used=0.1, busy=95.0)))
    assert cpu_bound["BatchSize"]["status"] == "ok"  # a bigger batch would wait on the CPU


def test_gpu_rules_without_nvml_readings_say_so():
    found = by_rule(gpu_profile(healthy_steps(), cpu_samples(20)))
    for name in ("LowGPUUtilization", "BatchSize"):
        assert found[name]["status"] == "not_applicable"
        assert "not measured" in found[name]["evidence"]


# ---------------------------------------------------------------- StepOutlier


def test_step_outlier_fires_on_a_step_far_slower_than_the_median_and_names_it():
    durations = [0.10, 0.11, 0.09, 0.10, 0.12] * 8
    durations[23] = 1.0
    profile = make_profile(steps(durations, steps_per_epoch=10))
    assert by_rule(profile)["StepOutlier"]["status"] == "ok"  # one slow step is noise by default (n_outliers 2)
    verdict = by_rule(profile, "StepOutlier.n_outliers=0")["StepOutlier"]
    assert verdict["status"] == "fired"
    assert (verdict["step"], verdict["epoch"], verdict["count"]) == (24, 3, 1)
    assert "step 24 (epoch 3) 1 s" in verdict["evidence"]
    assert "slow in compute" in verdict["recommendation"]
    for index in (13, 33):  # three slow steps: a pattern, which the default reports
        durations[index] = 1.0
    several = by_rule(make_profile(steps(durations, steps_per_epoch=10)))["StepOutlier"]
    assert several["status"] == "fired" and several["count"] == 3


def test_step_outlier_ignores_jitter_under_three_times_the_median():
    durations = [0.100, 0.101, 0.099, 0.100] * 10
    durations[17] = 0.25  # a MAD outlier on a quiet run, but only 2.5x the median: a busy neighbour
    profile = make_profile(steps(durations))
    assert [o["global_step"] for o in profile["steps"]["summary"]["outliers"]] == [18]
    verdict = by_rule(profile, "StepOutlier.n_outliers=0")["StepOutlier"]
    assert verdict["status"] == "ok" and "0 of 40 steps" in verdict["evidence"]
    assert (
        by_rule(profile, "StepOutlier.median_multiple=2,StepOutlier.n_outliers=0")["StepOutlier"]["status"] == "fired"
    )


def test_step_outlier_on_a_slow_read_points_at_the_data():
    rows = steps([0.1] * 30)
    rows[12].update(data_seconds=0.9, step_seconds=0.99)
    verdict = by_rule(make_profile(rows), "StepOutlier.n_outliers=0")["StepOutlier"]
    assert verdict["status"] == "fired" and verdict["step"] == 13
    assert "waiting for data" in verdict["recommendation"] and "FastFile" in verdict["recommendation"]


# ---------------------------------------------------------------- GPUMemoryIncrease


def memory_records(allocated: list[float]) -> list[dict[str, float]]:
    return [
        {"global_step": 10 * (i + 1), "allocated_bytes": a, "reserved_bytes": a * 1.2, "max_allocated_bytes": a}
        for i, a in enumerate(allocated)
    ]


def test_gpu_memory_increase_fires_on_a_leak_and_not_on_a_small_step_up():
    samples = gpu_samples([90.0] * 20)  # a 16 GB GPU
    leak = memory_records([2 * GB + i * 0.1 * GB for i in range(40)])  # +4 GB over the run: +25 points
    verdict = by_rule(gpu_profile(healthy_steps(), samples, gpu_memory=leak))["GPUMemoryIncrease"]
    assert verdict["status"] == "fired"
    assert "of the GPU's 16.00 GB" in verdict["evidence"]
    assert "--batch-size" in verdict["recommendation"] and "loss.item()" in verdict["recommendation"]
    assert verdict["step"] is not None and 10 < verdict["step"] <= 400
    # the backbone unfreezes half-way: +0.3 GB of gradients and optimizer state, 2 points of 16 GB
    unfreeze = memory_records([2 * GB] * 20 + [2.3 * GB] * 20)
    steady = by_rule(gpu_profile(healthy_steps(), samples, gpu_memory=unfreeze))["GPUMemoryIncrease"]
    assert steady["status"] == "ok" and "+1.9 points" in steady["evidence"]


def test_gpu_memory_increase_is_not_applicable_on_the_cpu_or_with_few_records():
    assert by_rule(make_profile(healthy_steps()))["GPUMemoryIncrease"]["status"] == "not_applicable"
    few = gpu_profile(healthy_steps(), gpu_samples([90.0] * 20), gpu_memory=memory_records([GB, 2 * GB, 3 * GB]))
    verdict = by_rule(few)["GPUMemoryIncrease"]
    assert verdict["status"] == "not_applicable" and "not enough data" in verdict["evidence"]


# ---------------------------------------------------------------- MaxInitializationTime


def test_max_initialization_time_fires_past_twenty_minutes():
    slow = by_rule(make_profile(healthy_steps(), init_seconds=25 * 60.0))["MaxInitializationTime"]
    assert slow["status"] == "fired" and "25.0 min" in slow["evidence"]
    assert "--verify-images false" in slow["recommendation"]
    assert by_rule(make_profile(healthy_steps(), init_seconds=90.0))["MaxInitializationTime"]["status"] == "ok"
    strict = by_rule(make_profile(healthy_steps(), init_seconds=90.0), "MaxInitializationTime.threshold=1")
    assert strict["MaxInitializationTime"]["status"] == "fired"


# ---------------------------------------------------------------- sparse documents


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"device": "cuda", "gpu_count": 1},
        {"steps": {"summary": {"steps": 0}, "series": []}, "system": {"interval": 1.0, "samples": []}},
        make_profile(steps([0.1]), cpu_samples(1)),
        make_profile(steps([0.1, 0.1]), [], device="cuda", gpu_count=1, init_seconds=None),
        {"steps": {"summary": step_timing.summarise(steps([0.1] * 3))}},  # a summary without its series
    ],
    ids=["empty", "cuda-nothing-yet", "zero-steps", "one-step", "gpu-no-samples", "summary-only"],
)
def test_sparse_profiles_give_a_verdict_per_rule_without_firing_or_failing(document):
    verdicts = profile_rules.evaluate(document)
    assert len(verdicts) == len(profile_rules.CATALOGUE)
    assert all(v["status"] in ("ok", "not_applicable") for v in verdicts), verdicts
    assert not [v for v in verdicts if "rule error" in v["evidence"]]
    assert all(
        "not enough data" in v["evidence"] or "no GPU" in v["evidence"] or "not measured" in v["evidence"]
        for v in verdicts
        if v["status"] == "not_applicable"
    )


# ---------------------------------------------------------------- the real parts


def run_steps(timer: step_timing.StepTimer, count: int, data_wait: float, compute: float) -> None:
    """Steps whose data part sleeps (a slow __getitem__) and whose compute part keeps a core busy."""
    waited = time.perf_counter()
    for index in range(count):
        time.sleep(data_wait)
        computing = time.perf_counter()
        total = 0
        while time.perf_counter() - computing < compute:
            total += sum(i * i for i in range(1000))
        finished = time.perf_counter()
        info = SimpleNamespace(
            epoch=index // 4 + 1,
            step=index % 4,
            global_step=index + 1,
            batch_size=8,
            data_seconds=computing - waited,
            compute_seconds=finished - computing,
            forward_backward_seconds=(finished - computing) * 0.8,
            optimizer_seconds=(finished - computing) * 0.2,
        )
        timer.on_step_end(None, info)
        waited = time.perf_counter()


def measured_profile(data_wait: float) -> dict[str, Any]:
    timer = step_timing.StepTimer()
    with system_monitor.SystemSampler(interval=0.1) as sampler:
        run_steps(timer, 12, data_wait=data_wait, compute=0.03)
    return {
        "device": "cpu",
        "gpu_count": 0,
        "cpu_count": os.cpu_count(),
        "num_workers": 0,
        "batch_size": 8,
        "world_size": 1,
        "init_seconds": 0.1,
        "system": {"interval": sampler.interval, "samples": list(sampler.samples)},
        "steps": {"summary": timer.summary(), "series": timer.steps},
        "gpu_memory": [],
    }


def test_a_real_sampler_and_step_timer_with_a_sleeping_data_part_fire_dataloader():
    slow = by_rule(measured_profile(data_wait=0.06))
    assert slow["Dataloader"]["status"] == "fired", slow["Dataloader"]
    assert f"0 loader workers on {os.cpu_count()} cores" in slow["Dataloader"]["recommendation"]
    assert "--num-workers" in slow["Dataloader"]["recommendation"]
    assert slow["Dataloader"]["step"] in range(1, 13)
    assert all(slow[name]["status"] == "not_applicable" for name in GPU_RULES)
    quick = by_rule(measured_profile(data_wait=0.0))
    assert quick["Dataloader"]["status"] == "ok", quick["Dataloader"]
