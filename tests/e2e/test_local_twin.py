"""End to end on the local twin as `make demo` wires it: moto, a trained model.tar.gz served through
training/inference.py, the router fed by the SQS event source. Faults on top of a mixed batch: a duplicate
notification, a router crash between the copy and the delete, an endpoint that fails twice then recovers,
and a poison message. Every object ends in exactly one place with one results item; the inbox and the queue
end empty and the dead-letter queue holds exactly the poison message.
"""

from __future__ import annotations

import gc
import io
import json
import os
import random
import socket
import threading

import pytest

from breedfilter.twin.artifact_model import ArtifactModel
from breedfilter.twin.local_twin import LocalTwin
from tests.endpoint_faults import ScriptedModel
from tests.image_datasets import COLOURS, make_image
from tests.support import crash_once


def jpeg(colour: tuple[int, int, int], seed: int) -> bytes:
    buffer = io.BytesIO()
    make_image(colour, 48, random.Random(seed)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(trained_artifact) -> ScriptedModel:
    return ScriptedModel(ArtifactModel(trained_artifact))


def good_objects() -> dict[str, bytes]:
    objects = {}
    for n, colour in enumerate(COLOURS.values()):
        for i in range(3):
            objects[f"uploads/{n}-{i}.jpg"] = jpeg(colour, seed=10 * n + i)
    objects["uploads/my dog Ünïcødé 狗 +1.jpg"] = jpeg(COLOURS["001.Red_Thing"], seed=99)
    return objects


BAD = {
    "uploads/notes.jpg": (b"a text file somebody named .jpg\n", "not_an_image"),
    "uploads/empty.png": (b"", "empty"),
    "uploads/phone photo.heic": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "unsupported_format"),
}


def test_mixed_batch_with_faults_ends_in_exactly_one_place_each(served, monkeypatch):
    served.reset()
    good = good_objects()
    truncated = jpeg((200, 40, 40), seed=5)[:500]
    # failed messages come back after the template's 390 s visibility timeout x 0.001 (0.39 s), the poison one
    # maxReceiveCount times: the scaled clock itself is checked in tests/cli/test_twin_fidelity.py
    with LocalTwin(served, time_scale=0.001) as twin:
        results_table = twin.router_module("routing.results").ResultsTable  # the twin's own cold start
        crashed = crash_once(monkeypatch, results_table, "put_once")  # after the copy, before record and delete
        served.script("fail", "fail")  # the endpoint fails twice, then recovers
        for key, body in good.items():
            twin.drop(key, body)
        for key, (body, _) in BAD.items():
            twin.drop(key, body)
        twin.drop("uploads/truncated.jpg", truncated)
        twin.duplicate_notification()
        twin.client("sqs").send_message(QueueUrl=twin.stack.queue_url, MessageBody="{not json")  # poison

        report = twin.drain()
        snapshot = twin.snapshot()

    objects = len(good) + len(BAD) + 1
    assert crashed == ["put_once"]
    # two endpoint failures and one crash return their messages once each; the poison one comes back
    # until the queue's receive count moves it to the DLQ
    assert report.failed == 2 + 1 + twin.stack.max_receive_count
    assert report.succeeded == objects + 1  # every object, plus the duplicate notification (no work)
    items = {item["source_key"]: item for item in snapshot.items}
    assert len(snapshot.items) == len(items) == objects
    assert len(snapshot.sorted) == objects
    for key in good:
        assert items[key]["status"] in ("SORTED", "REVIEW")
        assert items[key]["top_label"] in {name.split(".", 1)[1] for name in COLOURS}
        # each copy exists; its exact name (a revision suffix, say) is the router's business
        assert items[key]["destination_key"] in snapshot.sorted
    for key, (_, reason) in BAD.items():
        assert (items[key]["status"], items[key]["reason"]) == ("REJECTED", reason)
    assert (items["uploads/truncated.jpg"]["status"], items["uploads/truncated.jpg"]["reason"]) == (
        "REJECTED",
        "model_rejected",
    )
    assert "cannot" in items["uploads/truncated.jpg"]["detail"].lower()  # inference.py's reason, no traceback
    assert snapshot.inbox == [] and snapshot.queue_depth == 0
    assert snapshot.dlq_depth == 1 and snapshot.dlq_bodies == ["{not json"]
    # the model saw each decodable-looking image once, plus the two failed calls (decisions are cached)
    assert len(served.calls) == len(good) + 1 + 2


def test_twin_stops_everything_and_gives_the_environment_back(served):
    before, threads = dict(os.environ), set(threading.enumerate())
    with LocalTwin(served) as twin:
        ports = [int(url.rsplit(":", 1)[1]) for url in (twin.aws.url, twin.endpoint.url)]
        assert os.environ["AWS_ENDPOINT_URL"] == twin.aws.url
        assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == twin.endpoint.url
        twin.start_polling(wait_seconds=1)
        twin.drop("uploads/live.jpg", jpeg((40, 60, 200), seed=1))
        for _ in range(1200):  # routed by the background poller, as `breedfilter local up` routes
            if twin.snapshot().items:
                break
            threading.Event().wait(0.1)
        assert [item["source_key"] for item in twin.snapshot().items] == ["uploads/live.jpg"]
    assert dict(os.environ) == before
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    gc.collect()  # the clients' pooled keep-alive connections close, so their server threads can end
    for thread in set(threading.enumerate()) - threads:
        thread.join(timeout=30)
    assert [t.name for t in set(threading.enumerate()) - threads] == []  # poller, endpoint, moto: all ended


def test_the_endpoint_answers_concurrent_requests_like_sequential_ones(served):
    """Concurrent requests are classified together (dynamic batching): the same labels, order and decisions as
    one at a time; probabilities agree to float rounding (a batched forward pass sums in another order)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    served.reset()
    bodies = [jpeg(colour, seed=i) for i, colour in enumerate(list(COLOURS.values()) * 4)]
    with LocalTwin(served) as twin:
        runtime = boto3.client("sagemaker-runtime")  # the twin's environment points it at the local endpoint

        def ask(body: bytes) -> str:
            answer = runtime.invoke_endpoint(EndpointName=twin.names.endpoint_name, ContentType="image/jpeg", Body=body)
            return answer["Body"].read().decode()

        sequential = [ask(body) for body in bodies]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(ask, bodies))
    for together, alone in zip(map(json.loads, concurrent), map(json.loads, sequential), strict=True):
        assert [(p["label"], p["index"]) for p in together["predictions"]] == [
            (p["label"], p["index"]) for p in alone["predictions"]
        ]
        assert [p["probability"] for p in together["predictions"]] == pytest.approx(
            [p["probability"] for p in alone["predictions"]], abs=1e-6
        )
        assert together["unknown_score"] == pytest.approx(alone["unknown_score"], abs=1e-5)
        assert {k: together[k] for k in ("known", "threshold", "model")} == {
            k: alone[k] for k in ("known", "threshold", "model")
        }
    assert len(served.calls) == 2 * len(bodies)
