"""The run report: the training/report package's report.html and terminal summary, and ``breedfilter report``
on a dir, a train.py run dir, and a SageMaker output.tar.gz in S3 (moto), plus a screenshot in headless Chromium.

The documents are built here as debugger.py and profiler.py write them (the issue 6 contract), with fired, ok and
not-applicable verdicts, a layer named ``<script>x</script>``, and GPU and CPU-only variants.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageStat

import decision_fit
import open_set
import report
import train
from breedfilter import cli
from observability import step_timing
from observability.rule_spec import verdict
from tests.image_datasets import make_dataset
from tests.support import quick_args

LABELS = ["Beagle", "Siberian_Husky", "Toy_Poodle"]
EVIL = "<script>x</script>"
LOSS_COLOUR = (0x0B, 0x4F, 0x8A)  # report/curves.py's moving-average line in the first plot
FIRED_BADGE = (0xC6, 0x28, 0x28)
PERFETTO = "https://ui.perfetto.dev"
BUCKET = "sagemaker-outputs"
JOB = "breedfilter-2031-01-02-03-04-05-678"
TRAINING = Path(__file__).resolve().parents[2] / "training"  # where python -m report runs


# --- documents as the contract describes them --------------------------------------------------------------------


def debugger_rules() -> list[dict[str, Any]]:
    return [
        verdict(
            "loss_not_decreasing",
            "debugger",
            "ok",
            "loss fell from 1.10 to 0.21 over 400 steps",
            "raise --lr if the loss plateaus early",
            {"min_delta": 0.0},
            action="log",
        ),
        verdict(
            "overfit",
            "debugger",
            "fired",
            "valid loss rose 3 epochs in a row while train loss fell (0.31 -> 0.12)",
            "stop earlier with --early-stopping-patience 2 or add --augment strong",
            {"patience": 3},
            action="stop",
            step=420,
            epoch=4,
        ),
        verdict(
            "vanishing_gradient",
            "debugger",
            "fired",
            "gradient norm of <script>x</script> is 3e-09 < 1e-07 & falling",
            "try --head-init default and a larger --lr for the head",
            {"threshold": 1e-7},
            action="log",
            step=300,
            epoch=3,
            tensor=EVIL,
            count=4,
        ),
        verdict(
            "exploding_tensor",
            "debugger",
            "ok",
            "largest gradient norm 3.2 at step 40, below 1e+20",
            "keep --grad-clip 1.0",
            {"threshold": 1e20},
            action="log",
        ),
        verdict(
            "dead_relu",
            "debugger",
            "not_applicable",
            "the model has no ReLU-family activation (SiLU only)",
            "nothing to do",
            {"threshold": 0.5},
            action="log",
        ),
        verdict(
            "class_imbalance",
            "debugger",
            "ok",
            "most/fewest seen per class 1.00 (limit 10)",
            "resample the training split if this grows",
            {"ratio": 10.0},
            action="log",
        ),
    ]


def profiler_rules(gpu: bool) -> list[dict[str, Any]]:
    rules = [
        verdict(
            "dataloader",
            "profiler",
            "fired",
            "data wait is 41.0% of step time with 2 workers on 8 cores",
            "raise --num-workers to 6",
            {"max_data_share": 0.2},
            action="log",
        ),
        verdict(
            "cpu_bottleneck",
            "profiler",
            "ok",
            "CPU mean 38%, below 90%",
            "nothing to do",
            {"threshold": 90.0},
            action="log",
        ),
        verdict(
            "io_bottleneck",
            "profiler",
            "ok",
            "I/O wait mean 1.2%, below 20%",
            "nothing to do",
            {"threshold": 20.0},
            action="log",
        ),
        verdict(
            "step_outlier",
            "profiler",
            "fired",
            "3 steps slower than median + 5 MAD (max 1.9 s at step 250)",
            "look for checkpointing or data stalls at those steps",
            {"mads": 5.0},
            action="log",
            step=250,
            count=3,
        ),
    ]
    if gpu:
        rules.append(
            verdict(
                "low_gpu_utilization",
                "profiler",
                "fired",
                "GPU 0 utilisation p50 31% below 70%",
                "raise --batch-size to 64 or --num-workers",
                {"threshold": 70.0},
                action="log",
            )
        )
    else:
        rules.append(
            verdict(
                "low_gpu_utilization",
                "profiler",
                "not_applicable",
                "no GPU in this run",
                "train on a GPU instance (ml.g5.xlarge)",
                {"threshold": 70.0},
                action="log",
            )
        )
    return rules


def history(epochs: int = 4) -> list[dict[str, Any]]:
    rows, best = [], 0.0
    for epoch in range(1, epochs + 1):
        valid = 0.7 + 0.06 * min(epoch, 3)
        best = max(best, valid)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 1.0 / epoch,
                "train_accuracy": 0.6 + 0.08 * epoch,
                "valid_loss": 0.5 + 0.05 * (epoch - 3) ** 2,
                "valid_accuracy": valid,
                "lr": 0.01 / epoch,
                "backbone_trainable": epoch > 1,
                "epoch_seconds": 60.0 + epoch,
                "best_valid_accuracy": best,
            }
        )
    return rows


def metrics_doc(gpu: bool, labels: list[str] = LABELS) -> dict[str, Any]:
    rows = history()
    return {
        "model": "timm/tf_efficientnet_lite0",
        "labels": labels,
        "counts": {split: {label: n for label in labels} for split, n in (("train", 136), ("valid", 29), ("test", 30))},
        "history": rows,
        "best_epoch": 3,
        "best_valid_accuracy": rows[2]["valid_accuracy"],
        "best_valid_loss": rows[2]["valid_loss"],
        "stop_reason": "stopped by rule overfit: valid loss rose 3 epochs in a row",
        "test": {
            "loss": 0.41,
            "accuracy": 0.8765,
            "count": 30 * len(labels),
            "per_class_accuracy": {},
            "confusion": [[30 if i == j else 0 for j in labels] for i in labels],
        },
        "wall_seconds": 312.5,
        "hyperparameters": {"epochs": 10, "batch_size": 32, "lr": 0.01, "num_workers": 2, "model_dir": "/opt/ml/model"},
        "model_version": "20310102-abcdef",
        "environment": {
            "host": "algo-1",
            "job_name": JOB,
            "instance_type": "ml.g5.xlarge" if gpu else "ml.m5.xlarge",
            "device": "cuda" if gpu else "cpu",
            "torch": "2.14.0",
            "python": "3.12.3",
            "world_size": 1,
        },
    }


def debugger_doc(steps: int, labels: list[str] = LABELS, layer_count: int = 10) -> dict[str, Any]:
    rng = random.Random(1)
    interval = max(1, steps // 60)
    sampled = [1, *range(interval, steps + 1, interval)]
    layers = {}
    names = [f"blocks.{i}.conv_pw.weight" for i in range(layer_count)] + [EVIL, "classifier.weight"]
    for index, name in enumerate(names):
        scale = 10 ** (-index / 3)
        decay = 3.0 if name == EVIL else 0.3
        layers[name] = {
            "grad_norm": [[s, scale * math.exp(-decay * s / steps * 6) * (1 + 0.2 * rng.random())] for s in sampled],
            "weight_norm": [[s, 5.0 + index + s / steps] for s in sampled],
            "update_ratio": [[s, 1e-3 * scale * (1 + rng.random())] for s in sampled[1:]],
            "grad_mean_abs": [[s, scale * 1e-3] for s in sampled],
        }
    activations = {
        f"blocks.{i}.act": {
            "kind": "ReLU" if i % 2 else "SiLU",
            "zero_fraction": [[s, min(1.0, 0.3 + 0.1 * i + 0.1 * s / steps)] for s in sampled],
            "dead_fraction": [[s, min(1.0, 0.02 * i * s / steps)] for s in sampled] if i % 2 else [],
            "std": [[s, 1.0] for s in sampled],
            "saturated_fraction": [],
        }
        for i in range(6)
    }
    seen = [136 * 4 + 10 * i for i in range(len(labels))]
    rules = debugger_rules()
    return {
        "interval": interval,
        "collections": ["losses", "gradients", "weights", "activations", "classes"],
        "labels": labels,
        "rules": rules,
        "stopped_by": rules[1],
        "losses": [[s, 1.2 * math.exp(-3 * s / steps) + 0.1 * rng.random()] for s in range(1, steps + 1)],
        "epochs": history(),
        "classes": {
            "labels": labels,
            "seen": seen,
            "wrong": [n // (5 + i) for i, n in enumerate(seen)],
            "per_epoch": [{"epoch": e, "seen": [136] * len(labels), "wrong": [10] * len(labels)} for e in range(1, 5)],
        },
        "layers": layers,
        "activations": activations,
        "nonfinite": {"first_step": None, "tensors": []},
        "records": len(sampled),
        "seconds": 4.2,
    }


def profiler_doc(gpu: bool, steps: int, samples: int, cores: int = 8) -> dict[str, Any]:
    rng = random.Random(2)
    series = []
    per_epoch = max(1, steps // 4)
    for index in range(steps):
        data = 0.040 + 0.01 * rng.random()
        series.append(
            {
                "epoch": index // per_epoch + 1,
                "step": index % per_epoch,
                "global_step": index + 1,
                "batch_size": 32,
                "data_seconds": data,
                "forward_backward_seconds": 0.05 + 0.005 * rng.random(),
                "optimizer_seconds": 0.008,
                "step_seconds": 0.0,
            }
        )
    for slow in (250, steps // 2 + 7, steps - 3):
        series[slow - 1]["data_seconds"] = 1.8
    for row in series:
        row["step_seconds"] = row["data_seconds"] + row["forward_backward_seconds"] + row["optimizer_seconds"]
    system = []
    for index in range(samples):
        busy = 35 + 30 * math.sin(index / 15) ** 2
        system.append(
            {
                "t": float(index),
                "cpu_percent": [min(100.0, busy + 8 * c + 5 * rng.random()) for c in range(cores)],
                "cpu_iowait_percent": 1.0 + rng.random(),
                "memory_percent": 40 + 10 * index / samples,
                "memory_used_bytes": 12e9,
                "process_rss_bytes": 2.5e9 + 1e9 * index / samples,
                "disk_read_bytes_per_s": 30e6 * rng.random(),
                "disk_write_bytes_per_s": 2e6 * rng.random(),
                "net_recv_bytes_per_s": 1e6 * rng.random(),
                "net_sent_bytes_per_s": 2e5 * rng.random(),
                "gpu": [
                    {
                        "utilization_percent": 30 + 40 * rng.random(),
                        "memory_used_bytes": 9e9 + 1e7 * index,
                        "memory_total_bytes": 24e9,
                    }
                ]
                if gpu
                else [],
            }
        )
    operators = [
        {
            "name": name,
            "calls": 400 * (i + 1),
            "cpu_total_ms": 900.0 / (i + 1),
            "self_cpu_ms": 500.0 / (i + 1),
            "device_total_ms": 800.0 / (i + 1) if gpu else 0.0,
            "self_device_ms": 700.0 / (i + 1) if gpu else 0.0,
            "self_share": 0.4 / (i + 1),
        }
        for i, name in enumerate(
            ["aten::convolution", "aten::addmm", "aten::copy_", "aten::batch_norm"]
            + [f"aten::op_{i}" for i in range(16)]
        )
    ]
    return {
        "device": "cuda" if gpu else "cpu",
        "gpu_count": 1 if gpu else 0,
        "cpu_count": cores,
        "num_workers": 2,
        "batch_size": 32,
        "world_size": 1,
        "init_seconds": 14.2,
        "system": {"interval": 1.0, "samples": system},
        "steps": {"summary": step_timing.summarise(series), "series": series},
        "gpu_memory": [
            {
                "global_step": s,
                "allocated_bytes": 2e9 + 1e5 * s,
                "reserved_bytes": 4e9,
                "max_allocated_bytes": 3e9 + 1e5 * s,
            }
            for s in range(1, steps + 1, 10)
        ]
        if gpu
        else [],
        "torch_profiler": {"steps": [20, 30], "trace": "profiler_trace.json.gz", "top_operators": operators},
        "rules": profiler_rules(gpu),
        "seconds": 1.7,
    }


def write_run(
    directory: Path,
    gpu: bool = True,
    files: tuple[str, ...] = ("metrics.json", "debugger.json", "profiler.json"),
    steps: int = 600,
    samples: int = 300,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    documents = {
        "metrics.json": lambda: metrics_doc(gpu),
        "debugger.json": lambda: debugger_doc(steps),
        "profiler.json": lambda: profiler_doc(gpu, steps, samples),
    }
    for name in files:
        (directory / name).write_text(json.dumps(documents[name]()), encoding="utf-8")
    if "profiler.json" in files:
        (directory / "profiler_trace.json.gz").write_bytes(b"\x1f\x8b")
    return directory


def all_rules(gpu: bool) -> list[dict[str, Any]]:
    return debugger_rules() + profiler_rules(gpu)


def embedded_pngs(page: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(data)))
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


# --- the page ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """report.html of the GPU run (True) and of the CPU-only run (False), built once for the tests that only read."""
    root = tmp_path_factory.mktemp("built")
    return {gpu: report.write_report(write_run(root / ("gpu" if gpu else "cpu"), gpu=gpu)) for gpu in (True, False)}


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
def test_the_report_is_one_self_contained_page(built: dict[bool, Path], gpu: bool) -> None:
    path = built[gpu]

    assert path.name == "report.html" and (path.parent / "metrics.json").is_file()
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "url(" not in page
    for target in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page):
        assert target.startswith(("data:image/png;base64,", "#")) or target == PERFETTO, target
    assert not re.search(r"(?:src|href)\s*=\s*'", page)
    images = embedded_pngs(page)
    # loss, accuracy, gradient norms, update ratios, activations, classes, CPU, memory+I/O, step time (+ GPU twice)
    assert len(images) == (11 if gpu else 9)
    for image in images:
        image.load()
        assert image.format == "PNG" and 800 <= image.width <= 1000 and 200 <= image.height <= 450
    assert "could not" not in page
    assert ("GPU utilisation and memory" in page) == gpu
    assert ("none (device cpu)" in page) == (not gpu)


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
def test_every_rule_is_listed_with_its_recommendation_fired_first(built: dict[bool, Path], gpu: bool) -> None:
    page = built[gpu].read_text(encoding="utf-8")
    table = page[page.index('<table class="rules">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r'<tr class="row-(\w+)">.*?<b>(.*?)</b>', table)
    rules = all_rules(gpu)
    assert sorted(name for _, name in rows) == sorted(r["rule"] for r in rules)
    statuses = [status for status, _ in rows]
    assert rows[0] == ("fired", "overfit")  # it stopped training
    assert statuses == sorted(statuses, key=lambda s: report.STATUS_ORDER[s])
    for rule in rules:
        assert report.esc(rule["recommendation"]) in table
        assert report.esc(rule["evidence"]) in table
    for text in ("fired", "ok", "not applicable"):
        assert f"{text}</span>" in table
    banner = page[: page.index("<nav>")]
    assert "Training was stopped by rule overfit" in banner and "at step 420, epoch 4" in banner
    fired = [r["rule"] for r in rules if r["status"] == "fired"]
    assert f"{len(fired)} rules fired" in banner and all(f"<b>{name}</b>" in banner for name in fired)


def test_names_and_evidence_from_the_json_are_escaped(built: dict[bool, Path]) -> None:
    page = built[True].read_text(encoding="utf-8")
    assert EVIL not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "3e-09 &lt; 1e-07 &amp; falling" in page


def test_the_sections_say_what_they_show(built: dict[bool, Path]) -> None:
    page = built[True].read_text(encoding="utf-8")
    summary = page[page.index('id="summary"') : page.index('id="rules"')]
    for text in (
        "timm/tf_efficientnet_lite0",
        "4 / 10",
        "88.00%",
        "87.65%",
        "5 min 12 s",
        JOB,
        "ml.g5.xlarge",
        "cuda",
        "2.14.0",
        "stopped by rule overfit",
        "Beagle",
        "136",
    ):
        assert text in summary, text
    debugger = page[page.index('id="debugger"') : page.index('id="system"')]
    assert "Most often wrong while training (3 of 3 classes)" in debugger
    assert debugger.index("<td>Beagle</td>") < debugger.index("<td>Siberian_Husky</td>")  # 19.9% wrong, then 16.6%
    steps = page[page.index('id="steps"') : page.index('id="data"')]
    assert "data " in steps and "forward+backward" in steps and "optimizer" in steps and "images/s" in steps
    assert 'class="sharebar"' in steps and "Slowest outlier steps (3 of 3)" in steps
    data = page[page.index('id="data"') : page.index('id="operators"')]
    assert "<b>2</b> per process" in data and "<b>8</b> cores" in data
    assert "raise --num-workers to 6" in data and "cpu_bottleneck" in data and "io_bottleneck" in data
    assert "step_outlier" not in data
    operators = page[page.index('id="operators"') :]
    assert operators.count("<code>aten::") == 20
    assert "profiler_trace.json.gz" in operators and PERFETTO in operators and "not found" not in operators


def test_missing_files_are_named_with_how_to_get_them(tmp_path: Path) -> None:
    only_metrics = write_run(tmp_path / "a" / "output", files=("metrics.json",))
    page = report.write_report(only_metrics).read_text(encoding="utf-8")
    assert "debugger off (no debugger.json): run train.py with --debugger on" in page
    assert "profiler off (no profiler.json): run train.py with --profiler on" in page
    assert len(embedded_pngs(page)) == 2  # the curves from metrics.json's history still show
    assert "could not" not in page

    only_profiler = write_run(tmp_path / "b", files=("profiler.json",))
    page = report.write_report(only_profiler).read_text(encoding="utf-8")
    assert "no metrics.json: the run did not finish" in page
    assert "<h1>Training run report: b</h1>" in page  # no job name without metrics.json: the run's dir
    assert "could not" not in page

    with pytest.raises(report.NoRunFiles, match=r"none of metrics\.json"):
        report.write_report(tmp_path)


def test_an_unreadable_file_is_explained_and_the_rest_is_shown(tmp_path: Path) -> None:
    out = write_run(tmp_path / "output")
    text = (out / "profiler.json").read_text()
    (out / "profiler.json").write_text(text[: len(text) // 2])
    page = report.write_report(out).read_text(encoding="utf-8")
    assert "profiler.json unreadable" in page
    assert "overfit" in page and "dataloader" not in page


def test_summary_lines(tmp_path: Path) -> None:
    lines = report.summary_lines(write_run(tmp_path / "output"))
    text = "\n".join(lines)
    assert lines[0].startswith(f"job: {JOB} (model timm/tf_efficientnet_lite0) on algo-1, ml.g5.xlarge, cuda")
    assert "best epoch 3: valid accuracy 88.00%, test accuracy 87.65% (90 images); 4/10 epochs" in text
    assert "rules: 5 fired, 5 ok, 1 not applicable" in text
    assert (
        "  FIRED overfit (debugger, step 420, epoch 4): valid loss rose 3 epochs in a row while train loss fell "
        "(0.31 -> 0.12) -> stop earlier with --early-stopping-patience 2 or add --augment strong"
    ) in lines
    assert f"  FIRED vanishing_gradient (debugger, step 300, epoch 3, {EVIL}):" in text
    assert "stopped by rule overfit at step 420, epoch 4" in lines
    step_line = next(line for line in lines if line.startswith("step time: median "))
    assert "data " in step_line and "forward+backward " in step_line and "optimizer " in step_line
    assert "3 outlier steps" in step_line
    assert "top operators: aten::convolution 40.0%, aten::addmm 20.0%, aten::copy_ 13.3%" in lines
    assert not any("off" in line for line in lines)

    lines = report.summary_lines(write_run(tmp_path / "partial", files=("metrics.json",)))
    assert "debugger off (no debugger.json): run train.py with --debugger on" in lines
    assert not any(line.startswith(("rules:", "step time:")) for line in lines)


def test_a_long_run_with_many_classes_and_layers_stays_small(tmp_path: Path) -> None:
    out = tmp_path / "output"
    labels = [f"{i:03d}.breed_{i}" for i in range(120)]
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps(metrics_doc(True, labels)))
    (out / "debugger.json").write_text(json.dumps(debugger_doc(5000, labels, layer_count=300)))
    (out / "profiler.json").write_text(json.dumps(profiler_doc(True, 5000, 36_000, cores=64)))

    page = report.write_report(out).read_text(encoding="utf-8")

    assert len(page) < 3_000_000
    assert len(embedded_pngs(page)) == 11 and "could not" not in page
    assert "<details><summary>per class (120 classes)</summary>" in page
    assert "The 8 of 302 layers whose grad norm varied most" in page
    assert "Most often wrong while training (10 of 120 classes)" in page


def test_python_m_report_writes_the_page(tmp_path: Path) -> None:
    out = write_run(tmp_path / "output", gpu=False)
    done = subprocess.run(
        [sys.executable, "-m", "report", str(out)], cwd=TRAINING, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "report.html")
    assert (out / "report.html").is_file()

    done = subprocess.run(
        [sys.executable, "-m", "report", str(tmp_path)], cwd=TRAINING, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and "none of metrics.json" in done.stderr


def test_a_real_run_that_a_rule_stopped_gets_a_full_report(tmp_path: Path) -> None:
    """train.py writes the report itself; a learning rate of 1e12 makes the loss NaN and exploding_tensor stops it."""
    data = make_dataset(tmp_path / "data", {"train": 24, "valid": 4}, size=40)
    flags = ("--epochs", "3", "--optimizer", "sgd", "--lr", "1e12", "--momentum", "0", "--debugger-interval", "5")
    # no capsys here: train.py's log handler would keep it
    with pytest.raises(train.trainer_module.TrainingDiverged):  # a NaN loss: no model, the report all the same
        train.main(quick_args(data, tmp_path / "run", *flags, "--report", "on"))
    out = tmp_path / "run" / "output"
    page = (out / "report.html").read_text(encoding="utf-8")
    debugger = json.loads((out / "debugger.json").read_text())
    profiler = json.loads((out / "profiler.json").read_text())

    assert "could not" not in page
    assert "Training was stopped by rule exploding_tensor" in page and "NaN/Inf first seen at step" in page
    for rule in debugger["rules"] + profiler["rules"]:
        assert f"<b>{report.esc(rule['rule'])}</b>" in page and report.esc(rule["recommendation"]) in page
    # 2 curves, gradient norms, update ratios, activations, classes, step time; CPU and memory when the sampler
    # took a sample before the rule stopped the run (it samples once a second)
    assert len(embedded_pngs(page)) == 7 + (2 if profiler["system"]["samples"] else 0)

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["report", str(tmp_path / "run")])
    stdout = printed.getvalue()
    assert code == 0 and "FIRED exploding_tensor (debugger, step " in stdout
    assert stdout.splitlines()[-1] == f"report: {out / 'report.html'}"


# --- the decisions section: open_set.json ------------------------------------------------------------------------


def reliability_bins(overconfidence: float, count: int = 400) -> list[dict[str, Any]]:
    """15 equal-width bins as open_set.reliability writes them; the low ones are empty (null confidence/accuracy)."""
    rows = []
    for i in range(15):
        lo, hi = i / 15, (i + 1) / 15
        n = 0 if hi <= 1 / 3 else round(count * 2 ** (i - 14))
        confidence = (lo + hi) / 2 if n else None
        accuracy = max(0.0, confidence - overconfidence * confidence * (1 - confidence)) if n else None
        rows.append(
            {"lo": round(lo, 4), "hi": round(hi, 4), "count": n, "confidence": confidence, "accuracy": accuracy}
        )
    return rows


def open_set_doc(method: str | None = "knn", met: bool = True, unknowns: bool = True) -> dict[str, Any]:
    """open_set.json as the issue 13 contract describes it (decision_fit.py writes it after training)."""
    rng = random.Random(13)
    curve = [
        {
            "threshold": round(t, 4),
            "coverage": round(1.0 - 0.7 * (t - 0.34) / 0.66, 4),
            "precision": round((0.9 + 0.1 * (t - 0.34) / 0.66) * (1.0 if met else 0.97), 4),
        }
        for t in (0.34 + 0.66 * i / 199 for i in range(200))
    ]
    curve.reverse()  # open_set.precision_curve goes from the highest threshold down
    valid_scores = [round(rng.gauss(3.0, 0.6), 6) for _ in range(300)] if method else None
    unknown_scores = [round(rng.gauss(6.0, 1.0), 6) for _ in range(120)] if method and unknowns else None
    return {
        "method": method,
        "calibration": {
            "temperature": 1.7,
            "ece_before": 0.061,
            "ece_after": 0.012,
            "nll_before": 0.31,
            "nll_after": 0.22,
            "reliability": {"before": reliability_bins(0.4), "after": reliability_bins(0.02)},
        },
        "thresholds": {
            "target_precision": 0.99,
            "known_keep": 0.95 if method else None,
            "probability": 0.83 if met else 0.97,
            "unknown": 4.2 if method else None,
            "expected": {
                "coverage": 0.91 if met else 0.35,
                "precision": 0.993 if met else 0.9712,
                "known_kept": 0.95 if method else 1.0,
            },
            "met": met,
        },
        "curve": curve,
        "unknown_scores": {"valid": valid_scores, "unknowns": unknown_scores},
        "unknowns": (
            {"count": 120, "sorted_share": 0.004, "auroc": 0.99, "source": "/data/<b>others</b>"}
            if method and unknowns
            else None
        ),
    }


def decisions_run(directory: Path, document: dict[str, Any] | str | None) -> Path:
    """A run with metrics.json (2 plots of its own) and open_set.json (a dict, raw text, or none)."""
    out = write_run(directory, gpu=False, files=("metrics.json",))
    if isinstance(document, dict):
        (out / "open_set.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    elif document is not None:
        (out / "open_set.json").write_text(document, encoding="utf-8")
    return out


def decisions_of(page: str) -> str:
    return page[page.index('<section id="decisions">') : page.index('<section id="curves">')]


def test_the_decisions_section_shows_calibration_thresholds_and_unknown_images(tmp_path: Path) -> None:
    page = report.write_report(decisions_run(tmp_path / "output", open_set_doc())).read_text(encoding="utf-8")

    assert "could not" not in page
    nav = page[page.index("<nav>") : page.index("</nav>")]
    assert nav.index('href="#rules"') < nav.index('<a href="#decisions">Decisions</a>') < nav.index('href="#curves"')
    assert page.index('<section id="rules">') < page.index('<section id="decisions">')
    section = decisions_of(page)
    assert "<h2>Decisions: calibration, thresholds and unknown images</h2>" in section
    alts = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]*)">', section)
    assert alts == [
        "reliability diagram before and after calibration",
        "precision and coverage against the probability threshold",
        "unknown_score histograms",
    ]
    images = embedded_pngs(section)
    assert len(images) == 3 and len(embedded_pngs(page)) == 5  # and the two curves of metrics.json
    for image in images:
        image.load()
        assert image.format == "PNG" and 800 <= image.width <= 1000 and 200 <= image.height <= 450
        assert len(set(image.convert("RGB").get_flattened_data())) > 50  # drawn, not blank
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", section)
    reliability, thresholds, scores = captions
    assert "Temperature <b>1.7</b>" in reliability and "<b>0.061</b> before → <b>0.012</b> after" in reliability
    assert "NLL 0.31 → 0.22" in reliability and "15 equal-width confidence bins" in reliability
    assert "Chosen threshold <b>0.83</b>: expected coverage <b>91.0%</b> at precision <b>99.30%</b>" in thresholds
    assert "the target precision 99% was met on validation" in thresholds
    assert "<b>knn</b>" in scores and "threshold <b>4.2</b>" in scores and "(asked for 95%)" in scores
    assert "AUROC <b>0.99</b>" in scores and "<b>0.40%</b> of them would be SORTED" in scores
    assert "Held-out unknowns (120 images)" in scores and "of the held-out unknowns" in scores
    table = section[section.index('<table class="kv">') : section.index("</table>")]
    for text in ("<b>knn</b>", "temperature <b>1.7</b>", "<b>0.83</b> for target precision 99%: reached on validation"):
        assert text in table, text
    assert "<code>unknown_score</code> above <b>4.2</b>" in table
    assert "/data/&lt;b&gt;others&lt;/b&gt;" in table and "<b>others</b>" not in page
    assert 'class="error"' not in section


def test_a_target_precision_not_met_and_no_detector_are_said_plainly(tmp_path: Path) -> None:
    document = open_set_doc(method=None, met=False)
    page = report.write_report(decisions_run(tmp_path / "output", document)).read_text(encoding="utf-8")

    assert "could not" not in page
    section = decisions_of(page)
    assert len(embedded_pngs(section)) == 2  # reliability, precision/coverage; no scores to draw
    assert '<div class="error"><b>Target precision 99% not met:</b> no threshold reaches the target' in section
    assert "the target precision 99% was not met: no threshold reaches it on validation" in section
    assert "<b>NOT reached on validation</b>" in section
    assert "no unknown-image detector in this model" in section
    assert "<th>unknown threshold</th>" not in section and "held-out unknown" not in section

    lines = report.summary_lines(tmp_path / "output")
    assert (
        "decisions: threshold 0.97 does NOT reach 99% precision on validation (at precision 97.12%, coverage 35.0%), "
        "ECE 0.061 -> 0.012, no unknown-image detector"
    ) in lines


def test_a_detector_without_held_out_unknowns_and_nulls_still_draw(tmp_path: Path) -> None:
    document = open_set_doc(unknowns=False)
    document["calibration"]["ece_before"] = None
    document["calibration"]["nll_after"] = None
    document["thresholds"]["expected"]["precision"] = None
    page = report.write_report(decisions_run(tmp_path / "output", document)).read_text(encoding="utf-8")

    assert "could not" not in page
    section = decisions_of(page)
    assert len(embedded_pngs(section)) == 3
    assert "<b>–</b> before → <b>0.012</b> after" in section
    assert "No held-out unknown images were measured (train.py --unknowns DIR" in section
    assert "none measured" in section and "AUROC" not in section


def test_the_decisions_of_a_real_fit_are_drawn(tmp_path: Path) -> None:
    """open_set.json as decision_fit.py writes it from open_set.fit: the report keeps up with the real writer."""
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 0.8

    def outputs(count: int, known: bool) -> open_set.Outputs:
        targets = torch.randint(0, 3, (count,))
        features = (centres[targets] * 3 if known else torch.randn(count, 16) * 3) + torch.randn(count, 16) * 3
        return open_set.Outputs(features @ centres.T, features, targets if known else torch.full((count,), -1))

    fitted = open_set.fit(
        outputs(300, True),
        outputs(200, True),
        method="knn",
        target_precision=0.99,
        known_keep=0.95,
        unknowns=outputs(80, False),
    )
    document = decision_fit._json_safe(fitted.summary)
    document["unknowns"]["source"] = "unknowns/"
    page = report.write_report(decisions_run(tmp_path / "output", document)).read_text(encoding="utf-8")

    assert "could not" not in page
    section = decisions_of(page)
    assert len(embedded_pngs(section)) == 3
    calibration, thresholds = document["calibration"], document["thresholds"]
    assert f"Temperature <b>{report.fmt_number(calibration['temperature'])}</b>" in section
    assert f"<b>{report.fmt_number(calibration['ece_after'])}</b> after" in section
    assert f"Chosen threshold <b>{report.fmt_number(thresholds['probability'])}</b>" in section
    assert calibration["temperature"] > 1 and thresholds["met"] and 0.5 < thresholds["expected"]["coverage"] < 0.9
    assert f"AUROC <b>{report.fmt_number(document['unknowns']['auroc'])}</b>" in section
    line = next(line for line in report.summary_lines(tmp_path / "output") if line.startswith("decisions: "))
    assert f"threshold {report.fmt_number(thresholds['probability'])} " in line and "unknown detector knn" in line


def test_a_run_without_open_set_json_has_no_decisions_section(built: dict[bool, Path]) -> None:
    page = built[True].read_text(encoding="utf-8")
    assert 'id="decisions"' not in page and 'href="#decisions"' not in page and "open_set" not in page
    assert not any(line.startswith("decisions:") for line in report.summary_lines(built[True].parent))


def test_an_unreadable_open_set_json_is_explained(tmp_path: Path) -> None:
    text = json.dumps(open_set_doc())
    out = decisions_run(tmp_path / "output", text[: len(text) // 3])
    page = report.write_report(out).read_text(encoding="utf-8")
    section = decisions_of(page)
    assert "open_set.json unreadable" in section and "open_set.json unreadable" in page[: page.index("<nav>")]
    assert not embedded_pngs(section) and len(embedded_pngs(page)) == 2

    (out / "open_set.json").write_text("[1, 2]")
    assert "open_set.json is not a JSON object" in report.summary_lines(out)


def test_cli_prints_the_decisions_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = decisions_run(tmp_path / "output", open_set_doc())
    code, stdout, _ = run_cli([str(out)], capsys)
    assert code == 0
    assert (
        "decisions: threshold 0.83 for 99% precision (expected coverage 91.0%), ECE 0.061 -> 0.012, unknown "
        "detector knn; held-out unknowns: 120 images, 0.40% SORTED, AUROC 0.99"
    ) in stdout.splitlines()
    assert 'id="decisions"' in (out / "report.html").read_text(encoding="utf-8")


# --- breedfilter report ------------------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["report", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_cli_on_an_output_dir_prints_the_summary_and_the_path_last(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_run(tmp_path / "output")
    code, stdout, _ = run_cli([str(out)], capsys)
    lines = stdout.splitlines()
    assert code == 0
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert lines[:-1] == report.summary_lines(out)
    assert "<!doctype html>" in (out / "report.html").read_text()


def test_cli_finds_output_under_a_train_py_run_dir_and_keeps_an_existing_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "train"
    out = write_run(run_dir / "output")
    (out / "report.html").write_text("kept")

    code, stdout, _ = run_cli([str(run_dir)], capsys)
    assert code == 0 and stdout.splitlines()[-1] == f"report: {out / 'report.html'}"
    assert (out / "report.html").read_text() == "kept"

    code, stdout, _ = run_cli([str(run_dir), "--regenerate"], capsys)
    assert code == 0 and (out / "report.html").read_text().startswith("<!doctype html>")


def test_cli_bad_local_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([str(tmp_path / "nope")], capsys)
    assert code == 2 and err.strip() == f"error: no such directory: {tmp_path / 'nope'}"

    (tmp_path / "empty").mkdir()
    code, _, err = run_cli([str(tmp_path / "empty")], capsys)
    assert code == 2
    assert err.startswith(f"error: no metrics.json, debugger.json, profiler.json, report.html in {tmp_path / 'empty'}")
    assert len(err.strip().splitlines()) == 1

    only_html = tmp_path / "only-html"
    only_html.mkdir()
    (only_html / "report.html").write_text("<p>old</p>")
    code, _, err = run_cli([str(only_html), "--regenerate"], capsys)
    assert code == 2 and "cannot build a report" in err


@pytest.fixture
def s3(moto_s3: Any) -> Any:
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


def output_archive(directory: Path) -> bytes:
    """output.tar.gz as SageMaker makes it from OUTPUT_DATA_DIR: the files at the archive's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def test_cli_on_a_sagemaker_output_in_s3(tmp_path: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    key = f"jobs/{JOB}/output/output.tar.gz"
    job_output = write_run(tmp_path / "job-output")
    (job_output / "report.html").write_text("<!doctype html><p>written in the training container</p>")
    s3.put_object(Bucket=BUCKET, Key=key, Body=output_archive(job_output))
    s3.put_object(Bucket=BUCKET, Key=f"jobs/{JOB}/output/model.tar.gz", Body=b"not this one")
    downloads = tmp_path / "reports"

    code, stdout, _ = run_cli([f"s3://{BUCKET}/{key}", "--download-dir", str(downloads)], capsys)

    target = downloads / JOB
    assert code == 0
    assert stdout.splitlines()[-1] == f"report: {target / 'report.html'}"
    assert f"job: {JOB}" in stdout and "FIRED overfit" in stdout
    assert sorted(p.name for p in target.iterdir()) == [
        "debugger.json",
        "metrics.json",
        "profiler.json",
        "profiler_trace.json.gz",
        "report.html",
    ]

    assert "written in the training container" in (target / "report.html").read_text()  # used as it is

    code, stdout, _ = run_cli([f"s3://{BUCKET}/jobs", "--regenerate", "--download-dir", str(downloads)], capsys)
    assert code == 0 and stdout.splitlines()[-1] == f"report: {target / 'report.html'}"
    rebuilt = (target / "report.html").read_text()
    assert rebuilt.startswith("<!doctype html>") and "Training was stopped by rule overfit" in rebuilt


