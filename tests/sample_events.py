"""Walking the S3 notification documents inside a sample event: the event itself (direct S3 -> Lambda), or
each SQS record's body, with SNS envelopes unwrapped. Bodies that are not JSON (poison samples) are skipped."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from routing.events import is_sqs_event

Notification = dict[str, Any]


def map_notifications(event: dict[str, Any], change: Callable[[Notification], Notification]) -> dict[str, Any]:
    """Apply ``change`` to every notification in ``event``, writing SQS bodies (and SNS messages) back."""
    if not is_sqs_event(event):
        return change(event)
    for record in event["Records"]:
        try:
            body = json.loads(record["body"])
        except ValueError:
            continue
        if body.get("Type") == "Notification":
            body["Message"] = json.dumps(change(json.loads(body["Message"])))
        else:
            body = change(body)
        record["body"] = json.dumps(body)
    return event


def notifications(event: dict[str, Any]) -> list[Notification]:
    """The notifications in ``event``, read without changing it."""
    found: list[Notification] = []
    map_notifications(copy.deepcopy(event), lambda notification: found.append(notification) or notification)
    return found
