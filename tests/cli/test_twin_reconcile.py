"""The reconciler on the local twin: a lost notification is found and routed, once by hand, once on its schedule.

The twin runs the deployed function's code (routing.reconcile) on its scaled clock: template.yaml's schedule and
grace period times the twin's time scale.
"""

from __future__ import annotations

import time

from breedfilter.twin.local_twin import LocalTwin
from breedfilter.twin.stand_in_model import ColourModel
from tests.images import image_bytes


def lose_every_notification(twin: LocalTwin) -> int:
    """Delete what S3 sent, as if it never arrived (S3 notifications are at-least-once, sometimes late)."""
    assert twin.stack is not None
    sqs, lost = twin.client("sqs"), 0
    while True:
        messages = sqs.receive_message(QueueUrl=twin.stack.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return lost
        for message in messages:
            sqs.delete_message(QueueUrl=twin.stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
            lost += 1


def test_reconcile_on_the_twin_routes_an_object_whose_notification_was_lost():
    with LocalTwin(ColourModel(), time_scale=0.001) as twin:
        twin.drop("uploads/red.jpg", image_bytes("red"))
        twin.drop("uploads/blue.jpg", image_bytes("blue"))
        assert lose_every_notification(twin) == 2
        assert twin.drain(max_seconds=10).received == 0  # nothing to route: stuck in the inbox, silently
        young = twin.reconcile(grace_minutes=60)
        assert young["stuck"] == 0 and young["too_young"] == 2 and young["sent"] == 0
        found = twin.reconcile(grace_minutes=0)
        assert (found["stuck"], found["lost"], found["sent"]) == (2, 2, 2)
        twin.drain(max_seconds=30)
        again = twin.reconcile(grace_minutes=0)
        snapshot = twin.snapshot()
    assert again["stuck"] == 0
    assert snapshot.inbox == [] and snapshot.queue_depth == 0 and snapshot.dlq_depth == 0
    assert sorted((i["source_key"], i["status"]) for i in snapshot.items) == [
        ("uploads/blue.jpg", "SORTED"),
        ("uploads/red.jpg", "SORTED"),
    ]


def test_the_twin_runs_the_reconciler_on_its_schedule_when_live():
    with LocalTwin(ColourModel(), time_scale=0.001) as twin:  # period 300 s -> 1 s (at least), grace 0.9 s
        twin.drop("uploads/green.jpg", image_bytes("green"))
        lose_every_notification(twin)
        twin.start_polling(wait_seconds=1, reconcile=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not twin.snapshot().items:
            time.sleep(0.2)
        twin.stop_polling()
        snapshot = twin.snapshot()
    assert [(i["source_key"], i["status"]) for i in snapshot.items] == [("uploads/green.jpg", "SORTED")]
    assert snapshot.inbox == []
