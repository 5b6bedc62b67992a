"""``breedfilter status``: one screen of a filter's health, a deployed stack's or the local twin's.

    breedfilter status [--stack NAME] [--region R] [--since MINUTES] [--json]

It reads, and changes nothing (no message is received, so no receive count moves):
the stack's CloudWatch alarms (its AWS::CloudWatch::Alarm resources), ALARM first; the inbox queue's and the
dead-letter queue's depth (visible, in flight, delayed); the age of the oldest inbox message (the latest
AWS/SQS ApproximateAgeOfOldestMessage datapoint of the last 10 minutes) and of the oldest object still waiting
in the inbox bucket; the last ``--since`` minutes' decisions per status from the results table's by-status
index, with the review and unknown shares; and a verdict, OK or ATTENTION with what needs it.

Where: ``--stack NAME`` reads the stack's outputs; without it the local twin (``breedfilter local up``, or the
environment ``eval "$(breedfilter local env)"`` exports), found as reconcile, redrive and review find it
(reconcile_cli.resolve_target). The twin has no CloudWatch alarms or SQS metrics; it says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError

from breedfilter import units
from breedfilter.reconcile_cli import Target, TargetError, resolve_target, run_reported
from breedfilter.results import STATUSES, Table

DEFAULT_SINCE_MINUTES = 60.0
LISTING_CAP = 10_000  # inbox objects listed at most (10 pages) to find the oldest
METRIC_WINDOW_MINUTES = 10
ALARM_TYPES = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
STATE_ORDER = {"ALARM": 0, "INSUFFICIENT_DATA": 1, "OK": 2}
REASON_CHARS = 110  # an alarm's reason on the screen (--json keeps it whole)


class TwinUnreachable(BotoCoreError):
    """The twin's state (or the environment) names an address where nothing answers."""

    fmt = (
        "{where} does not answer ({error}): is it running? `breedfilter local status` says; "
        "`breedfilter local up` starts one"
    )


# -- what is gathered ------------------------------------------------------------------------------------------


@dataclass
class Alarm:
    name: str
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str
    updated_at: str | None = None


@dataclass
class Alarms:
    read: bool  # False where there are none to read (the twin; no stack named)
    note: str | None = None
    alarms: list[Alarm] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the stack, but CloudWatch does not know them

    @property
    def firing(self) -> list[Alarm]:
        return [alarm for alarm in self.alarms if alarm.state == "ALARM"]


@dataclass
class QueueDepth:
    url: str
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


@dataclass
class OldestMessage:
    """The latest ApproximateAgeOfOldestMessage datapoint (cloud only)."""

    metric: bool  # False where there is no such metric (the twin)
    age_seconds: float | None = None
    at: str | None = None  # the datapoint's time
    note: str | None = None


@dataclass
class InboxWaiting:
    """Objects still in the inbox bucket (routing deletes each once sorted): what a user waits on."""

    bucket: str
    waiting: int  # listed, folder markers left out
    cap: int
    capped: bool  # more objects than the cap: ``waiting`` and the oldest are of the first ``cap`` listed
    oldest_key: str | None = None
    oldest_modified: str | None = None
    oldest_age_seconds: float | None = None


@dataclass
class Decisions:
    """Results items decided in the window, by their current status (a person's review moves a REVIEW item to
    SORTED or REJECTED); ``unknown``: REVIEW items the model called none of its labels (reason unknown_label)."""

    since_minutes: float
    since: str
    table: str
    index: str
    per_status: dict[str, int]
    total: int
    unknown: int
    review_share: float | None
    unknown_share: float | None


@dataclass
class Health:
    where: str
    local: bool
    checked_at: str
    verdict: str  # OK | ATTENTION
    attention: list[str]
    alarms: Alarms
    inbox_queue: QueueDepth
    dead_letter_queue: QueueDepth
    oldest_message: OldestMessage
    inbox: InboxWaiting
    decisions: Decisions
    stuck_after_minutes: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reading it ------------------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """The results table's time format (routing.decision.now_iso): UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stack_alarm_names(cloudformation: Any, stack: str) -> list[str]:
    """The names of the stack's alarms: the physical ids of its (composite) alarm resources."""
    names = []
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        for resource in page.get("StackResourceSummaries", []):
            if resource.get("ResourceType") in ALARM_TYPES and resource.get("PhysicalResourceId"):
                names.append(resource["PhysicalResourceId"])
    return names


