"""The main job, offline: the router on sample images against a local twin of the stack.

Starts moto's server (S3, SQS, DynamoDB, provisioned from template.yaml) and a local SageMaker endpoint,
drops images into the inbox (some bad on purpose), lets the poller feed the router's ``lambda_handler``
until the queue drains, prints what happened, copies the results to ``out/demo/``, and stops everything.

    make demo                                  # or: .venv/bin/python -m breedfilter.demo [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from breedfilter.endpoint_server import EndpointServer
from breedfilter.lambda_runtime import load_handler
from breedfilter.local_aws import LocalAws, aws_environment, router_environment, scan_items
from breedfilter.sqs_poller import SqsEventSource
from breedfilter.stand_in_model import LABELS, ColourModel
from breedfilter.template import REPO_ROOT

OUT_DIR = REPO_ROOT / "out" / "demo"


def demo_images(per_label: int, seed: int = 7) -> list[tuple[str, bytes, str | None]]:
    """(key, bytes, true label or None for bad input): coloured photos-to-be plus deliberate bad input."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)  # noqa: S311 - picture variety, not security
    images: list[tuple[str, bytes, str | None]] = []
    base = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 190)}
    for label in LABELS:
        for i in range(per_label):
            strength = rng.uniform(0.02, 1.0)  # washed-out colours end up in review/
            colour = tuple(int(128 + (c - 128) * strength) for c in base[label])
            image = Image.new("RGB", (rng.randint(120, 400), rng.randint(120, 400)), colour)
            draw = ImageDraw.Draw(image)
            for _ in range(6):
                x, y = rng.randint(0, image.width), rng.randint(0, image.height)
                draw.ellipse((x, y, x + 30, y + 30), fill=tuple(rng.randint(0, 255) for _ in range(3)))
            fmt = rng.choice(["JPEG", "PNG", "WEBP"])
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            images.append((f"uploads/{label}-{i:02d}.{fmt.lower().replace('jpeg', 'jpg')}", buffer.getvalue(), label))
    images += [
        ("uploads/notes.jpg", b"a text file somebody named .jpg\n", None),
        ("uploads/truncated.jpg", _jpeg()[:600], None),
        ("uploads/empty.png", b"", None),
        ("uploads/phone photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), None),
        ("uploads/my dog Ünïcødé 狗.jpg", _jpeg(), "red"),
    ]
    return images


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (210, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def run(per_label: int, verbose: bool) -> dict[str, Any]:
    started = time.monotonic()
    with LocalAws() as aws, EndpointServer(ColourModel(), "breedfilter-classifier") as endpoint:
        stack = aws.provision()
        env = {**aws_environment(aws.url, endpoint.url), **router_environment(stack)}
        if not verbose:  # the router's JSON logs and EMF metrics are for CloudWatch; --verbose shows them
            env.update(POWERTOOLS_LOG_LEVEL="WARNING", POWERTOOLS_METRICS_DISABLED="true")
        env["POWERTOOLS_TRACE_DISABLED"] = "true"
        with patched_environ(env):
            return _run_stack(aws, endpoint, stack, per_label, verbose, started)


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    """The router reads os.environ, as on Lambda; restore it afterwards so nothing points at stopped servers."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run_stack(
    aws: LocalAws, endpoint: EndpointServer, stack: Any, per_label: int, verbose: bool, started: float
) -> dict[str, Any]:
    names = stack.names
    print(f"local AWS (moto) at {aws.url}; endpoint {names.endpoint_name} at {endpoint.url}")
    print("  model: a stand-in that names an image's dominant colour (red/green/blue); a trained model comes next")

    s3, sqs = aws.client("s3"), aws.client("sqs")
    images = demo_images(per_label)
    for key, body, _ in images:
        s3.put_object(Bucket=names.inbox_bucket, Key=key, Body=body)
    duplicate = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=1)["Messages"][0]
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody=duplicate["Body"])  # S3 may deliver twice
    sqs.change_message_visibility(
        QueueUrl=stack.queue_url, ReceiptHandle=duplicate["ReceiptHandle"], VisibilityTimeout=0
    )
    print(f"dropped {len(images)} objects into s3://{names.inbox_bucket}/uploads/ (+1 duplicate notification)")

    source = SqsEventSource(sqs, stack.queue_url, load_handler(), batch_size=10, function_name=names.function_name)
    with contextlib.redirect_stdout(sys.stdout if verbose else io.StringIO()):  # CloudWatch's EMF lines
        report = source.drain(max_seconds=120)
    print(
        f"router: {report.batches} batches, {report.received} messages, "
        f"{report.succeeded} succeeded, {report.failed} failed"
    )
    items = scan_items(aws.client("dynamodb"), names.results_table)
    summary = summarise(items, images, wall=time.monotonic() - started)
    summary["inbox_left"] = [o["Key"] for o in s3.list_objects_v2(Bucket=names.inbox_bucket).get("Contents", [])]
    summary["dlq_depth"] = int(
        sqs.get_queue_attributes(QueueUrl=stack.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
    )
    sorted_keys = [o["Key"] for o in s3.list_objects_v2(Bucket=names.sorted_bucket).get("Contents", [])]
    summary["one_copy_each"] = len(sorted_keys) == len(items) == len(images) and len(
        {i["source_key"] for i in items}
    ) == len(images)
    export(aws, names.sorted_bucket, items)
    print_summary(summary, names)
    return summary


def summarise(items: list[dict[str, Any]], images: list[tuple[str, bytes, str | None]], wall: float) -> dict[str, Any]:
    truth = {key: label for key, _, label in images}
    by_status = Counter(item["status"] for item in items)
    per_label = Counter(item["label"] for item in items if item["status"] == "SORTED")
    sorted_items = [i for i in items if i["status"] == "SORTED" and truth.get(i["source_key"])]
    correct = sum(1 for i in sorted_items if i["label"] == truth[i["source_key"]])
    return {
        "objects": len(images),
        "items": len(items),
        "by_status": dict(by_status),
        "per_label": dict(sorted(per_label.items())),
        "review": sorted(
            (i["source_key"], i["top_label"], float(i["confidence"])) for i in items if i["status"] == "REVIEW"
        ),
        "rejected": sorted((i["source_key"], i["reason"], i["detail"]) for i in items if i["status"] == "REJECTED"),
        "accuracy_sorted": (correct / len(sorted_items)) if sorted_items else None,
        "sorted_count": len(sorted_items),
        "wall_seconds": round(wall, 1),
    }


def export(aws: LocalAws, bucket: str, items: list[dict[str, Any]]) -> None:
    """Copy the sorted bucket and the results table out of the twin before it stops."""
    s3 = aws.client("s3")
    target = OUT_DIR / "sorted"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            path = target / obj["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    (OUT_DIR / "results.json").write_text(json.dumps(items, indent=2, default=str, ensure_ascii=False))


def print_summary(summary: dict[str, Any], names: Any) -> None:
    print()
    print(
        f"{summary['objects']} objects -> {summary['items']} results items: "
        + ", ".join(f"{count} {status}" for status, count in sorted(summary["by_status"].items()))
    )
    print("sorted per label: " + ", ".join(f"{label} {n}" for label, n in summary["per_label"].items()))
    if summary["accuracy_sorted"] is not None:
        print(
            f"accuracy of sorted images against their known labels: {summary['accuracy_sorted']:.1%} "
            f"({summary['sorted_count']} images)"
        )
    print(f"review ({len(summary['review'])}): below the confidence threshold, top guess kept")
    for key, label, confidence in summary["review"]:
        print(f"  {key:34s} top guess {label} ({confidence:.2f})")
    print(f"rejected ({len(summary['rejected'])}):")
    for key, reason, detail in summary["rejected"]:
        print(f"  {key:34s} {reason}: {textwrap.shorten(detail, 76, placeholder='...')}")
    print(f"inbox left: {len(summary['inbox_left'])} objects; dead-letter queue: {summary['dlq_depth']} messages")
    print(
        f"exactly one sorted copy and one results item per object (the duplicate notification did no work): "
        f"{'yes' if summary['one_copy_each'] else 'NO'}"
    )
    print()
    print(
        f"where things went: s3://{names.sorted_bucket}/<label>/, review/, rejected/ ; "
        f"decisions in DynamoDB table {names.results_table}"
    )
    print(f"  copied out before the twin stopped: {OUT_DIR / 'sorted'}/ and {OUT_DIR / 'results.json'}")
    print(f"demo wall time: {summary['wall_seconds']} s; all local servers stopped.")
    print("next: `make test` runs every test; README.md has the cloud path (sam build / sam deploy).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=6, help="generated images per label (default 6)")
    parser.add_argument("--verbose", action="store_true", help="show the router's JSON logs and EMF metrics")
    args = parser.parse_args()
    run(args.per_label, args.verbose)


if __name__ == "__main__":
    main()
