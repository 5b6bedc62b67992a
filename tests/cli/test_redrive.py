"""Redrive: after an outage, dead-lettered messages go back to the inbox queue (a message move task on AWS; by
receive/send/delete where SQS has none, as on the twin's moto) and the router routes them.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from breedfilter import redrive as rd
from tests.images import image_bytes
from tests.support import assert_routed_once


def outage(harness, keys: dict[str, str]) -> None:
    """The endpoint fails every call until each message has been dead-lettered; then it is back."""
    harness.model.script(*["fail"] * (len(keys) * harness.stack.max_receive_count * 3))
    for key, colour in keys.items():
        harness.put(key, image_bytes(colour))
    report = harness.drain()
    assert report.succeeded == 0
    assert harness.queue_depth() == 0 and harness.queue_depth(harness.stack.dlq_url) == len(keys)
    assert sorted(harness.keys(harness.inbox)) == sorted(keys)  # nothing lost meanwhile
    harness.model.reset()  # the endpoint is back


def starter(harness):
    """A client that asks once (moto's server answers StartMessageMoveTask with an HTML 500)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs",
        endpoint_url=harness.aws.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )


def test_after_an_outage_every_message_moves_back_and_routes(harness):
    keys = {"out/a.jpg": "red", "out/b.jpg": "green", "out/c.jpg": "blue"}
    outage(harness, keys)
    report = rd.redrive(harness.sqs, harness.stack.dlq_url, harness.stack.queue_url, starter=starter(harness))
    assert report.way == rd.BY_HAND and report.waiting == 3 and report.moved == 3 and report.failed == 0
    assert "not an SQS error" in report.why_by_hand
    assert harness.queue_depth(harness.stack.dlq_url) == 0 and harness.queue_depth() == 3
    harness.drain()
    assert_routed_once(harness, keys)


def test_bodies_and_attributes_are_kept(harness):
    dlq = harness.stack.dlq_url
    attributes = {
        "origin": {"DataType": "String", "StringValue": "test"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        "count": {"DataType": "Number", "StringValue": "3"},
    }
    harness.sqs.send_message(QueueUrl=dlq, MessageBody='{"Event": "s3:TestEvent"}', MessageAttributes=attributes)
    report = rd.redrive(harness.sqs, dlq, harness.stack.queue_url, starter=starter(harness))
    assert report.moved == 1
    (moved,) = harness.sqs.receive_message(
        QueueUrl=harness.stack.queue_url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
    )["Messages"]
    assert moved["Body"] == '{"Event": "s3:TestEvent"}'
    assert {
        k: {f: v[f] for f in ("DataType", "StringValue", "BinaryValue") if f in v}
        for k, v in moved["MessageAttributes"].items()
    } == attributes


def test_max_moves_only_that_many(harness):
    for i in range(3):
        harness.sqs.send_message(QueueUrl=harness.stack.dlq_url, MessageBody=f'{{"n": {i}}}')
    report = rd.redrive(harness.sqs, harness.stack.dlq_url, harness.stack.queue_url, max_messages=2)
    assert report.way == rd.BY_HAND and report.moved == 2 and "--max 2" in report.why_by_hand
    assert harness.queue_depth(harness.stack.dlq_url) == 1 and harness.queue_depth() == 2


def test_cli_redrives_the_twin_and_says_how(harness, capsys):
    keys = {"cli/x.jpg": "red", "cli/y.jpg": "blue"}
    outage(harness, keys)
    capsys.readouterr()
    assert rd.main([]) == 0
    out = capsys.readouterr().out
    assert (
        f"dead-letter queue {harness.stack.dlq_url} on the local twin at {harness.aws.url}: 2 messages waiting" in out
    )
    assert f"moved 2 messages to {harness.stack.queue_url} by receive/send/delete (same bodies and attributes)" in out
    assert "because the SQS endpoint here failed on StartMessageMoveTask" in out
    harness.drain()
    assert_routed_once(harness, keys)
    capsys.readouterr()
    assert rd.main(["--max", "0"]) == 2


class FakeSqs:
    """Just enough of SQS with move tasks (real AWS) to check the move-task path."""

    def __init__(self, error: BaseException | None = None):
        self.error = error
        self.started: list[dict] = []
        self.polls = 0

    def get_queue_attributes(self, QueueUrl, AttributeNames):
        if AttributeNames == ["QueueArn"]:
            return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:1:" + QueueUrl.rsplit("/", 1)[1]}}
        return {"Attributes": {"ApproximateNumberOfMessages": "7"}}

    def start_message_move_task(self, **kwargs):
        if self.error:
            raise self.error
        self.started.append(kwargs)
        return {"TaskHandle": "handle-1"}

    def list_message_move_tasks(self, SourceArn, MaxResults):
        self.polls += 1
        status = "RUNNING" if self.polls < 2 else "COMPLETED"
        return {"Results": [{"Status": status, "ApproximateNumberOfMessagesMoved": 7, "SourceArn": SourceArn}]}


def test_on_aws_a_message_move_task_is_started(monkeypatch):
    monkeypatch.setattr(rd.time, "sleep", lambda s: None)
    sqs = FakeSqs()
    report = rd.redrive(sqs, "https://sqs/1/inbox-dlq", "https://sqs/1/inbox", wait=True)
    assert sqs.started == [
        {"SourceArn": "arn:aws:sqs:us-east-1:1:inbox-dlq", "DestinationArn": "arn:aws:sqs:us-east-1:1:inbox"}
    ]
    assert report.way == rd.MOVE_TASK and report.task_handle == "handle-1"
    assert report.task_status == "COMPLETED" and report.moved == 7 and report.waiting == 7
    text = rd.render(report, "stack breedfilter")
    assert (
        "StartMessageMoveTask" in text
        and "list-message-move-tasks --source-arn arn:aws:sqs:us-east-1:1:inbox-dlq" in text
    )


def client_error(code: str, status: int, message: str = "no") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "StartMessageMoveTask",
    )


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (NotImplementedError("The start_message_move_task action has not been implemented"), True),
        (client_error("InvalidAction", 400), True),
        (client_error("500", 500, "<!doctype html><title>500 Internal Server Error</title>"), True),
        (client_error("NotImplemented", 501), True),
        (client_error("AccessDenied", 403), False),
        (client_error("InvalidParameterValue", 400, "Source queue must be configured as a Dead Letter Queue."), False),
        (client_error("InternalError", 500, "We encountered an internal error."), False),
    ],
)
def test_which_errors_mean_no_move_tasks_here(error, unavailable):
    assert (rd.move_task_unavailable(error) is not None) == unavailable


def test_a_real_refusal_is_reported_not_worked_around():
    sqs = FakeSqs(error=client_error("AccessDenied", 403, "not authorized to perform sqs:StartMessageMoveTask"))
    with pytest.raises(ClientError, match="AccessDenied"):
        rd.redrive(sqs, "https://sqs/1/inbox-dlq", "https://sqs/1/inbox")