def alarm_states(cloudwatch: Any, names: Sequence[str]) -> tuple[list[Alarm], list[str]]:
    """The alarms' states, ALARM first, then INSUFFICIENT_DATA, then OK; and the names CloudWatch did not know."""
    found: dict[str, Alarm] = {}
    for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
        pages = cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNames=list(names[start : start + 100]), AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        )
        for page in pages:
            for raw in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                updated = raw.get("StateUpdatedTimestamp")
                found[raw["AlarmName"]] = Alarm(
                    raw["AlarmName"], raw["StateValue"], raw.get("StateReason", ""), iso(updated) if updated else None
                )
    alarms = sorted(found.values(), key=lambda a: (STATE_ORDER.get(a.state, 3), a.name))
    return alarms, [name for name in names if name not in found]


def read_alarms(target: Target, stack: str | None) -> Alarms:
    if target.endpoint_url:
        return Alarms(False, "none on the local twin: CloudWatch alarms exist only in a deployed stack")
    if not stack:
        return Alarms(False, "not read: no stack named (--stack NAME reads its alarms)")
    names = stack_alarm_names(target.client("cloudformation"), stack)
    if not names:
        return Alarms(True, f"stack {stack} declares no CloudWatch alarms")
    alarms, missing = alarm_states(target.client("cloudwatch"), names)
    return Alarms(True, None, alarms, missing)


def queue_depth(sqs: Any, url: str) -> QueueDepth:
    """Approximate counts from GetQueueAttributes: nothing is received, so no receive count moves."""
    names = {
        "visible": "ApproximateNumberOfMessages",
        "in_flight": "ApproximateNumberOfMessagesNotVisible",
        "delayed": "ApproximateNumberOfMessagesDelayed",
    }
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names.values()))["Attributes"]
    return QueueDepth(url, **{key: int(attributes.get(name, 0)) for key, name in names.items()})


def oldest_message(target: Target, queue_url: str, now: datetime) -> OldestMessage:
    if target.endpoint_url:
        return OldestMessage(False, note="no SQS metrics on the local twin (the inbox bucket's oldest object is)")
    queue = queue_url.rstrip("/").rsplit("/", 1)[-1]
    answer = target.client("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "age",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SQS",
                        "MetricName": "ApproximateAgeOfOldestMessage",
                        "Dimensions": [{"Name": "QueueName", "Value": queue}],
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=now - timedelta(minutes=METRIC_WINDOW_MINUTES),
        EndTime=now,
        ScanBy="TimestampDescending",
    )
    points = [
        (stamp, value)
        for result in answer.get("MetricDataResults", [])
        for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False)
    ]
    if not points:
        return OldestMessage(True, note=f"no datapoint in the last {METRIC_WINDOW_MINUTES} min")
    stamp, value = max(points, key=lambda point: point[0])
    return OldestMessage(True, float(value), iso(stamp))


