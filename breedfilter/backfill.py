"""``breedfilter backfill s3://BUCKET/PREFIX``: send objects that already exist through the router.

- **Another bucket** (a photo library): each object is copied server-side into the inbox (same key, or under
  ``--into PREFIX``); the copy raises the inbox's own ObjectCreated notification and is routed like an upload.
  The originals are never touched. (A notification naming the library itself would make the router delete
  the original after routing it: never done.)
- **The inbox itself** (objects left there): each version gets the S3-shaped notification the reconciler
  sends (``routing.reconcile.s3_notification``, origin ``backfill``) on the inbox queue.

``--rate N`` caps it at N objects a second; ``--dry-run`` lists what it would do; ``--start-after KEY`` resumes
after the last key a stopped run printed. A progress bar when stderr is a terminal, a line every 500 objects
otherwise. For libraries of millions of objects use S3 Batch Operations (README: "Backfill").

    breedfilter backfill s3://photos/2024/ [--into library/] [--rate 20] [--dry-run] [--stack NAME]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from breedfilter.reconcile_cli import Target, aws_message, resolve_target, router_modules, run_reported

SINGLE_COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects take a multipart copy
PROGRESS_EVERY = 500
DRY_RUN_SHOWN = 20


class BackfillError(Exception):
    """The backfill cannot start: one line."""


class RateLimiter:
    """At most ``rate`` acquisitions a second, evenly spaced (``rate`` None or 0: no limit)."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate is not None and rate < 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next: float | None = None
        self.waits = 0

    def acquire(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if self._next is not None and now < self._next:
            self.waits += 1
            self.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise BackfillError(f"expected s3://BUCKET[/PREFIX], got {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def destination_key(key: str, into: str | None) -> str:
    """The key a library object gets in the inbox: the same, or below ``into``."""
    if not into:
        return key
    return f"{into.strip('/')}/{key}"


@dataclass
class BackfillReport:
    source: str
    inbox: str
    mode: str  # "copy" (another bucket into the inbox) or "notify" (objects already in the inbox)
    dry_run: bool
    queue_url: str | None = None
    into: str | None = None
    done: int = 0
    folder_markers: int = 0
    planned: list[str] = field(default_factory=list)  # dry run: what would be done (the first few)
    failed: list[tuple[str, str]] = field(default_factory=list)
    last_key: str | None = None
    rate_waits: int = 0
    interrupted: bool = False


@dataclass(frozen=True)
class Work:
    key: str
    size: int
    version: Any = None  # an InboxVersion, in notify mode


class Progress:
    """tqdm on stderr when it is a terminal, else a plain line every ``every`` objects."""

    def __init__(self, show_bar: bool, description: str, every: int = PROGRESS_EVERY, stream: Any = None):
        self.stream = stream or sys.stderr
        self.every = every
        self.description = description
        self.count = 0
        self._bar: Any = None
        if show_bar:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(desc=description, unit="obj", file=self.stream)

    def update(self, failed: int) -> None:
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
            if failed:
                self._bar.set_postfix(failed=failed)
        elif self.count % self.every == 0:
            print(f"{self.description}: {self.count} objects ({failed} failed)", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def library_objects(s3: Any, bucket: str, prefix: str, start_after: str | None) -> Iterator[Work]:
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        params["StartAfter"] = start_after
    for page in s3.get_paginator("list_objects_v2").paginate(**params):
        for entry in page.get("Contents", []):
            yield Work(key=entry["Key"], size=int(entry.get("Size", 0)))


def inbox_objects(s3: Any, bucket: str, prefix: str, start_after: str | None) -> Iterator[Work]:
    router_modules()
    from routing.reconcile import list_inbox_pages

    for page in list_inbox_pages(s3, bucket, prefix):
        for version in page.versions:
            if start_after and version.key <= start_after:
                continue
            yield Work(key=version.key, size=version.size, version=version)


def backfill(
    target: Target,
    uri: str,
    *,
    into: str | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    start_after: str | None = None,
    progress: bool | None = None,
    limiter: RateLimiter | None = None,
    s3: Any = None,
    sqs: Any = None,
    stream: Any = None,
) -> BackfillReport:
    """Copy ``uri``'s objects into the inbox, or notify the inbox queue of the inbox's own (see the module)."""
    bucket, prefix = parse_s3_uri(uri)
    s3 = s3 or target.client("s3")
    notify = bucket == target.inbox_bucket
    if notify and into:
        raise BackfillError("--into copies another bucket's objects into the inbox; these are already there")
    report = BackfillReport(
        source=uri, inbox=target.inbox_bucket, mode="notify" if notify else "copy", dry_run=dry_run, into=into
    )
    limiter = limiter or RateLimiter(rate)
    sender = None
    if notify:
        router_modules()
        from routing.reconcile import NotificationSender

        report.queue_url = target.queue_url()
        sender = NotificationSender(sqs or target.client("sqs"), report.queue_url)
    objects = (inbox_objects if notify else library_objects)(s3, bucket, prefix, start_after)
    show_bar = (stream or sys.stderr).isatty() if progress is None else progress
    bar = Progress(show_bar and not dry_run, f"backfill {uri}", stream=stream)
    try:
        for work in objects:
            if work.key.endswith("/") and work.size == 0:
                report.folder_markers += 1  # the console's folder markers: not images
                continue
            if dry_run:
                report.done += 1
                if len(report.planned) < DRY_RUN_SHOWN:
                    report.planned.append(plan_line(report, work, into))
                continue
            limiter.acquire()
            if sender is not None:
                flushed = sender.send(work.key, notification(work, s3))
                _record(report, flushed)
            else:
                try:
                    copy_into_inbox(s3, bucket, work, target.inbox_bucket, into)
                    report.done += 1
                except Exception as exc:  # ClientError (AccessDenied, NoSuchKey...): that object fails alone
                    report.failed.append((work.key, aws_message(exc)))
            report.last_key = work.key
            bar.update(len(report.failed))
    except KeyboardInterrupt:
        report.interrupted = True  # Ctrl-C: report how far it got, so that --start-after resumes there
    finally:
        if sender is not None:
            _record(report, sender.flush())
        bar.close()
        report.rate_waits = limiter.waits
    return report


def plan_line(report: BackfillReport, work: Work, into: str | None) -> str:
    if report.mode == "notify":
        return f"notify s3://{report.inbox}/{work.key}" + (
            f" (version {work.version.version_id})" if work.version and work.version.version_id else ""
        )
    source_bucket, _ = parse_s3_uri(report.source)
    return f"copy s3://{source_bucket}/{work.key} -> s3://{report.inbox}/{destination_key(work.key, into)}"


def notification(work: Work, s3: Any) -> str:
    router_modules()
    from routing.reconcile import notification_body

    return notification_body(work.version, region=s3.meta.region_name or "us-east-1", origin="backfill")


def copy_into_inbox(s3: Any, bucket: str, work: Work, inbox: str, into: str | None) -> None:
    """Server-side copy (metadata and tags kept); the inbox notifies its queue as for an upload."""
    source = {"Bucket": bucket, "Key": work.key}
    key = destination_key(work.key, into)
    if work.size <= SINGLE_COPY_LIMIT:
        s3.copy_object(CopySource=source, Bucket=inbox, Key=key)
    else:
        s3.copy(source, inbox, key)


def _record(report: BackfillReport, results: list[tuple[Any, str | None]]) -> None:
    for key, error in results:
        if error is None:
            report.done += 1
        else:
            report.failed.append((key, error))


# -- the command --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter backfill",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="s3://BUCKET/PREFIX", help="objects to route (another bucket, or the inbox)")
    parser.add_argument("--into", metavar="PREFIX", help="copy under this inbox prefix (default: the same key)")
    parser.add_argument("--rate", type=float, metavar="N", help="at most N objects a second (default: no limit)")
    parser.add_argument("--start-after", metavar="KEY", help="skip keys up to and including KEY (resume)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be copied or notified")
    parser.add_argument("--stack", help="a deployed stack's name (reads its outputs); default: the local twin")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    return parser


def render(report: BackfillReport, where: str) -> str:
    source_bucket, _ = parse_s3_uri(report.source)
    into = report.into
    lines = []
    if report.dry_run:
        action = "notify the inbox queue of" if report.mode == "notify" else "copy into the inbox"
        lines += report.planned
        if report.done > len(report.planned):
            lines.append(f"... and {report.done - len(report.planned)} more")
        lines.append(f"dry run on {where}: would {action} {report.done} objects from {report.source}")
    elif report.mode == "notify":
        lines.append(
            f"sent {report.done} notifications (origin backfill) for s3://{report.inbox} objects under "
            f"{report.source} to {report.queue_url}"
        )
    else:
        lines.append(
            f"copied {report.done} objects from {report.source} into s3://{report.inbox}/{destination_key('', into)} "
            f"on {where} "
            f"(s3://{source_bucket} untouched); the inbox notifies the router of each"
        )
    if report.folder_markers:
        lines.append(f"skipped {report.folder_markers} folder markers")
    for key, error in report.failed[:DRY_RUN_SHOWN]:
        lines.append(f"  FAILED {key}: {error}")
    if report.failed:
        lines.append(f"{len(report.failed)} failed; run again (done objects are routed and gone from the inbox)")
    if report.interrupted:
        lines.append(f"interrupted after {report.last_key!r}: resume with --start-after {report.last_key!r}")
    elif report.last_key and not report.dry_run:
        lines.append(f"last key: {report.last_key}")
    stack = f" --stack {where.removeprefix('stack ')}" if where.startswith("stack ") else ""
    lines.append(f"follow the routing: breedfilter results --counts{stack}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.rate is not None and args.rate <= 0:
        print("backfill: --rate must be a positive number of objects a second", file=sys.stderr)
        return 2

    def work() -> tuple[Target, BackfillReport]:
        target = resolve_target(args.stack, args.region)
        report = backfill(
            target, args.source, into=args.into, rate=args.rate, dry_run=args.dry_run, start_after=args.start_after
        )
        return target, report

    done, code = run_reported("backfill", work, (BackfillError,))
    if done is None:
        return code
    target, report = done
    print(render(report, target.where))
    if report.interrupted:
        return 130
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
