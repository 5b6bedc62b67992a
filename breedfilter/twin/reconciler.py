"""The reconciler on the local twin: the scheduled function's code (``routing.reconcile``) configured as
template.yaml configures ReconcilerFunction, and its schedule read from the template's ScheduleV2 event.

    used by breedfilter/twin/local_twin.py and ``breedfilter reconcile``; not run on its own
"""

from __future__ import annotations

import re
from typing import Any

from breedfilter import units
from breedfilter.template import StackTemplate
from breedfilter.twin.local_aws import Stack


def schedule_interval_seconds(template: StackTemplate | None = None) -> float:
    """The reconciler's period from template.yaml's ScheduleV2 event (``rate(5 minutes)`` -> 300.0)."""
    template = template or StackTemplate.load()
    events = template.resource("ReconcilerFunction")["Properties"].get("Events", {})
    expressions = [e["Properties"]["ScheduleExpression"] for e in events.values() if e.get("Type") == "ScheduleV2"]
    if not expressions:
        raise KeyError("ReconcilerFunction has no ScheduleV2 event in template.yaml")
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", str(expressions[0]).strip())
    if not match:
        raise ValueError(f"cannot read a period from {expressions[0]!r} (only rate(N unit) expressions)")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match[2].rstrip("s")]
    return float(int(match[1]) * unit)


def reconciler_environment(stack: Stack, template: StackTemplate | None = None) -> dict[str, str]:
    """ReconcilerFunction's environment as template.yaml declares it, with the local stack's names."""
    template = template or StackTemplate.load()
    names = stack.names
    return template.function_environment(
        "ReconcilerFunction",
        resources={
            "InboxBucket": names.inbox_bucket,
            "InboxQueue": stack.queue_url,  # !Ref of a queue is its URL
            "ResultsTable": names.results_table,
        },
    )


def twin_reconciler(stack: Stack, clients: Any, template: StackTemplate | None = None) -> Any:
    """A ``routing.reconcile.Reconciler`` for a running twin, configured from template.yaml.

    ``clients(service)`` makes a boto3 client for the twin (``LocalAws.client``). Call ``.run()`` on it every
    ``schedule_interval_seconds()`` (what EventBridge Scheduler does for the deployed function).
    """
    reconcile = units.router_module("routing.reconcile")

    settings = reconcile.ReconcileSettings.from_env(reconciler_environment(stack, template))
    return reconcile.Reconciler(settings, s3=clients("s3"), sqs=clients("sqs"), dynamodb=clients("dynamodb"))
