"""A local AWS on 127.0.0.1: moto's server with the stack's buckets, queues and tables.

The inbox bucket notifies the inbox queue (as in template.yaml), the queue has template.yaml's visibility
timeout and redrives to its dead-letter queue after the template's ``maxReceiveCount`` receives, and the
tables have template.yaml's keys and indexes (read from the template by ``breedfilter.template``, so local
and cloud cannot drift).

S3 event notifications as S3 sends them: moto (5.2.5) builds ``s3.object`` with ``key``, ``size`` and
``eTag`` only. S3 adds ``versionId`` for an object in a versioning-enabled bucket (the inbox is one) and a
``sequencer``; without the version id the router would take its ETag path and leave an overwritten photo's
older version in the inbox. While a ``LocalAws`` server runs in this process, moto's event builder is
wrapped to add both (``s3_notifications_like_s3``); everything else in the message is moto's own, keys
included (percent-encoded by moto). ``LocalAws.start`` also installs ``breedfilter.twin.moto_s3_conditions``
(CopyObject's ``If-None-Match`` and copy-source ``If-Match``, which the router relies on) where it exists.

    python -m breedfilter.twin.local_aws      # starts it, provisions, prints the environment, waits for Ctrl-C
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from breedfilter.template import StackTemplate
from breedfilter.twin import moto_s3_conditions

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass(frozen=True)
class StackNames:
    """Local names for the stack's resources (the deployed stack's come from its outputs)."""

    inbox_bucket: str = "breedfilter-inbox-local"
    sorted_bucket: str = "breedfilter-sorted-local"
    inbox_queue: str = "breedfilter-inbox"
    dead_letter_queue: str = "breedfilter-inbox-dlq"
    results_table: str = "breedfilter-results"
    idempotency_table: str = "breedfilter-idempotency"
    endpoint_name: str = "breedfilter-classifier"
    function_name: str = "breedfilter-router"


@dataclass(frozen=True)
class Stack:
    names: StackNames
    queue_url: str
    queue_arn: str
    dlq_url: str
    visibility_timeout: int
    max_receive_count: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_environment(moto_url: str, endpoint_url: str | None = None) -> dict[str, str]:
    """Fake credentials and local endpoints: everything boto3 needs to never reach AWS."""
    env = {
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = endpoint_url
    return env


# -- S3 notifications as S3 sends them ---------------------------------------------------------------------

_patch_lock = threading.Lock()
_patch_users = 0
_original_event_builder: Callable[..., dict[str, Any]] | None = None
_sequencer_lock = threading.Lock()
_last_sequencer = 0


def _next_sequencer() -> str:
    """S3's ``sequencer``: a hex string that grows with each event (18 digits, as in S3's own events)."""
    global _last_sequencer
    with _sequencer_lock:
        _last_sequencer = max(time.time_ns(), _last_sequencer + 1)
        return f"{_last_sequencer:018X}"


def _with_version_and_sequencer(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(build)
    def build_like_s3(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = build(event_name, bucket, key, notification_id)
        version_id = getattr(key, "version_id", None)
        for record in event.get("Records", []):
            obj = record.get("s3", {}).get("object")
            if obj is None:
                continue
            # S3 names the version only where versioning made one ("null" is the id of an unversioned object)
            if version_id and version_id != "null":
                obj.setdefault("versionId", version_id)
            if str(getattr(event_name, "value", event_name)).startswith(("s3:ObjectCreated:", "s3:ObjectRemoved:")):
                obj.setdefault("sequencer", _next_sequencer())  # S3 sends it with PUTs and DELETEs
        return event

    build_like_s3.breedfilter_patch = True  # type: ignore[attr-defined]
    return build_like_s3


def install_s3_notification_patch() -> None:
    """Wrap moto's S3 event builder so notifications carry ``versionId`` and ``sequencer`` (counted: nests)."""
    global _patch_users, _original_event_builder
    from moto.s3 import notifications

    with _patch_lock:
        if _patch_users == 0:
            builder = getattr(notifications, "_get_s3_event", None)
            if builder is None or not callable(builder):
                raise RuntimeError(
                    "moto.s3.notifications._get_s3_event is gone (a newer moto?): breedfilter.twin.local_aws "
                    "must be taught where moto builds S3 event notifications"
                )
            if not getattr(builder, "breedfilter_patch", False):
                _original_event_builder = builder
                notifications._get_s3_event = _with_version_and_sequencer(builder)  # type: ignore[attr-defined]
        _patch_users += 1


def remove_s3_notification_patch() -> None:
    """Undo ``install_s3_notification_patch`` once its last user is done (moto's own builder comes back)."""
    global _patch_users, _original_event_builder
    from moto.s3 import notifications

    with _patch_lock:
        if _patch_users == 0:
            return
        _patch_users -= 1
        if _patch_users == 0 and _original_event_builder is not None:
            notifications._get_s3_event = _original_event_builder  # type: ignore[attr-defined]
            _original_event_builder = None


@contextlib.contextmanager
def s3_notifications_like_s3() -> Iterator[None]:
    """``with s3_notifications_like_s3():`` moto's S3 notifications carry ``versionId`` and ``sequencer``."""
    install_s3_notification_patch()
    try:
        yield
    finally:
        remove_s3_notification_patch()