def test_cli_s3_prefix_with_several_outputs_names_them(
    tmp_path: Path, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    body = output_archive(write_run(tmp_path / "job-output", files=("metrics.json",)))
    for job in ("job-1", "job-10"):
        s3.put_object(Bucket=BUCKET, Key=f"jobs/{job}/output/output.tar.gz", Body=body)
    downloads = tmp_path / "reports"

    code, _, err = run_cli([f"s3://{BUCKET}/jobs/", "--download-dir", str(downloads)], capsys)
    assert code == 2
    assert f"2 job outputs under s3://{BUCKET}/jobs/; pass one of: " in err
    assert f"s3://{BUCKET}/jobs/job-1/output/output.tar.gz" in err
    assert f"s3://{BUCKET}/jobs/job-10/output/output.tar.gz" in err

    code, stdout, _ = run_cli([f"s3://{BUCKET}/jobs/job-1", "--download-dir", str(downloads)], capsys)
    assert code == 0 and stdout.splitlines()[-1] == f"report: {downloads / 'job-1' / 'report.html'}"


def test_cli_bad_s3_inputs_exit_2_with_one_line(tmp_path: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    downloads = ["--download-dir", str(tmp_path / "reports")]
    cases = {
        "s3://": "bad S3 URI",
        f"s3://{BUCKET}/jobs/none/output/output.tar.gz": f"no object s3://{BUCKET}/jobs/none/output/output.tar.gz",
        f"s3://{BUCKET}/jobs/none": f"no output/output.tar.gz under s3://{BUCKET}/jobs/none",
        "s3://no-such-bucket/jobs": "no bucket 'no-such-bucket'",
    }
    for uri, message in cases.items():
        code, _, err = run_cli([uri, *downloads], capsys)
        assert code == 2, uri
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err

    s3.put_object(Bucket=BUCKET, Key="jobs/bad/output/output.tar.gz", Body=b"not a tar")
    code, _, err = run_cli([f"s3://{BUCKET}/jobs/bad/output/output.tar.gz", *downloads], capsys)
    assert code == 2 and "is not a usable output.tar.gz" in err


def test_an_archive_escaping_its_dir_is_refused(tmp_path: Path, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("../escaped.json")
        member.size = 2
        tar.addfile(member, io.BytesIO(b"{}"))
    s3.put_object(Bucket=BUCKET, Key="jobs/evil/output/output.tar.gz", Body=buffer.getvalue())
    downloads = tmp_path / "reports"

    code, _, err = run_cli([f"s3://{BUCKET}/jobs/evil/output/output.tar.gz", "--download-dir", str(downloads)], capsys)

    assert code == 2 and "is not a usable output.tar.gz" in err
    assert not (tmp_path / "escaped.json").exists() and not (downloads / "escaped.json").exists()


@pytest.mark.usefixtures("no_credentials")
def test_cli_without_credentials_says_how_to_configure_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([f"s3://{BUCKET}/jobs/x/output/output.tar.gz"], capsys)

    assert code == 2
    assert "no AWS credentials found" in err and "aws configure" in err


# --- what a browser shows ----------------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("BREEDFILTER_REQUIRE_CHROMIUM") == "1":
        pytest.fail("install chromium (Debian: apt-get install chromium): BREEDFILTER_REQUIRE_CHROMIUM=1 needs it")
    pytest.skip("chromium is not installed (apt-get install chromium); set BREEDFILTER_REQUIRE_CHROMIUM=1 to require")


def screenshot(page: Path, png: Path, profile: Path) -> Image.Image:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1280,4000",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    return Image.open(png).convert("RGB")


def test_chromium_renders_the_report_with_its_plots(built: dict[bool, Path], tmp_path: Path) -> None:
    image = screenshot(built[True], tmp_path / "report.png", tmp_path / "chromium-profile")
    if os.environ.get("BREEDFILTER_SCREENSHOT"):
        image.save(os.environ["BREEDFILTER_SCREENSHOT"])

    assert image.size == (1280, 4000)
    small = image.resize((320, 1000))
    assert len(set(small.get_flattened_data())) > 500
    non_white = sum(1 for pixel in small.get_flattened_data() if min(pixel) < 235) / (320 * 1000)
    assert non_white > 0.1
    # The fired badges' CSS colour is on the page, and the first plot (the loss curve) was decoded and laid out:
    # its moving-average line's exact colour spans a plot-sized box that holds many colours.
    pixels = image.load()
    assert any(pixels[x, y] == FIRED_BADGE for y in range(0, 4000, 2) for x in range(0, 1280, 2))
    loss = [(x, y) for y in range(4000) for x in range(1280) if pixels[x, y] == LOSS_COLOUR]
    assert len(loss) > 100
    xs, ys = [x for x, _ in loss], [y for _, y in loss]
    box = (min(xs), min(ys), max(xs) + 1, max(ys) + 1)
    assert box[2] - box[0] > 300 and box[3] - box[1] < 320, box
    region = image.crop((box[0], max(0, box[1] - 20), box[2], min(4000, box[3] + 20)))
    assert len(set(region.get_flattened_data())) > 50
    assert max(ImageStat.Stat(region).stddev) > 20
