"""Serving throughput of a model artifact over real HTTP: our endpoint server vs the naive handler, paired.

Both serve the same artifact's weights on 127.0.0.1 in this process, and clients POST real JPEG photos to
``/invocations`` (``application/x-image``, keep-alive, one connection per client thread):

- ours: ``EndpointServer(ArtifactModel(model_dir))``, training/inference.py as the endpoint runs it (draft JPEG
  decoding, the artifact's serving precision, channels_last, and whatever batching ArtifactModel does);
- naive: what most published SageMaker dog-breed solutions serve, a ``ThreadingHTTPServer`` whose handler runs
  ``Image.open(...).convert("RGB")``, torchvision ``Resize/CenterCrop/ToTensor/Normalize`` and
  ``model(x.unsqueeze(0))`` in fp32 under ``torch.no_grad()``, one image per forward pass, softmax, top-5.

Each round measures concurrency 1, 4 and 16 for both, one right after the other (which goes first alternates
by round), so drifting load hits both alike; before each round the bare forward pass (the ceiling) is timed on
pre-transformed tensors: at the artifact's precision with channels_last at batch 1 and at the server's max
batch, and fp32 at batch 1 (the naive side's own ceiling). Every window records the load average and how many
cores other processes kept busy (/proc/stat minus this process's CPU time); a window above ``--max-other-load``
cores is printed but left out of the medians. A keep-alive ``GET /ping`` on each server first shows what HTTP
alone costs a request. Results go to bench/results/endpoint_serving.json.

    .venv/bin/python bench/endpoint_serving.py --model-dir out/bench/serving/model
    .venv/bin/python bench/endpoint_serving.py --model-dir DIR --photos ../shared/data/dogs-imagewoof10/test
    .venv/bin/python bench/endpoint_serving.py --count 16 --requests 16 --rounds 1   # smoke test: ~25 s on 2 cores

Without an artifact, ``--make-artifact`` first trains a throwaway one into ``--model-dir`` (resnet50 from
scratch, 1 epoch of 2 steps: the weights are meaningless, the network and the serving path are real; about
8 minutes on 2 cores, most of it evaluating and calibrating on the full valid and test splits):

    .venv/bin/python training/train.py --data ../shared/data/dogs-imagewoof10 --model resnet50 --weights none \\
        --epochs 1 --max-steps-per-epoch 2 --num-workers 0 --model-dir out/bench/serving/model \\
        --output-data-dir out/bench/serving/output --checkpoint-dir out/bench/serving/ckpt --tensorboard-dir none
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

import imaging  # noqa: E402
import inference  # noqa: E402
from breedfilter.twin.artifact_model import ArtifactModel  # noqa: E402
from breedfilter.twin.endpoint_server import EndpointServer  # noqa: E402

DEFAULT_MODEL_DIR = ROOT / "out" / "bench" / "serving" / "model"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dogs-imagewoof10"
CONCURRENCIES = (1, 4, 16)


# ---------------------------------------------------------------------------------------------------------------
# the naive handler


class NaiveServer:
    """The handler of most published SageMaker dog-breed solutions, on its own ThreadingHTTPServer.

    Its HTTP is EndpointServer's (http.server, HTTP/1.1 keep-alive, headers and body written separately, Nagle's
    algorithm as ``nodelay`` says), so the two differ in the handler only."""

    def __init__(self, loaded: inference.LoadedModel, nodelay: bool) -> None:
        self.nodelay = nodelay
        pre = loaded.preprocessing  # the artifact's own sizes, so both sides do the same work per image
        self.transform = transforms.Compose(
            [
                transforms.Resize(pre.resize),
                transforms.CenterCrop(pre.crop),
                transforms.ToTensor(),
                transforms.Normalize(list(pre.mean), list(pre.std)),
            ]
        )
        self.model = loaded.model
        self.labels = loaded.labels
        self.top_k = min(5, len(loaded.labels))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="naive-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def predict(self, body: bytes) -> dict[str, Any]:
        image = Image.open(BytesIO(body)).convert("RGB")
        x = self.transform(image)
        with torch.no_grad():
            probabilities = torch.softmax(self.model(x.unsqueeze(0)), dim=1)[0]
        top = probabilities.topk(self.top_k)
        return {
            "predictions": [
                {"label": self.labels[i], "probability": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as ours: the comparison is of the serving, not of TCP
            disable_nagle_algorithm = server.nodelay

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._send(200 if self.path == "/ping" else 404, {"status": "healthy"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/invocations":
                    status, answer = 404, {"error": self.path}
                else:
                    try:
                        status, answer = 200, server.predict(body)
                    except Exception as exc:
                        status, answer = 500, {"error": str(exc)}
                self._send(status, answer)

            def _send(self, status: int, answer: dict[str, Any]) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> NaiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------------
# load on the machine


def _cpu_busy_seconds() -> float:
    """Seconds of CPU all processes spent since boot (every core), from /proc/stat's first line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # guest time is already counted in user
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def watched(record: dict[str, Any], max_other: float) -> Iterator[None]:
    """Fills ``record`` with the window's load average before/after and the cores other processes kept busy."""
    load_before = os.getloadavg()[0]
    busy, own, started = _cpu_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    yield
    wall = time.perf_counter() - started
    other = max(0.0, (_cpu_busy_seconds() - busy) - (_own_cpu_seconds() - own)) / wall
    record.update(
        loadavg_before=round(load_before, 2),
        loadavg_after=round(os.getloadavg()[0], 2),
        own_cores=round((_own_cpu_seconds() - own) / wall, 2),
        other_cores=round(other, 3),
        noisy=other > max_other,
    )


