"""The reconciler Lambda: every few minutes, inbox objects that no notification will route go through the
normal path again (see ``routing.reconcile``).

Handler ``reconcile_app.lambda_handler`` (template.yaml: ReconcilerFunction, same code as the router,
scheduled by EventBridge Scheduler). Settings from the environment: INBOX_BUCKET, INBOX_QUEUE_URL,
RESULTS_TABLE, RECONCILE_GRACE_MINUTES (15), RECONCILE_MAX_OBJECTS (1000). The event may override
``grace_minutes``, ``max_objects``, ``prefix`` and ``dry_run`` for a manual run; the schedule sends none.

    aws lambda invoke --function-name breedfilter-reconciler --payload '{"dry_run": true}' \\
        --cli-binary-format raw-in-base64-out out.json
    breedfilter reconcile [--dry-run]          # the same code from a terminal
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from routing.reconcile import Reconciler, ReconcileReport, ReconcileSettings
from routing.settings import ConfigError

logger = Logger()
tracer = Tracer()
metrics = Metrics()

SAFETY_MARGIN_MS = 30_000  # stop listing with this much of the invocation left: checking and sending take time
MAX_LOGGED_OBJECTS = 100  # one log line per stuck object, up to this many (the rest are counted)


def overrides(event: Any) -> dict[str, Any]:
    """What a manual invocation may change; the schedule's event carries none of these keys."""
    if not isinstance(event, dict):
        return {}
    found: dict[str, Any] = {}
    if "dry_run" in event:
        if not isinstance(event["dry_run"], bool):
            raise ConfigError(f"event dry_run must be true or false, got {event['dry_run']!r}")
        found["dry_run"] = event["dry_run"]
    if "grace_minutes" in event:
        value = event["grace_minutes"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"event grace_minutes must be a number, got {value!r}")
        found["grace_minutes"] = float(value)
    if "max_objects" in event:
        value = event["max_objects"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"event max_objects must be an integer, got {value!r}")
        found["max_objects"] = value
    if "prefix" in event:
        if not isinstance(event["prefix"], str):
            raise ConfigError(f"event prefix must be a string, got {event['prefix']!r}")
        found["prefix"] = event["prefix"]
    return found


def publish(report: ReconcileReport) -> None:
    metrics.add_metric(name="StuckObjectsFound", unit=MetricUnit.Count, value=len(report.stuck))
    metrics.add_metric(name="LostNotifications", unit=MetricUnit.Count, value=len(report.lost))
    metrics.add_metric(name="LeftoverObjects", unit=MetricUnit.Count, value=len(report.leftover))
    metrics.add_metric(name="ReconcileSent", unit=MetricUnit.Count, value=report.sent)
    if report.failed:
        metrics.add_metric(name="ReconcileSendFailed", unit=MetricUnit.Count, value=report.failed)
    if report.truncated:
        metrics.add_metric(name="ReconcileTruncated", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = ReconcileSettings.from_env()  # a bad configuration fails the invocation, loudly
    wanted = overrides(event)
    settings = settings.replace(grace_minutes=wanted.get("grace_minutes"), max_objects=wanted.get("max_objects"))
    report = Reconciler(settings).run(
        dry_run=wanted.get("dry_run", False),
        prefix=wanted.get("prefix", ""),
        should_stop=lambda: context.get_remaining_time_in_millis() < SAFETY_MARGIN_MS,
    )
    for stuck in report.stuck[:MAX_LOGGED_OBJECTS]:
        logger.warning(
            "stuck object in the inbox" if report.dry_run else "stuck object sent to the inbox queue",
            source=stuck.source_id,
            kind=stuck.kind,
            age_minutes=stuck.age_minutes,
            sent=stuck.sent,
            error=stuck.error,
        )
    summary = report.summary()
    if report.failed:
        logger.error("some notifications could not be sent; the next run tries again", **summary)
    else:
        logger.info("reconciled the inbox", **summary)
    publish(report)
    return summary
