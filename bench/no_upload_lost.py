"""No upload lost, on the local twin: a burst of real photos with reused keys, same-bytes re-uploads, bad input,
poison messages and lost notifications, then an account of every object version that went in.

What goes in (``--photos`` real photos from ../shared/data, default 1000):
- every photo under its own key;
- ``--reused`` keys (50) written 2 or 3 times with different photos: some racing (all versions written before
  the router runs), some spaced (the next version written after the previous one was routed);
- ``--same-bytes`` pairs (50): the same bytes written twice under one key (two versions, one ETag);
- the adversarial corpus: a text file named .jpg, a truncated JPEG, an empty object, a HEIC header, a key
  with spaces and unicode, a console folder marker;
- ``--poison`` messages (3) that are not S3 events at all, and ``--lost`` notifications (20) deleted from the
  queue before the router sees them (the reconciler must find those objects).

The account: for every version written, exactly one results item (by the router's own source id) and one
sorted copy whose bytes are that version's; the inbox holds no version; the dead-letter queue holds only the
poison messages. It prints the counts and exits 1 if any check fails.

    .venv/bin/python bench/no_upload_lost.py                          # the demo's model (make demo trains it)
    .venv/bin/python bench/no_upload_lost.py --photos 1500 --model out/train/model.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from breedfilter.twin.local_twin import LocalTwin  # noqa: E402


def photos(count: int) -> list[Path]:
    found = sorted(p for p in (SHARED / "data").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(found) < count:
        raise SystemExit(f"only {len(found)} photos under {SHARED / 'data'}, asked for {count}")
    rng = random.Random(0)
    return rng.sample(found, count)


def predictor(model: Path | None):
    if model is None:
        models = sorted((ROOT / "out" / "demo" / "models").glob("*/model.tar.gz"), key=lambda p: p.stat().st_mtime)
        model = models[-1] if models else None
    if model is None:
        from breedfilter.twin.stand_in_model import ColourModel

        print("model: the stand-in colour model (no demo model in out/demo/models: make demo trains one)")
        return ColourModel()
    from breedfilter.twin.artifact_model import ArtifactModel

    print(f"model: {model}")
    return ArtifactModel(model)


def adversarial(sample: bytes) -> list[tuple[str, bytes]]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="JPEG")
    return [
        ("odd/notes.jpg", b"a text file somebody named .jpg\n"),
        ("odd/truncated.jpg", buffer.getvalue()[:300]),
        ("odd/empty.png", b""),
        ("odd/phone photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)),
        ("odd/my dog Ünïcødé 狗 + plus.jpg", sample),
        ("odd/folder/", b""),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--reused", type=int, default=50)
    parser.add_argument("--same-bytes", type=int, default=50)
    parser.add_argument("--poison", type=int, default=3)
    parser.add_argument("--lost", type=int, default=20)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()

    pool = photos(args.photos + 3 * args.reused)
    unique, spare = pool[: args.photos], pool[args.photos :]
    written: list[tuple[str, str | None, str]] = []  # (key, version id, sha256 of the bytes)
    started = time.monotonic()
    with LocalTwin(predictor(args.model)) as twin:
        s3, sqs = twin.client("s3"), twin.client("sqs")
        inbox = twin.names.inbox_bucket

        def put(key: str, body: bytes) -> None:
            answer = s3.put_object(Bucket=inbox, Key=key, Body=body)
            written.append((key, answer.get("VersionId"), hashlib.sha256(body).hexdigest()))

        # spaced reuse first: a version, routed, then the next one
        spaced = args.reused // 2
        for i in range(spaced):
            put(f"spaced/IMG_{i:04d}.jpg", spare[3 * i].read_bytes())
        twin.drain(max_seconds=600)
        for i in range(spaced):
            put(f"spaced/IMG_{i:04d}.jpg", spare[3 * i + 1].read_bytes())
        twin.drain(max_seconds=600)
        for i in range(0, spaced, 2):  # every other one a third time
            put(f"spaced/IMG_{i:04d}.jpg", spare[3 * i + 2].read_bytes())
        # the burst: unique photos, racing reuse, same-bytes pairs, the adversarial corpus
        for path in unique:
            put(f"burst/{path.parent.name}/{path.name}", path.read_bytes())
        for i in range(spaced, args.reused):
            for j in range(2 + i % 2):
                put(f"racing/IMG_{i:04d}.jpg", spare[3 * i + j].read_bytes())
        for i in range(args.same_bytes):
            body = unique[i].read_bytes()
            put(f"same/IMG_{i:04d}.jpg", body)
            put(f"same/IMG_{i:04d}.jpg", body)
        for key, body in adversarial(unique[0].read_bytes()):
            put(key, body)
        for i in range(args.poison):
            sqs.send_message(QueueUrl=twin.stack.queue_url, MessageBody=f"poison {i}: not an S3 event")
        lost = 0
        while lost < args.lost:  # notifications S3 never delivered (or a purge took): the reconciler's job
            messages = sqs.receive_message(QueueUrl=twin.stack.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            for message in messages[: args.lost - lost]:
                if message["Body"].startswith("poison"):
                    sqs.change_message_visibility(
                        QueueUrl=twin.stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
                    continue
                sqs.delete_message(QueueUrl=twin.stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
                lost += 1
        print(
            f"wrote {len(written)} object versions under {len({k for k, _, _ in written})} keys; "
            f"{args.poison} poison messages; {lost} notifications lost on purpose"
        )
        report = twin.drain(max_seconds=1800)
        print(
            f"router: {report.batches} batches, {report.received} messages, {report.succeeded} succeeded, "
            f"{report.failed} returned to the queue"
        )
        reconciled = twin.reconcile(grace_minutes=0)
        print(f"reconciler: {reconciled}")
        report = twin.drain(max_seconds=600)
        print(f"router after the reconciler: {report.received} messages, {report.succeeded} succeeded")
        verdict = account(twin, written, args.poison)
    print(f"wall time {time.monotonic() - started:.0f} s")
    return verdict


def account(twin: LocalTwin, written: list[tuple[str, str | None, str]], poison: int) -> int:
    s3, names = twin.client("s3"), twin.names
    snapshot = twin.snapshot()
    items = {i["pk"]: i for i in snapshot.items}
    folder_markers = [w for w in written if w[0].endswith("/")]
    checks: Counter[str] = Counter()
    problems: list[str] = []
    for key, version, digest in written:
        if key.endswith("/"):
            continue  # a console folder marker: not an image, left alone by design
        pk = f"s3://{names.inbox_bucket}/{key}#v:{version}"
        item = items.get(pk)
        if item is None:
            problems.append(f"no results item for {pk}")
            continue
        checks["item"] += 1
        body = s3.get_object(Bucket=item["destination_bucket"], Key=item["destination_key"])["Body"].read()
        if hashlib.sha256(body).hexdigest() != digest:
            problems.append(f"{pk}: the copy at {item['destination_key']} holds other bytes")
        else:
            checks["copy with the right bytes"] += 1
        checks[item["status"]] += 1
    destinations = Counter(i["destination_key"] for i in snapshot.items)
    shared = [d for d, n in destinations.items() if n > 1]
    if shared:
        problems.append(f"{len(shared)} sorted keys hold more than one version's item, e.g. {shared[:3]}")
    versions = twin.client("s3").list_object_versions(Bucket=names.inbox_bucket)
    left = [v for v in versions.get("Versions", []) if not v["Key"].endswith("/")]
    if left:
        problems.append(f"{len(left)} versions left in the inbox, e.g. {[v['Key'] for v in left[:3]]}")
    if snapshot.queue_depth:
        problems.append(f"{snapshot.queue_depth} messages still in the inbox queue")
    not_poison = [b for b in snapshot.dlq_bodies if not b.startswith("poison")]
    if snapshot.dlq_depth != poison or not_poison:
        problems.append(f"dead-letter queue holds {snapshot.dlq_depth} messages ({poison} poison expected)")
    versions_in = len(written) - len(folder_markers)
    print(
        f"\n{versions_in} object versions in (+{len(folder_markers)} folder marker left alone): "
        f"{checks['item']} results items, {checks['copy with the right bytes']} sorted copies with the right bytes, "
        f"{len(snapshot.sorted)} objects in the sorted bucket"
    )
    print(
        f"by status: SORTED {checks['SORTED']}, REVIEW {checks['REVIEW']}, REJECTED {checks['REJECTED']}; inbox left: "
        f"{len(left)} versions; queue: {snapshot.queue_depth}; dead-letter queue: {snapshot.dlq_depth} (poison sent: "
        f"{poison})"
    )
    for problem in problems[:20]:
        print(f"  PROBLEM: {problem}")
    print("every version accounted for: " + ("yes" if not problems else f"NO ({len(problems)} problems)"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