class LocalAws:
    """moto's server on a free loopback port; ``with LocalAws() as aws: aws.provision()``.

    moto's server runs in this process (a thread), so the notification patch above applies to it.
    """

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._patched = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalAws:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        moto_s3_conditions.install()  # S3's conditional copies, which moto ignores (idempotent, for good)
        install_s3_notification_patch()
        self._patched = True
        try:
            self._server.start()
        except BaseException:
            self._unpatch()
            raise
        return self

    def stop(self) -> None:
        try:
            self._server.stop()
        finally:
            self._unpatch()

    def _unpatch(self) -> None:
        if self._patched:
            self._patched = False
            remove_s3_notification_patch()

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every resource (moto's reset API), for a clean slate between tests."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback URL we built
            pass

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
        )

    def provision(
        self,
        names: StackNames | None = None,
        *,
        template: StackTemplate | None = None,
        versioned_inbox: bool | None = None,
        max_receive_count: int | None = None,
        visibility_timeout: int | None = None,
    ) -> Stack:
        """Create the stack's resources. Settings default to template.yaml's: the inbox versioning parameter,
        and the inbox queue's ``VisibilityTimeout`` and ``RedrivePolicy.maxReceiveCount`` as the template
        resolves them (390 s and 5 with the parameter defaults). The local poller waits the visibility
        timeout on a scaled clock (``breedfilter.twin.sqs_poller``), so the queue itself keeps the real value.
        """
        names = names or StackNames()
        template = template or StackTemplate.load()
        if versioned_inbox is None:
            versioned_inbox = template.parameter_default("EnableInboxVersioning") == "true"
        queue_settings = inbox_queue_settings(template)
        if max_receive_count is None:
            max_receive_count = queue_settings["max_receive_count"]
        if visibility_timeout is None:
            visibility_timeout = queue_settings["visibility_timeout"]
        s3, sqs, dynamodb = self.client("s3"), self.client("sqs"), self.client("dynamodb")

        dlq_url = sqs.create_queue(QueueName=names.dead_letter_queue)["QueueUrl"]
        dlq_arn = _queue_arn(sqs, dlq_url)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        queue_url = sqs.create_queue(
            QueueName=names.inbox_queue,
            Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        queue_arn = _queue_arn(sqs, queue_url)

        for bucket in (names.inbox_bucket, names.sorted_bucket):
            s3.create_bucket(Bucket=bucket)
        if versioned_inbox:
            s3.put_bucket_versioning(Bucket=names.inbox_bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=names.inbox_bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        _drain_test_event(sqs, queue_url)

        for logical_id, table_name in (
            ("ResultsTable", names.results_table),
            ("IdempotencyTable", names.idempotency_table),
        ):
            dynamodb.create_table(TableName=table_name, **template.table_definition(logical_id))
        return Stack(names, queue_url, queue_arn, dlq_url, visibility_timeout, max_receive_count)


def router_environment(stack: Stack, template: StackTemplate | None = None, **overrides: str) -> dict[str, str]:
    """The router's environment as template.yaml declares it, with local names filled in."""
    template = template or StackTemplate.load()
    names = stack.names
    env = template.function_environment(
        "RouterFunction",
        resources={
            "SortedBucket": names.sorted_bucket,
            "InboxBucket": names.inbox_bucket,
            "ResultsTable": names.results_table,
            "IdempotencyTable": names.idempotency_table,
            "ClassifierEndpoint": names.endpoint_name,
        },
    )
    env["AWS_LAMBDA_FUNCTION_NAME"] = names.function_name
    env["ENDPOINT_NAME"] = names.endpoint_name  # the template names no endpoint without an artifact
    env.update(overrides)
    return env


def inbox_queue_settings(template: StackTemplate) -> dict[str, int]:
    """The inbox queue's ``VisibilityTimeout`` and redrive ``maxReceiveCount``, resolved from template.yaml."""
    props = template.resource("InboxQueue")["Properties"]
    resources = {"InboxDeadLetterQueue": StackNames().dead_letter_queue}
    redrive = template.resolve(props["RedrivePolicy"]["maxReceiveCount"], resources)
    return {
        "visibility_timeout": int(template.resolve(props["VisibilityTimeout"], resources)),
        "max_receive_count": int(redrive),
    }


def count_items(dynamodb: Any, table: str, *, page_size: int | None = None) -> int:
    """Items in a table: a ``Select=COUNT`` scan summed over every page (one page stops at 1 MB read).

    ``page_size`` (DynamoDB's ``Limit`` per page) only makes pages smaller, for tests of the paging.
    """
    config = {"PageSize": page_size} if page_size else {}
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT", PaginationConfig=config)
    return sum(page["Count"] for page in pages)


def scan_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of a table as plain Python values (a consistent, paginated scan)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [{k: deserializer.deserialize(v) for k, v in row.items()} for page in pages for row in page["Items"]]


def object_keys(s3: Any, bucket: str) -> list[str]:
    """Every key in a bucket, sorted (paginated)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def queue_depth(sqs: Any, url: str) -> int:
    """Messages in a queue, visible or in flight."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _drain_test_event(sqs: Any, queue_url: str) -> None:
    """S3 sends an ``s3:TestEvent`` when notifications are configured; the router would skip it anyway."""
    for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        if '"s3:TestEvent"' in message["Body"]:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def main() -> None:
    import time

    with LocalAws() as aws:
        stack = aws.provision()
        env = {**aws_environment(aws.url), **router_environment(stack)}
        for key, value in sorted(env.items()):
            print(f"export {key}={value}")
        print(f"# local AWS at {aws.url}; Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    os.environ.update(FAKE_CREDENTIALS)
    main()
