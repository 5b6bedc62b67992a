"""``breedfilter redrive``: move dead-lettered messages back to the inbox queue, once the cause is fixed.

On AWS it starts an SQS message move task (StartMessageMoveTask, the console's "Start DLQ redrive"). Where that
API is not available (the local twin: moto has none) it moves them itself: receive from the dead-letter queue,
send the same body and message attributes to the inbox queue, delete from the dead-letter queue (a crash in
between leaves a duplicate, which the router absorbs). It says which way it moved them.

    breedfilter redrive [--stack NAME] [--max N] [--wait]

``--max N`` moves at most N messages (by receive/send/delete: a move task takes them all).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from breedfilter.reconcile_cli import Target, resolve_target, run_reported

MOVE_TASK = "StartMessageMoveTask"
BY_HAND = "receive/send/delete"
# Error codes of a server that does not know the action (an emulator, an old endpoint).
UNAVAILABLE_CODES = {
    "InvalidAction",
    "UnknownOperationException",
    "UnknownOperation",
    "NotImplemented",
    "NotImplementedException",
    "501",
}
RECEIVE_VISIBILITY_SECONDS = 60


@dataclass
class RedriveReport:
    way: str  # MOVE_TASK or BY_HAND
    dlq_url: str
    queue_url: str
    waiting: int  # messages in the dead-letter queue before (visible)
    moved: int | None = None  # by hand: exactly; move task: as reported when --wait, else None
    failed: int = 0
    why_by_hand: str | None = None
    task_handle: str | None = None
    task_status: str | None = None
    dlq_arn: str | None = None


def queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def visible_messages(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def move_task_unavailable(exc: BaseException) -> str | None:
    """Why StartMessageMoveTask cannot be used here, or None when ``exc`` is a real refusal to report."""
    if isinstance(exc, NotImplementedError):  # moto in-process
        return f"the SQS API here does not implement {MOVE_TASK} ({exc})"
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in UNAVAILABLE_CODES or status == 501:
        return f"the SQS API here does not know {MOVE_TASK} ({code or status})"
    message = str(error.get("Message", ""))
    if status >= 500 and message.lstrip().startswith("<"):  # an HTML error page: not SQS answering (moto server)
        return f"the SQS endpoint here failed on {MOVE_TASK} (HTTP {status}, not an SQS error): no move tasks"
    return None


def start_move_task(
    sqs: Any, dlq_url: str, queue_url: str, *, wait: bool, starter: Any = None, poll_seconds: float = 5.0
) -> dict[str, Any]:
    """Start a move task from the dead-letter queue to ``queue_url`` (``starter``: the client that asks)."""
    dlq_arn, destination_arn = queue_arn(sqs, dlq_url), queue_arn(sqs, queue_url)
    started = (starter or sqs).start_message_move_task(SourceArn=dlq_arn, DestinationArn=destination_arn)
    task = {"TaskHandle": started.get("TaskHandle"), "Status": "RUNNING", "SourceArn": dlq_arn}
    while wait:
        tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=1).get("Results", [])
        if tasks:
            task = {**task, **tasks[0]}
        if task.get("Status") != "RUNNING":
            break
        time.sleep(poll_seconds)
    return task


def move_by_hand(sqs: Any, dlq_url: str, queue_url: str, limit: int) -> tuple[int, int]:
    """Receive, send the same body and attributes, delete: at most ``limit`` messages. (moved, failed)"""
    moved = failed = 0
    while moved + failed < limit:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=min(10, limit - moved - failed),
            WaitTimeSeconds=1,
            VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["AWSTraceHeader"],
        ).get("Messages", [])
        if not messages:
            break
        entries = []
        for i, message in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": message["Body"]}
            attributes = {name: _attribute(value) for name, value in message.get("MessageAttributes", {}).items()}
            if attributes:
                entry["MessageAttributes"] = attributes
            trace = message.get("Attributes", {}).get("AWSTraceHeader")
            if trace:
                entry["MessageSystemAttributes"] = {"AWSTraceHeader": {"StringValue": trace, "DataType": "String"}}
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent = {entry["Id"] for entry in response.get("Successful", [])}
        done = [m for i, m in enumerate(messages) if str(i) in sent]
        left = [m for i, m in enumerate(messages) if str(i) not in sent]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        if left:  # back into view at once, still dead-lettered; counted, not retried in this run
            sqs.change_message_visibility_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(left)
                ],
            )
            if not done:
                failed += len(left)
                break
        moved += len(done)
        failed += len(left)
    return moved, failed


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A received message attribute as SendMessage takes it (the empty list values dropped)."""
    return {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}