# ---------------------------------------------------------------------------------------------------------------
# clients and ceilings


def nodelay_of(server: EndpointServer) -> bool:
    """Whether EndpointServer's handler turns Nagle's algorithm off (StreamRequestHandler's own switch)."""
    handler = getattr(getattr(server, "_httpd", None), "RequestHandlerClass", None)
    return bool(getattr(handler, "disable_nagle_algorithm", False))


def ping_ms(url: str, times: int = 20) -> float:
    """Median ms of a keep-alive ``GET /ping``: what HTTP alone costs a request on this server."""
    target = urlsplit(url)
    connection = HTTPConnection(target.hostname, target.port, timeout=60)
    samples = []
    try:
        for _ in range(times + 1):
            started = time.perf_counter()
            connection.request("GET", "/ping")
            connection.getresponse().read()
            samples.append(time.perf_counter() - started)
    finally:
        connection.close()
    return 1000 * statistics.median(samples[1:])


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def load_window(url: str, photos: list[bytes], concurrency: int, requests: int) -> dict[str, Any]:
    """``requests`` POSTs from ``concurrency`` keep-alive clients (after one warm-up request each): images/s and
    per-request latency. A non-200 answer stops the benchmark: it would measure errors, not serving."""
    target = urlsplit(url)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    issued = iter(range(requests))
    ready = threading.Barrier(concurrency + 1)
    finished: list[float] = []

    def post(connection: HTTPConnection, body: bytes) -> None:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/x-image"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {answer[:200]!r}")

    def client(index: int) -> None:
        connection = HTTPConnection(target.hostname, target.port, timeout=600)
        try:
            post(connection, photos[index % len(photos)])  # warm-up: the connection and this thread
            ready.wait()
            while True:
                with lock:
                    n = next(issued, None)
                if n is None:
                    break
                started = time.perf_counter()
                post(connection, photos[n % len(photos)])
                seconds = time.perf_counter() - started
                with lock:
                    latencies.append(seconds)
        except threading.BrokenBarrierError:
            return
        except Exception as exc:
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
            ready.abort()
        finally:
            with lock:
                finished.append(time.perf_counter())
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    with suppress(threading.BrokenBarrierError):  # a client failed: its error is raised below
        ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{url} at concurrency {concurrency}: {failures[0]}")
    seconds = max(finished) - started
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 4),
        "images_per_second": len(latencies) / seconds,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
    }


MATCHED_BATCHES = (4, 8)  # besides 1 and the max batch: what the server forms at concurrency 4 and 16


