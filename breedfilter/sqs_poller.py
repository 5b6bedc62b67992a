"""Play Lambda's SQS event source mapping against a local queue: receive a batch, build the SQS event,
call the handler, delete what succeeded, and let the reported failures return to the queue (receive
count -> dead-letter queue after ``maxReceiveCount``, enforced by the queue's redrive policy).

Unlike Lambda, failed messages are made visible again after ``retry_delay_seconds`` rather than the full
visibility timeout, so local runs do not wait minutes.

    python -m breedfilter.sqs_poller QUEUE_URL     # with the router's environment set: drains the queue once
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from breedfilter.lambda_runtime import Handler, LambdaContext


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
        retry_delay_seconds: int = 0,
        context_factory: Callable[[], Any] | None = None,
    ):
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.retry_delay_seconds = retry_delay_seconds
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.context_factory = context_factory or (
            lambda: LambdaContext(function_name=function_name, timeout_seconds=function_timeout)
        )

    def poll_once(self, wait_seconds: int = 0) -> PollReport:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return PollReport()
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
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.retry_delay_seconds,
                    }
                    for i, m in enumerate(failed)
                ],
            )
        return PollReport(batches=1, received=len(messages), succeeded=len(done), failed=len(failed))

    def drain(self, *, max_seconds: float = 60.0, idle_polls: int = 2) -> PollReport:
        """Poll until the queue stays empty for ``idle_polls`` polls in a row (or ``max_seconds`` pass)."""
        total, idle = PollReport(), 0
        deadline = time.monotonic() + max_seconds
        while idle < idle_polls and time.monotonic() < deadline:
            report = self.poll_once(wait_seconds=0)
            total.add(report)
            if report.received:
                idle = 0
            else:
                idle += 1
                time.sleep(max(0.05, float(self.retry_delay_seconds)) if total.failed else 0.05)
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

    from breedfilter.lambda_runtime import load_handler

    source = SqsEventSource(boto3.client("sqs"), sys.argv[1], load_handler())
    print(source.drain())