def redrive(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    max_messages: int | None = None,
    wait: bool = False,
    starter: Any = None,
) -> RedriveReport:
    """Move the dead-letter queue's messages to ``queue_url``: a move task where SQS has them, else by hand.

    ``starter`` is the client that tries StartMessageMoveTask (one attempt is enough to learn it is missing).
    """
    waiting = visible_messages(sqs, dlq_url)
    report = RedriveReport(way=MOVE_TASK, dlq_url=dlq_url, queue_url=queue_url, waiting=waiting)
    if max_messages is None:
        try:
            task = start_move_task(sqs, dlq_url, queue_url, wait=wait, starter=starter)
        except Exception as exc:
            why = move_task_unavailable(exc)
            if why is None:
                raise
            report.why_by_hand = why
        else:
            report.task_handle = task.get("TaskHandle")
            report.task_status = task.get("Status")
            report.dlq_arn = task.get("SourceArn")
            if "ApproximateNumberOfMessagesMoved" in task:
                report.moved = int(task["ApproximateNumberOfMessagesMoved"])
            return report
    else:
        report.why_by_hand = f"--max {max_messages} (a move task moves every message)"
    report.way = BY_HAND
    # Bounded by what was waiting: messages dead-lettered again meanwhile are not chased round in circles.
    limit = waiting if max_messages is None else min(max_messages, waiting)
    report.moved, report.failed = move_by_hand(sqs, dlq_url, queue_url, limit)
    return report


# -- the command --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breedfilter redrive",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--max", type=int, metavar="N", help="move at most N messages (default: all)")
    parser.add_argument("--wait", action="store_true", help="wait for a move task to finish")
    parser.add_argument("--stack", help="a deployed stack's name (reads its outputs); default: the local twin")
    parser.add_argument("--region", help="AWS region (default: your profile's)")
    return parser


def render(report: RedriveReport, where: str) -> str:
    lines = [f"dead-letter queue {report.dlq_url} on {where}: {report.waiting} messages waiting"]
    if report.way == MOVE_TASK:
        moved = f"{report.moved} moved, " if report.moved is not None else ""
        lines.append(
            f"started a message move task ({MOVE_TASK}) to {report.queue_url}: {moved}status {report.task_status}"
        )
        lines.append(f"  task handle {report.task_handle}")
        lines.append(f"  follow it: aws sqs list-message-move-tasks --source-arn {report.dlq_arn}")
    else:
        lines.append(
            f"moved {report.moved} messages to {report.queue_url} by {BY_HAND} (same bodies and attributes), "
            f"because {report.why_by_hand}" + (f"; {report.failed} could not be sent and stay" if report.failed else "")
        )
    lines.append("the router routes them as they arrive; breedfilter results --counts shows the outcome")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.max is not None and args.max < 1:
        print("redrive: --max must be at least 1", file=sys.stderr)
        return 2

    def work() -> tuple[Target, RedriveReport]:
        target = resolve_target(args.stack, args.region)
        return target, redrive(
            target.client("sqs"),
            target.dlq_url(),
            target.queue_url(),
            max_messages=args.max,
            wait=args.wait,
            starter=target.client("sqs", attempts=1),
        )

    done, code = run_reported("redrive", work)
    if done is None:
        return code
    target, report = done
    print(render(report, target.where))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