def inbox_objects(s3: Any, bucket: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        yield from page.get("Contents", [])


def inbox_waiting(s3: Any, bucket: str, now: datetime, cap: int = LISTING_CAP) -> InboxWaiting:
    """The objects in the inbox bucket (at most ``cap`` listed) and the oldest of them; folder markers (keys
    ending in ``/``, empty) are no uploads and are left out, as the reconciler leaves them."""
    waiting, capped, oldest = 0, False, None
    for listed, obj in enumerate(inbox_objects(s3, bucket)):
        if listed >= cap:
            capped = True
            break
        if obj["Key"].endswith("/") and not obj.get("Size"):
            continue
        waiting += 1
        if oldest is None or obj["LastModified"] < oldest["LastModified"]:
            oldest = obj
    report = InboxWaiting(bucket, waiting, cap, capped)
    if oldest is not None:
        report.oldest_key = oldest["Key"]
        report.oldest_modified = iso(oldest["LastModified"])
        report.oldest_age_seconds = max(0.0, (now - oldest["LastModified"]).total_seconds())
    return report


def count(dynamodb: Any, request: dict[str, Any]) -> int:
    """``Select=COUNT`` over every page of a query."""
    total, start = 0, None
    while True:
        page = dynamodb.query(**request, Select="COUNT", **({"ExclusiveStartKey": start} if start else {}))
        total += page.get("Count", 0)
        start = page.get("LastEvaluatedKey")
        if not start:
            return total


def decisions(dynamodb: Any, table: Table, since_minutes: float, now: datetime) -> Decisions:
    """Per status, the items whose ``decided_at`` falls in the window (a key condition on the by-status index's
    sort key: only those are read); REVIEW's unknown_label ones counted by a filter on the same query."""
    unknown_label = units.router_module("routing.decision").UNKNOWN_LABEL
    since = iso(now - timedelta(minutes=since_minutes))

    def request(status: str) -> dict[str, Any]:
        return {
            "TableName": table.name,
            "IndexName": table.by_status,
            "KeyConditionExpression": "#s = :s AND #t >= :since",
            "ExpressionAttributeNames": {"#s": "status", "#t": "decided_at"},
            "ExpressionAttributeValues": {":s": {"S": status}, ":since": {"S": since}},
        }

    per_status = {status: count(dynamodb, request(status)) for status in STATUSES}
    unknown_request = request("REVIEW")
    unknown_request["FilterExpression"] = "#r = :u"
    unknown_request["ExpressionAttributeNames"]["#r"] = "reason"
    unknown_request["ExpressionAttributeValues"][":u"] = {"S": unknown_label}
    unknown = count(dynamodb, unknown_request) if per_status["REVIEW"] else 0
    total = sum(per_status.values())
    return Decisions(
        since_minutes=since_minutes,
        since=since,
        table=table.name,
        index=table.by_status,
        per_status=per_status,
        total=total,
        unknown=unknown,
        review_share=per_status["REVIEW"] / total if total else None,
        unknown_share=unknown / total if total else None,
    )


def needs_attention(health: Health) -> list[str]:
    """What a person should look at, most urgent first; empty when all is well."""
    found = []
    firing = health.alarms.firing
    if firing:
        found.append(f"{len(firing)} alarm(s) in ALARM: {', '.join(a.name for a in firing)}")
    if health.dead_letter_queue.total:
        found.append(
            f"{health.dead_letter_queue.total} message(s) in the dead-letter queue "
            "(fix the cause, then `breedfilter redrive`)"
        )
    limit_seconds = health.stuck_after_minutes * 60
    age = health.oldest_message.age_seconds
    if age is not None and age > limit_seconds:
        found.append(f"the oldest inbox message is {duration(age)} old (is the router running, or failing?)")
    waited = health.inbox.oldest_age_seconds
    if waited is not None and waited > limit_seconds:
        found.append(
            f"s3://{health.inbox.bucket}/{health.inbox.oldest_key} has waited {duration(waited)} in the inbox "
            f"(over {health.stuck_after_minutes:g} min: `breedfilter reconcile --dry-run` lists what is stuck)"
        )
    return found


def gather(target: Target, stack: str | None, since_minutes: float, now: datetime | None = None) -> Health:
    now = now or datetime.now(UTC)
    stuck_after = units.router_module("routing.reconcile").DEFAULT_GRACE_MINUTES
    sqs = target.client("sqs", attempts=3)
    inbox_queue = queue_depth(sqs, target.queue_url())
    health = Health(
        where=target.where,
        local=bool(target.endpoint_url),
        checked_at=iso(now),
        verdict="OK",
        attention=[],
        alarms=read_alarms(target, stack),
        inbox_queue=inbox_queue,
        dead_letter_queue=queue_depth(sqs, target.dlq_url()),
        oldest_message=oldest_message(target, inbox_queue.url, now),
        inbox=inbox_waiting(target.client("s3", attempts=3), target.inbox_bucket, now),
        decisions=decisions(target.client("dynamodb", attempts=3), Table(target.results_table), since_minutes, now),
        stuck_after_minutes=stuck_after,
    )
    health.attention = needs_attention(health)
    health.verdict = "ATTENTION" if health.attention else "OK"
    return health


# -- showing it ------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_alarms(alarms: Alarms) -> list[str]:
    if not alarms.alarms:
        return [f"alarms: {alarms.note}"]
    firing = len(alarms.firing)
    lines = [f"alarms: {firing} of {len(alarms.alarms)} in ALARM"]
    for alarm in alarms.alarms:
        reason = alarm.reason if len(alarm.reason) <= REASON_CHARS else alarm.reason[: REASON_CHARS - 3] + "..."
        lines.append(f"  {alarm.state:<17} {alarm.name}: {reason}")
    if alarms.missing:
        lines.append(f"  not found in CloudWatch: {', '.join(alarms.missing)}")
    return lines


def render_queue(title: str, depth: QueueDepth) -> str:
    return (
        f"{title} {depth.url}: {plural(depth.total, 'message')} "
        f"({depth.visible} visible, {depth.in_flight} in flight, {depth.delayed} delayed)"
    )


def render_ages(health: Health) -> list[str]:
    message = health.oldest_message
    if message.age_seconds is not None:
        said = f"{duration(message.age_seconds)} (ApproximateAgeOfOldestMessage at {message.at})"
    else:
        said = message.note or "no datapoint"
    inbox = health.inbox
    count_said = f"{plural(inbox.waiting, 'object')}{' or more' if inbox.capped else ''} waiting"
    if inbox.oldest_key is None:
        waiting = f"inbox bucket s3://{inbox.bucket}/: {count_said}"
    else:
        waiting = (
            f"inbox bucket s3://{inbox.bucket}/: {count_said}, the oldest {inbox.oldest_key} "
            f"for {duration(inbox.oldest_age_seconds or 0)} (since {inbox.oldest_modified})"
        )
    if inbox.capped:
        waiting += f"; listed the first {inbox.cap} only (more wait)"
    return [f"oldest inbox message: {said}", waiting]


def render_decisions(found: Decisions) -> str:
    window = f"last {found.since_minutes:g} min (since {found.since})"
    if not found.total:
        return f"{window}: no decisions in table {found.table}"
    per = ", ".join(f"{status} {found.per_status[status]}" for status in STATUSES)
    return (
        f"{window}: {plural(found.total, 'decision')}: {per}\n"
        f"  review share {share(found.review_share)}, unknown share {share(found.unknown_share)} "
        f"({found.unknown} REVIEW as unknown_label: none of the model's labels)"
    )


def render(health: Health) -> str:
    lines = [f"breedfilter status of {health.where} at {health.checked_at}"]
    lines += render_alarms(health.alarms)
    lines.append(render_queue("inbox queue", health.inbox_queue))
    lines.append(render_queue("dead-letter queue", health.dead_letter_queue))
    lines += render_ages(health)
    lines.append(render_decisions(health.decisions))
    if health.attention:
        lines.append(f"ATTENTION: {'; '.join(health.attention)}")
    else:
        lines.append("OK")
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------------------------------


def positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("--since takes minutes above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter status",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stack", help="a deployed stack's name (reads its outputs); default: the local twin")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    parser.add_argument(
        "--since",
        type=positive_minutes,
        default=DEFAULT_SINCE_MINUTES,
        metavar="MINUTES",
        help=f"count the decisions of the last MINUTES (default: {DEFAULT_SINCE_MINUTES:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the same report as JSON")
    return parser


def find_target(stack: str | None, region: str | None) -> Target:
    """resolve_target's, but no credentials stays NoCredentialsError: run_reported's line then says what to do."""
    from botocore.exceptions import NoCredentialsError

    try:
        return resolve_target(stack, region)
    except TargetError as exc:
        if isinstance(exc.__cause__, NoCredentialsError):
            raise exc.__cause__ from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from botocore.exceptions import EndpointConnectionError

    def work() -> Health:
        target = find_target(args.stack, args.region)
        try:
            return gather(target, args.stack, args.since)
        except EndpointConnectionError as exc:
            if not target.endpoint_url:
                raise
            raise TwinUnreachable(where=target.where, error=exc) from exc

    health, code = run_reported("status", work)
    if health is None:
        return code
    print(json.dumps(health.as_dict(), indent=2) if args.json else render(health))
    return 0


if __name__ == "__main__":
    sys.exit(main())