def forward_rate(
    model: torch.nn.Module,
    tensors: list[torch.Tensor],
    batch: int,
    dtype: torch.dtype | None,
    channels_last: bool,
    passes: int = 3,
) -> float:
    """Images/s of the bare forward pass over ``tensors`` in batches of ``batch``: the best of ``passes`` passes
    (after one warm-up batch), as a ceiling is what the hardware can do, not its average under interference."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = [
        torch.stack(tensors[i : i + batch]).contiguous(memory_format=memory_format)
        for i in range(0, len(tensors) - batch + 1, batch)
    ]
    precision = torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()
    rates = []
    with torch.inference_mode(), precision:
        model(batches[0])
        for _ in range(passes):
            started = time.perf_counter()
            for x in batches:
                model(x)
            rates.append(len(batches) * batch / (time.perf_counter() - started))
    return max(rates)


# ---------------------------------------------------------------------------------------------------------------
# the run


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_bf16": inference.cpu_supports_bf16(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def load_photos(folder: Path, count: int) -> list[bytes]:
    """``count`` JPEGs spread evenly over the sorted files (every breed of an ImageFolder split), as bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in {".jpg", ".jpeg"})
    if not files:
        raise SystemExit(f"no JPEG photos under {folder}")
    step = max(1, len(files) // count)
    return [p.read_bytes() for p in files[::step][:count]]


def make_artifact(model_dir: Path, data: Path) -> None:
    """Train a throwaway artifact into ``model_dir`` (real network, meaningless weights); its siblings get the rest."""
    model_dir = model_dir.resolve()
    command = [
        sys.executable,
        str(ROOT / "training" / "train.py"),
        *("--data", str(data), "--model", "resnet50", "--weights", "none"),
        *("--epochs", "1", "--max-steps-per-epoch", "2", "--num-workers", "0"),
        *("--model-dir", str(model_dir), "--output-data-dir", str(model_dir.parent / "output")),
        *("--checkpoint-dir", str(model_dir.parent / "ckpt"), "--tensorboard-dir", "none"),
    ]
    print("making an artifact:", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"artifact in {model_dir} after {time.perf_counter() - started:.0f} s", flush=True)


def median_of(windows: list[dict[str, Any]], key: str) -> float | None:
    values = [w[key] for w in windows if w.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(windows: list[dict[str, Any]], ceilings: list[dict[str, Any]], max_batch: int) -> dict[str, Any]:
    """Medians over the kept windows (all of them, flagged, where every window was noisy)."""

    def kept(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
        quiet = [r for r in rows if not r["noisy"]]
        return (quiet, False) if quiet else (rows, True)

    ceiling_rows, ceiling_all_noisy = kept(ceilings)
    keys = sorted({key for row in ceiling_rows for key in row if key.startswith(("served_", "fp32_"))})
    summary: dict[str, Any] = {
        "ceiling": {key: median_of(ceiling_rows, key) for key in keys},
        "ceiling_all_noisy": ceiling_all_noisy,
        "concurrency": {},
    }
    for c in sorted({w["concurrency"] for w in windows}):
        row: dict[str, Any] = {}
        for side in ("naive", "ours"):
            rows, all_noisy = kept([w for w in windows if w["server"] == side and w["concurrency"] == c])
            row[side] = {key: median_of(rows, key) for key in ("images_per_second", "p50_ms", "p99_ms")}
            row[side].update(windows=len(rows), all_noisy=all_noisy)
        paired = [
            o["images_per_second"] / n["images_per_second"]
            for n in windows
            for o in windows
            if n["server"] == "naive"
            and o["server"] == "ours"
            and n["concurrency"] == o["concurrency"] == c
            and n["round"] == o["round"]
            and not (n["noisy"] or o["noisy"])
        ]
        naive_rate, ours_rate = row["naive"]["images_per_second"], row["ours"]["images_per_second"]
        row["ratio_paired_median"] = statistics.median(paired) if paired else None
        row["ratio_of_medians"] = ours_rate / naive_rate
        row["ratio"] = row["ratio_paired_median"] or row["ratio_of_medians"]
        ceiling = summary["ceiling"]
        row["ours_of_ceiling_batch1"] = ours_rate / ceiling["served_batch1"]
        row["ours_of_ceiling_max_batch"] = ours_rate / ceiling["served_max_batch"]
        # the same-precision ceiling at the batch size the server actually formed at this concurrency
        formed = median_of([w for w in windows if w["server"] == "ours" and w["concurrency"] == c], "mean_batch") or 1
        sizes = {1: "served_batch1", max_batch: "served_max_batch"} | {
            int(key.removeprefix("served_batch")): key
            for key in ceiling
            if key.startswith("served_batch") and key[len("served_batch") :].isdigit()
        }
        nearest = min(sizes, key=lambda size: abs(size - formed))
        row["ours_mean_batch"] = formed
        row["matched_ceiling_batch"] = nearest
        row["ours_of_matched_ceiling"] = ours_rate / ceiling[sizes[nearest]]
        row["naive_of_fp32_ceiling_batch1"] = naive_rate / ceiling["fp32_batch1"]
        summary["concurrency"][str(c)] = row
    return summary


def print_table(summary: dict[str, Any], max_batch: int, precision: str) -> None:
    ceiling = summary["ceiling"]
    print()
    print(
        f"ceiling (bare forward, img/s): {precision} channels_last batch 1 {ceiling['served_batch1']:.1f}, "
        f"batch {max_batch} {ceiling['served_max_batch']:.1f}; fp32 batch 1 {ceiling['fp32_batch1']:.1f}"
        + (" [all rounds noisy]" if summary["ceiling_all_noisy"] else "")
    )
    head = (
        f"{'c':>3} | {'naive img/s':>11} {'p50 ms':>8} {'p99 ms':>8} | {'ours img/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} | {'ours/naive':>10} | {'ours % b1':>9} {f'% b{max_batch}':>7} {'% same batch':>14} | "
        f"{'naive % fp32 b1':>15}"
    )
    print(head)
    print("-" * len(head))
    for c, row in summary["concurrency"].items():
        naive, ours = row["naive"], row["ours"]
        noisy = " [all noisy]" if naive["all_noisy"] or ours["all_noisy"] else ""
        print(
            f"{c:>3} | {naive['images_per_second']:>11.1f} {naive['p50_ms']:>8.0f} {naive['p99_ms']:>8.0f} | "
            f"{ours['images_per_second']:>10.1f} {ours['p50_ms']:>8.0f} {ours['p99_ms']:>8.0f} | "
            f"{row['ratio']:>9.2f}x | {100 * row['ours_of_ceiling_batch1']:>8.0f}% "
            f"{100 * row['ours_of_ceiling_max_batch']:>6.0f}% "
            f"{100 * row['ours_of_matched_ceiling']:>5.0f}% (b{row['matched_ceiling_batch']:<2}) | "
            f"{100 * row['naive_of_fp32_ceiling_batch1']:>14.0f}%"
            f"{noisy}"
        )


def batch_counter(artifact: ArtifactModel) -> Callable[[], Counter[int]]:
    """A snapshot of the server-side batch sizes, where ArtifactModel batches (empty otherwise)."""
    sizes = getattr(getattr(artifact, "batcher", None), "batch_sizes", None)
    return (lambda: Counter(sizes)) if sizes is not None else Counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="an unpacked artifact")
    parser.add_argument("--make-artifact", action="store_true", help="train a throwaway one first if none is there")
    parser.add_argument("--artifact-data", type=Path, default=DEFAULT_DATA, help="dataset for --make-artifact")
    parser.add_argument("--photos", type=Path, default=DEFAULT_DATA / "test")
    parser.add_argument("--count", type=int, default=200, help="photos, sent round-robin")
    parser.add_argument("--requests", type=int, default=96, help="timed requests per window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument("--max-batch", type=int, default=getattr(inference, "SERVE_MAX_BATCH", 16))
    parser.add_argument("--max-other-load", type=float, default=0.25, help="cores; busier windows are noisy")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "endpoint_serving.json")
    args = parser.parse_args()

    if not (args.model_dir / inference.CONFIG_FILE).is_file():
        if not args.make_artifact:
            parser.error(f"no artifact in {args.model_dir}: pass --make-artifact, or see the docstring")
        make_artifact(args.model_dir, args.artifact_data)

    photos = load_photos(args.photos, args.count)
    naive_loaded = inference.model_fn(str(args.model_dir))
    if naive_loaded.tap is not None:  # the naive handler has no open-set step: no feature hook either
        naive_loaded.tap.close()
    naive_loaded.model.to(memory_format=torch.contiguous_format)  # fp32, plain layout: as published
    served = inference.model_fn(str(args.model_dir))  # the ceiling: the network exactly as the endpoint holds it
    precision = "fp32" if served.autocast_dtype is None else str(served.autocast_dtype).removeprefix("torch.")
    ceiling_count = max(args.max_batch, args.requests // args.max_batch * args.max_batch)
    tensors = [
        served.transform(imaging.decode_rgb(photos[i % len(photos)], draft_size=served.decode.draft_size))
        for i in range(ceiling_count)
    ]
    info = machine()
    print(
        f"{len(photos)} photos from {args.photos}; {served.config.get('architecture')} {args.model_dir}; "
        f"ours serves {precision}; {info['cpu']}, {info['cores_usable']} cores, torch {info['torch']} "
        f"with {info['torch_threads']} threads; {args.requests} requests per window, {args.rounds} rounds",
        flush=True,
    )

    windows: list[dict[str, Any]] = []
    ceilings: list[dict[str, Any]] = []
    with ExitStack() as stack:
        artifact = ArtifactModel(args.model_dir)
        if callable(getattr(artifact, "close", None)):
            stack.callback(artifact.close)
        ours = stack.enter_context(EndpointServer(artifact, "bench"))
        nodelay = nodelay_of(ours)
        naive = stack.enter_context(NaiveServer(naive_loaded, nodelay))
        batches = batch_counter(artifact)
        http_ms = {"naive": ping_ms(naive.url), "ours": ping_ms(ours.url)}
        print(
            f"HTTP alone (keep-alive GET /ping, median): naive {http_ms['naive']:.2f} ms, ours {http_ms['ours']:.2f} "
            f"ms; Nagle's algorithm {'off' if nodelay else 'on'} in both",
            flush=True,
        )
        for round_ in range(args.rounds):
            ceiling: dict[str, Any] = {"round": round_}
            with watched(ceiling, args.max_other_load):
                ceiling["served_batch1"] = forward_rate(served.model, tensors, 1, served.autocast_dtype, True)
                for size in MATCHED_BATCHES:  # the batch sizes the server forms at the measured concurrencies
                    if 1 < size < args.max_batch:
                        ceiling[f"served_batch{size}"] = forward_rate(
                            served.model, tensors, size, served.autocast_dtype, True
                        )
                ceiling["served_max_batch"] = forward_rate(
                    served.model, tensors, args.max_batch, served.autocast_dtype, True
                )
                ceiling["fp32_batch1"] = forward_rate(naive_loaded.model, tensors, 1, None, False)
            ceilings.append(ceiling)
            print(
                f"round {round_} ceiling: {precision} b1 {ceiling['served_batch1']:.1f}, b{args.max_batch} "
                f"{ceiling['served_max_batch']:.1f}, fp32 b1 {ceiling['fp32_batch1']:.1f} img/s; other "
                f"{ceiling['other_cores']:.2f} cores{' NOISY' if ceiling['noisy'] else ''}",
                flush=True,
            )
            order = (("naive", naive), ("ours", ours)) if round_ % 2 == 0 else (("ours", ours), ("naive", naive))
            for c in args.concurrency:
                for side, server in order:
                    window: dict[str, Any] = {"round": round_, "server": side, "concurrency": c}
                    before = batches()  # the warm-up requests count too
                    with watched(window, args.max_other_load):
                        window.update(load_window(server.url, photos, c, args.requests))
                    if side == "ours" and (sizes := batches() - before):
                        window["batch_sizes"] = {str(k): v for k, v in sorted(sizes.items())}
                        window["mean_batch"] = round(sum(k * v for k, v in sizes.items()) / sum(sizes.values()), 2)
                    windows.append(window)
                    print(
                        f"round {round_} {side:>5} c{c:<2} {window['images_per_second']:7.1f} img/s "
                        f"p50 {window['p50_ms']:6.0f} p99 {window['p99_ms']:6.0f} ms; load "
                        f"{window['loadavg_before']:.2f}->{window['loadavg_after']:.2f}, other "
                        f"{window['other_cores']:.2f} cores"
                        + (f", mean batch {window['mean_batch']}" if "mean_batch" in window else "")
                        + (" NOISY (left out)" if window["noisy"] else ""),
                        flush=True,
                    )

    summary = summarise(windows, ceilings, args.max_batch)
    print_table(summary, args.max_batch, precision)
    noisy = sum(w["noisy"] for w in windows)
    print(f"{noisy} of {len(windows)} windows noisy (> {args.max_other_load} cores busy elsewhere); {args.json}")
    result = {
        "model_dir": str(args.model_dir),
        "architecture": served.config.get("architecture"),
        "photos": str(args.photos),
        "photo_count": len(photos),
        "precision": precision,
        "max_batch": args.max_batch,
        "tcp_nodelay": nodelay,
        "http_ping_ms": http_ms,
        "machine": info,
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in {"make_artifact", "artifact_data", "json"}
        },
        "summary": summary,
        "ceilings": ceilings,
        "windows": windows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
