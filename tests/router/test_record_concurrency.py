"""The router routes a batch's records RECORD_CONCURRENCY at a time: the endpoint sees them together, never more
than that many from one invocation, and each record keeps its own failure and its own log keys.

    .venv/bin/python -m pytest tests/router/test_record_concurrency.py
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from breedfilter.twin.endpoint_server import EndpointServer
from breedfilter.twin.stand_in_model import ColourModel
from tests.conftest import Harness, build_harness
from tests.endpoint_faults import ScriptedModel
from tests.images import image_bytes

SAFETY_S = 120.0  # only so that a broken router fails instead of hanging; never reached when it works


class ConcurrencyProbe:
    """The stand-in model, counting requests in flight; the first ``meet`` requests wait for each other."""

    def __init__(self, meet: int) -> None:
        self.model = ColourModel()
        self.meet = threading.Barrier(meet) if meet > 1 else None
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict[str, str]:
        return self.model.identity

    def __call__(self, body: bytes, content_type: str) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            meets = self.meet is not None and self.calls <= self.meet.parties
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if meets:
                with contextlib.suppress(threading.BrokenBarrierError):  # the test sees it broken
                    self.meet.wait(timeout=SAFETY_S)
            return self.model(body, content_type)
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def probed(local_aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def make(concurrency: int, meet: int) -> tuple[Harness, ConcurrencyProbe]:
        probe = ConcurrencyProbe(meet)
        server = EndpointServer(ScriptedModel(probe), "breedfilter-classifier").start()
        servers.append(server)
        harness = build_harness(
            local_aws, server, ScriptedModel(probe), monkeypatch, env={"RECORD_CONCURRENCY": str(concurrency)}
        )
        return harness, probe

    servers: list[EndpointServer] = []
    yield make
    for server in servers:
        server.stop()


def _batch_of(harness: Harness, count: int) -> dict[str, Any]:
    colours = ["red", "green", "blue"]
    for i in range(count):
        harness.put(f"photo-{i}.jpg", image_bytes(colours[i % 3]))
    messages = []
    while len(messages) < count:
        messages += harness.sqs.receive_message(QueueUrl=harness.stack.queue_url, MaxNumberOfMessages=10)["Messages"]
    return {"Records": [harness.source._record(message) for message in messages]}


def test_a_batch_is_routed_concurrency_records_at_a_time(probed: Any) -> None:
    harness, probe = probed(concurrency=3, meet=3)
    event = _batch_of(harness, 7)
    assert harness.invoke(event) == {"batchItemFailures": []}
    assert probe.meet is not None and not probe.meet.broken  # three requests were in flight together
    assert probe.most_in_flight == 3  # and never more
    assert sorted(item["source_key"] for item in harness.items()) == [f"photo-{i}.jpg" for i in range(7)]
    assert harness.keys(harness.inbox) == []


def test_concurrency_one_routes_records_one_after_another(probed: Any) -> None:
    harness, probe = probed(concurrency=1, meet=1)
    assert harness.invoke(_batch_of(harness, 4)) == {"batchItemFailures": []}
    assert probe.most_in_flight == 1
    assert len(harness.items()) == 4


def test_each_record_fails_alone_and_logs_under_its_own_message(probed: Any) -> None:
    harness, probe = probed(concurrency=4, meet=3)
    event = _batch_of(harness, 4)
    poison = {**event["Records"][1], "body": "not json"}
    event["Records"][1] = poison
    import app  # the handler's module, as the harness loaded it

    written = io.StringIO()
    handler = logging.StreamHandler(written)  # formatted in the logging thread, as Lambda's stdout handler does
    handler.setFormatter(app.logger.registered_formatter)
    app.logger._logger.addHandler(handler)
    try:
        answer = harness.invoke(event)
    finally:
        app.logger._logger.removeHandler(handler)
    assert answer == {"batchItemFailures": [{"itemIdentifier": poison["messageId"]}]}
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    routed = [line for line in lines if line.get("message") == "routed"]
    assert len(routed) == 3 and not probe.meet.broken  # the three requests were in flight together
    by_message = {record["messageId"]: record for record in event["Records"]}
    for line in routed:
        body = json.loads(by_message[line["correlation_id"]]["body"])
        key = body["Records"][0]["s3"]["object"]["key"]
        assert key in line["source"] and line["destination"].endswith(f"/{key}")
    assert len({line["correlation_id"] for line in routed}) == 3
    unreadable = [line for line in lines if line.get("message", "").startswith("unreadable message")]
    assert [line["correlation_id"] for line in unreadable] == [poison["messageId"]]
