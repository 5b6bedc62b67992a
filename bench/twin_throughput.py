"""End to end on the local twin against the endpoint's own capacity, paired: how much of what the model can serve
reaches the user as routed images.

Each round, with one ``ArtifactModel`` (the same weights, precision and batching):
- capacity: ``EndpointServer`` alone, clients POSTing the photos at concurrency ``RecordConcurrency`` (what one
  router invocation offers the endpoint; the twin runs one invocation at a time) and at 16;
- the twin: the photos dropped into the inbox (S3 -> SQS notifications on moto), then the router drained over
  them (the real handler, ``RECORD_CONCURRENCY`` records at once, every S3/DynamoDB/SQS call on moto); images/s
  is photos over the drain's wall time, and every photo must have its results item;
- the pipeline alone: the same drain with the stand-in colour model (no network), what the twin's emulated AWS
  and the router can do on this machine when the model costs nothing. On one machine the model and the emulated
  AWS share the cores (1/twin ~ 1/endpoint + 1/pipeline); in the cloud S3, DynamoDB and Lambda run elsewhere.
Other load on the machine is recorded per window as in bench/endpoint_serving.py (windows above
``--max-other-load`` cores are printed and left out). Results go to bench/results/twin_throughput.json.

    .venv/bin/python bench/twin_throughput.py --model-dir out/bench/serving/model
    .venv/bin/python bench/twin_throughput.py --model-dir DIR --count 32 --rounds 1      # quick look
(bench/endpoint_serving.py --make-artifact creates out/bench/serving/model.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import endpoint_serving as serving  # noqa: E402

from breedfilter.template import StackTemplate  # noqa: E402
from breedfilter.twin.artifact_model import ArtifactModel  # noqa: E402
from breedfilter.twin.endpoint_server import EndpointServer  # noqa: E402
from breedfilter.twin.local_twin import LocalTwin  # noqa: E402
from breedfilter.twin.stand_in_model import ColourModel  # noqa: E402


def twin_window(model: Any, photos: list[bytes], max_other: float, kind: str = "twin") -> dict[str, Any]:
    record: dict[str, Any] = {"kind": kind}
    with LocalTwin(model, time_scale=0) as twin:
        for i, photo in enumerate(photos):
            twin.drop(f"bench/photo-{i:04d}.jpg", photo)
        with serving.watched(record, max_other):
            started = time.perf_counter()
            report = twin.drain(max_seconds=3600)
            seconds = time.perf_counter() - started
        items = twin.snapshot().items
    if report.failed or len(items) != len(photos):
        raise RuntimeError(f"the twin routed {len(items)} of {len(photos)} photos ({report.failed} failed records)")
    record.update(images=len(photos), seconds=round(seconds, 3), images_per_second=len(photos) / seconds)
    return record


def capacity_window(model: ArtifactModel, photos: list[bytes], concurrency: int, max_other: float) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": f"endpoint_c{concurrency}", "concurrency": concurrency}
    with EndpointServer(model, "bench") as server, serving.watched(record, max_other):
        record.update(serving.load_window(server.url, photos, concurrency, len(photos)))
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "out" / "bench" / "serving" / "model")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "dogs-imagewoof10" / "test")
    parser.add_argument("--count", type=int, default=96, help="photos per window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-other-load", type=float, default=0.25, help="cores busy elsewhere that void a window")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "twin_throughput.json")
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        raise SystemExit(f"no artifact in {args.model_dir}: bench/endpoint_serving.py --make-artifact creates one")

    photos = serving.load_photos(args.photos, args.count)
    record_concurrency = int(StackTemplate.load().parameter_default("RecordConcurrency"))
    model = ArtifactModel(args.model_dir)
    print(
        f"{len(photos)} photos; {args.model_dir}; router RecordConcurrency {record_concurrency}; {args.rounds} rounds",
        flush=True,
    )
    windows: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = ["twin", record_concurrency, 16, "pipeline"]
        for what in order if round_ % 2 == 0 else order[::-1]:
            if what == "twin":
                window = twin_window(model, photos, args.max_other_load)
            elif what == "pipeline":
                window = twin_window(ColourModel(), photos, args.max_other_load, kind="pipeline_alone")
            else:
                window = capacity_window(model, photos, int(what), args.max_other_load)
            window["round"] = round_
            windows.append(window)
            noisy = " NOISY" if window.get("noisy") else ""
            print(
                f"round {round_} {window['kind']:>14}: {window['images_per_second']:6.1f} img/s; "
                f"other {window.get('other_cores', 0):.2f} cores{noisy}",
                flush=True,
            )
    model.close()

    def median(kind: str) -> float | None:
        kept = [w["images_per_second"] for w in windows if w["kind"] == kind and not w.get("noisy")]
        return statistics.median(kept) if kept else None

    twin, offered, full = median("twin"), median(f"endpoint_c{record_concurrency}"), median("endpoint_c16")
    pipeline = median("pipeline_alone")
    summary = {
        "pipeline_alone_images_per_second": pipeline,
        "twin_images_per_second": twin,
        f"endpoint_c{record_concurrency}_images_per_second": offered,
        "endpoint_c16_images_per_second": full,
        "twin_vs_offered_concurrency": None if not (twin and offered) else twin / offered,
        "twin_vs_capacity": None if not (twin and full) else twin / full,
    }
    print()
    if twin and offered and full:
        print(f"twin end to end        {twin:6.1f} img/s")
        print(f"endpoint at c{record_concurrency:<2}        {offered:6.1f} img/s   twin = {twin / offered:.0%} of it")
        print(f"endpoint at c16 (cap.) {full:6.1f} img/s   twin = {twin / full:.0%} of it")
        if pipeline:
            shared = 1 / (1 / full + 1 / pipeline)
            print(f"pipeline alone         {pipeline:6.1f} img/s   (stand-in model: the emulated AWS and the router)")
            print(f"  one machine, shared cores: 1/(1/capacity + 1/pipeline) = {shared:.1f} img/s expected")
    else:
        print("too many noisy windows for a summary: run again on a quiet machine")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": serving.machine(),
        "model_dir": str(args.model_dir),
        "photos": len(photos),
        "record_concurrency": record_concurrency,
        "windows": windows,
        "summary": summary,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
