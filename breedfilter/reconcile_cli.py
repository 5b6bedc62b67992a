"""``breedfilter reconcile``: the scheduled reconciler's code, run from a terminal against the local twin or a
deployed stack. It finds inbox object versions older than the grace period (lost or late notifications, purged
messages, a crash after recording), tells lost ones from leftovers, and sends each through the inbox queue.

    breedfilter reconcile [--older-than MIN] [--max N] [--prefix P] [--dry-run] [--stack NAME] [--json]

Where: ``--stack NAME`` reads the stack's outputs (InboxBucketName, InboxQueueUrl, ResultsTableName,
DeadLetterQueueUrl). Without it: the environment that ``eval "$(breedfilter local env)"`` exports
(AWS_ENDPOINT_URL, INBOX_BUCKET, RESULTS_TABLE...), else the running twin's own state (``breedfilter local up``).
``breedfilter backfill`` and ``breedfilter redrive`` find their stack the same way (``resolve_target``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from breedfilter import units
from breedfilter.aws_hints import NO_CREDENTIALS
from breedfilter.twin.local_aws import StackNames
from breedfilter.units import REPO_ROOT

T = TypeVar("T")

ROUTER_DIR = units.ROUTER_DIR
STACK_OUTPUTS = {
    "inbox_bucket": "InboxBucketName",
    "inbox_queue_url": "InboxQueueUrl",
    "dead_letter_queue_url": "DeadLetterQueueUrl",
    "results_table": "ResultsTableName",
}


class TargetError(Exception):
    """No stack to work on, or its names cannot be read: one line."""


def router_modules() -> None:
    """The reconciler's code is the router's package: make ``routing`` importable, as Lambda does."""
    units.router_module("routing")


@dataclass
class Target:
    """The stack a command works on: its names and a boto3 session (with the twin's endpoint, if local)."""

    where: str  # "stack NAME", "the local twin at URL", ...
    session: Any
    inbox_bucket: str
    results_table: str
    inbox_queue_url: str | None = None
    dead_letter_queue_url: str | None = None
    endpoint_url: str | None = None
    sorted_bucket: str | None = None  # read where known (review needs it; the reconciler does not)
    queue_names: StackNames = field(default_factory=StackNames)

    def client(self, service: str, *, attempts: int = 5) -> Any:
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "total_max_attempts": attempts})
        return self.session.client(service, endpoint_url=self.endpoint_url, config=config)

    def queue_url(self) -> str:
        if not self.inbox_queue_url:
            self.inbox_queue_url = self._lookup(self.queue_names.inbox_queue)
        return self.inbox_queue_url

    def dlq_url(self) -> str:
        if not self.dead_letter_queue_url:
            self.dead_letter_queue_url = self._lookup(self.queue_names.dead_letter_queue)
        return self.dead_letter_queue_url

    def _lookup(self, name: str) -> str:
        return self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def resolve_target(stack: str | None, region: str | None = None, *, state_dir: Path | None = None) -> Target:
    """``--stack NAME``'s outputs; else the twin's environment (exported, or read from its state file)."""
    import boto3

    if stack:
        session = boto3.Session(region_name=region)
        try:
            stacks = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        except Exception as exc:  # ClientError (no such stack), NoCredentialsError
            raise TargetError(f"stack {stack}: {aws_message(exc)}") from exc
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        missing = [name for name in STACK_OUTPUTS.values() if name not in outputs]
        if missing:
            raise TargetError(f"stack {stack} has no output(s) {', '.join(missing)} (is it a breedfilter stack?)")
        return Target(
            where=f"stack {stack}",
            session=session,
            sorted_bucket=outputs.get("SortedBucketName"),
            **{field: outputs[output] for field, output in STACK_OUTPUTS.items()},
        )
    names = StackNames()
    env = os.environ
    if env.get("AWS_ENDPOINT_URL") or env.get("INBOX_BUCKET"):
        endpoint = env.get("AWS_ENDPOINT_URL")
        return Target(
            where=f"the local twin at {endpoint}" if endpoint else "the environment's names (INBOX_BUCKET...)",
            session=boto3.Session(region_name=region),
            inbox_bucket=env.get("INBOX_BUCKET") or names.inbox_bucket,
            results_table=env.get("RESULTS_TABLE") or names.results_table,
            inbox_queue_url=env.get("INBOX_QUEUE_URL") or None,
            dead_letter_queue_url=env.get("DEAD_LETTER_QUEUE_URL") or None,
            endpoint_url=endpoint or None,
            sorted_bucket=env.get("SORTED_BUCKET") or names.sorted_bucket,
        )
    from breedfilter import local_cli

    state = local_cli.read_state((state_dir or default_state_dir()).resolve())
    if state is None:
        raise TargetError(
            "no stack to work on: pass --stack NAME (a deployed stack), or start the local twin "
            '(`breedfilter local up`) and export its environment (`eval "$(breedfilter local env)"`)'
        )
    exports = state["exports"]
    session = boto3.Session(
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=exports.get("AWS_SESSION_TOKEN"),
        region_name=exports.get("AWS_DEFAULT_REGION"),
    )
    return Target(
        where=f"the local twin at {exports['AWS_ENDPOINT_URL']} (pid {state['pid']})",
        session=session,
        inbox_bucket=exports.get("INBOX_BUCKET") or names.inbox_bucket,
        results_table=exports.get("RESULTS_TABLE") or names.results_table,
        inbox_queue_url=exports.get("INBOX_QUEUE_URL"),
        dead_letter_queue_url=exports.get("DEAD_LETTER_QUEUE_URL"),
        endpoint_url=exports["AWS_ENDPOINT_URL"],
        sorted_bucket=exports.get("SORTED_BUCKET") or names.sorted_bucket,
    )


