"""Play Lambda's SQS event source mapping against a local queue: receive a batch, build the SQS event,
call the handler, delete what succeeded, and let the reported failures return to the queue (receive
count -> dead-letter queue after ``maxReceiveCount``, enforced by the queue's redrive policy).

Retries on a scaled clock. Lambda leaves a failed message alone: it comes back when the queue's visibility
timeout (template.yaml: 390 s, counted from the receive) runs out, and after ``maxReceiveCount`` receives
SQS moves it to the dead-letter queue. The poller does the same, with the timeout multiplied by
``time_scale``: a failed message reappears ``VisibilityTimeout x time_scale`` seconds after it was
received (390 s x 0.01 = 3.9 s by default), so a local outage is survived or dead-lettered after the same
number of receives as in the cloud, in proportionally less time (5 receives: about 20 s instead of 33 min).

- ``time_scale``: the constructor's argument, else ``$BREEDFILTER_TWIN_TIME_SCALE``, else 0.01. 1 waits the
  real timeout; 0 makes failed messages visible at once.
- The queue's own ``VisibilityTimeout`` and ``RedrivePolicy`` are read from the queue (``LocalAws``
  creates it from template.yaml) and left as they are; a batch is received with the full timeout, so a
  message is never redelivered while the handler still runs (Lambda's guarantee with visibility >= 6 x
  the function timeout). SQS takes whole seconds, so the poller makes each failed message visible at its
  exact scaled time itself (``release_due``; ``drain`` and the twin's live loop call it), and also sets
  its visibility to the scaled remainder rounded up, so it comes back even if nobody polls.

    python -m breedfilter.twin.sqs_poller QUEUE_URL     # with the router's environment set: drains the queue once
                                                   # (time scale 1 there: a real queue's real timeout)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from breedfilter.twin.lambda_runtime import Handler, LambdaContext

TIME_SCALE_VARIABLE = "BREEDFILTER_TWIN_TIME_SCALE"
DEFAULT_TIME_SCALE = 0.01


def twin_time_scale(value: float | str | None = None) -> float:
    """``value``, else ``$BREEDFILTER_TWIN_TIME_SCALE``, else 0.01: how much shorter the twin's waits are."""
    raw = value if value is not None else os.environ.get(TIME_SCALE_VARIABLE) or DEFAULT_TIME_SCALE
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{TIME_SCALE_VARIABLE}={raw!r}: a number such as 0.01 (1 = real time)") from None
    if not 0 <= scale <= 1:  # NaN fails it too
        raise ValueError(f"time scale {raw!r}: between 0 (no wait) and 1 (real time)")
    return scale


@dataclass
class PollReport:
    batches: int = 0
    received: int = 0
    succeeded: int = 0
    failed: int = 0

    def add(self, other: PollReport) -> None:
        self.batches += other.batches
        self.received += other.received
        self.succeeded += other.succeeded
        self.failed += other.failed


class SqsEventSource:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        *,
        batch_size: int = 10,
        function_name: str = "breedfilter-router",
        function_timeout: float = 60.0,
        time_scale: float | None = None,
        context_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.time_scale = twin_time_scale(time_scale)
        self.clock = clock
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn", "VisibilityTimeout", "RedrivePolicy"]
        )["Attributes"]
        self.queue_arn = attributes["QueueArn"]
        self.visibility_timeout = int(attributes.get("VisibilityTimeout", 30))
        redrive = json.loads(attributes["RedrivePolicy"]) if attributes.get("RedrivePolicy") else {}
        self.max_receive_count: int | None = int(redrive["maxReceiveCount"]) if redrive else None
        self.context_factory = context_factory or (
            lambda: LambdaContext(function_name=function_name, timeout_seconds=function_timeout)
        )
        self._releases: dict[str, float] = {}  # receipt handle -> when (clock) the failed message reappears

    @property
    def retry_after_seconds(self) -> float:
        """How long a failed message stays invisible after its receive: the visibility timeout, scaled."""
        return self.visibility_timeout * self.time_scale

    def poll_once(self, wait_seconds: int = 0) -> PollReport:
        """Release what is due, receive one batch (long polling no later than the next release), handle it."""
        next_release = self.release_due()
        if next_release is not None:
            wait_seconds = min(wait_seconds, int(next_release))
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return PollReport()
        received_at = self.clock()
        event = {"Records": [self._record(m) for m in messages]}
        try:
            response = self.handler(event, self.context_factory()) or {}
            failed_ids = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:  # the whole batch failed, as when a Lambda invocation errors
            failed_ids = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        if failed:
            self._schedule_release(failed, due=received_at + self.retry_after_seconds)
        return PollReport(batches=1, received=len(messages), succeeded=len(done), failed=len(failed))

    def _schedule_release(self, failed: list[dict[str, Any]], due: float) -> None:
        """Failed messages reappear at ``due``: exactly, by ``release_due``; at the latest, by SQS itself."""
        remaining = due - self.clock()
        if remaining > 0:
            for message in failed:
                self._releases[message["ReceiptHandle"]] = due
        self._set_visibility([m["ReceiptHandle"] for m in failed], max(0, math.ceil(remaining)))

    def release_due(self) -> float | None:
        """Make the failed messages whose scaled timeout ran out visible; seconds until the next one, or None."""
        now = self.clock()
        due = [handle for handle, at in self._releases.items() if at <= now]
        for handle in due:
            del self._releases[handle]
        if due:
            self._set_visibility(due, 0)
        return self.next_release_in()

    def next_release_in(self) -> float | None:
        """Seconds until the next failed message is due back (None: none is waiting)."""
        if not self._releases:
            return None
        return max(0.0, min(self._releases.values()) - self.clock())

    def _set_visibility(self, handles: list[str], seconds: int) -> None:
        for start in range(0, len(handles), 10):
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                    for i, handle in enumerate(handles[start : start + 10])
                ],
            )

    def drain(self, *, max_seconds: float = 60.0, idle_polls: int = 2) -> PollReport:
        """Poll until the queue stays empty for ``idle_polls`` polls in a row and no failed message is still
        waiting out its (scaled) visibility timeout, or until ``max_seconds`` pass."""
        total, idle = PollReport(), 0
        deadline = time.monotonic() + max_seconds
        while idle < idle_polls and time.monotonic() < deadline:
            report = self.poll_once(wait_seconds=0)
            total.add(report)
            if report.received:
                idle = 0
                continue
            waiting = self.next_release_in()
            if waiting is not None:  # a failed message comes back later: wait for it, as Lambda would
                idle = 0
                time.sleep(min(waiting, max(0.0, deadline - time.monotonic())) + 0.001)
            else:
                idle += 1
                time.sleep(0.05)
        return total

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        body = message["Body"]
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": body,
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.queue_arn.split(":")[3],
        }


if __name__ == "__main__":
    import boto3

    from breedfilter.twin.lambda_runtime import load_handler

    source = SqsEventSource(boto3.client("sqs"), sys.argv[1], load_handler(), time_scale=1.0)
    print(source.drain())