def default_state_dir() -> Path:
    return Path(os.environ.get("BREEDFILTER_LOCAL_DIR") or REPO_ROOT / "out" / "local")


def aws_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response and "Error" in response:
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return str(exc) or type(exc).__name__


def run_reported(
    command: str, work: Callable[[], T], usage_errors: tuple[type[BaseException], ...] = ()
) -> tuple[T | None, int]:
    """``(work(), 0)``; or, with one ``command: reason`` line on stderr, ``(None, 2)`` for a usage error (no
    stack, bad settings) and ``(None, 1)`` for AWS refusing (no credentials, a client or connection error).
    The reconcile, backfill and redrive commands report their failures through it alike."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return work(), 0
    except (TargetError, *usage_errors) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None, 2
    except NoCredentialsError:
        print(f"{command}: {NO_CREDENTIALS}", file=sys.stderr)
        return None, 1
    except (ClientError, BotoCoreError) as exc:
        print(f"{command}: {aws_message(exc)}", file=sys.stderr)
        return None, 1


# -- for the local twin: the reconciler on its schedule ------------------------------------------------------


# -- the command --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter reconcile",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--older-than",
        type=float,
        metavar="MIN",
        help="grace period in minutes: younger versions may still get their notification (default: 15)",
    )
    parser.add_argument("--max", type=int, metavar="N", help="most stuck objects sent in this run (default: 1000)")
    parser.add_argument("--prefix", default="", help="only keys under this prefix")
    parser.add_argument("--dry-run", action="store_true", help="list what is stuck; send nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--stack", help="a deployed stack's name (reads its outputs); default: the local twin")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    return parser


def render(report: Any, where: str) -> str:
    lines = [
        f"reconcile s3://{report.bucket}/ on {where}: versions older than {report.grace_minutes:g} min, "
        f"at most {report.max_objects} per run"
    ]
    lines.append(
        f"scanned {report.scanned} object versions ({report.too_young} within the grace period, "
        f"{report.folder_markers} folder markers skipped, {report.delete_markers} delete markers ignored): "
        f"{len(report.stuck)} stuck: {len(report.lost)} lost notifications (no results item), "
        f"{len(report.leftover)} left in the inbox after routing (item exists)"
    )
    for stuck in report.stuck:
        state = ""
        if not report.dry_run:
            state = "  sent" if stuck.sent else f"  NOT SENT: {stuck.error}"
        lines.append(
            f"  {stuck.kind:8s} {stuck.source_id}  ({stuck.size} bytes, written {stuck.last_modified}, "
            f"{stuck.age_minutes:g} min ago){state}"
        )
    if report.truncated:
        why = report.stopped_early or f"more than --max {report.max_objects} stuck"
        lines.append(f"truncated ({why}): run again for the rest")
    if report.dry_run:
        lines.append(f"dry run: would send {len(report.stuck)} notifications to {report.queue_url}")
    elif report.stuck:
        lines.append(
            f"sent {report.sent} notifications (origin reconciler) to {report.queue_url}"
            + (f"; {report.failed} failed" if report.failed else "")
            + "; the router routes them as it routes uploads"
        )
    else:
        lines.append("nothing to send")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    router_modules()
    from routing.reconcile import DEFAULT_GRACE_MINUTES, DEFAULT_MAX_OBJECTS, Reconciler, ReconcileSettings
    from routing.settings import ConfigError

    def work() -> tuple[Target, Any]:
        target = resolve_target(args.stack, args.region)
        settings = ReconcileSettings(
            inbox_bucket=target.inbox_bucket,
            inbox_queue_url=target.queue_url(),
            results_table=target.results_table,
            grace_minutes=DEFAULT_GRACE_MINUTES if args.older_than is None else args.older_than,
            max_objects=DEFAULT_MAX_OBJECTS if args.max is None else args.max,
        )
        settings.check()
        reconciler = Reconciler(
            settings, s3=target.client("s3"), sqs=target.client("sqs"), dynamodb=target.client("dynamodb")
        )
        return target, reconciler.run(dry_run=args.dry_run, prefix=args.prefix)

    done, code = run_reported("reconcile", work, (ConfigError,))
    if done is None:
        return code
    target, report = done
    if args.json:
        print(json.dumps({"where": target.where, **report.as_dict()}, indent=2, default=str))
    else:
        print(render(report, target.where))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
