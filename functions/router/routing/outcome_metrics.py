"""What the router logs and counts per image, as CloudWatch EMF metrics (Powertools Metrics, namespace and
service from template.yaml): ``ImagesRouted`` by status and label, ``EndpointLatency``, ``Skipped_<outcome>``
(duplicates, gone, superseded, folders), and the failures that send a message back (``EndpointUnavailable``)
or to the dead-letter queue (``BucketMissing``).

    used by app.py; not run on its own
"""

from __future__ import annotations

import threading

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from routing.pipeline import RouteResult

logger = Logger(child=True)
metrics = Metrics()  # Powertools shares one metric set between its Metrics instances: app.py flushes it
_adding = threading.Lock()  # records are routed in several threads; Metrics.add_metric reads, then writes its set


def _add(name: str, unit: MetricUnit, value: float) -> None:
    with _adding:
        metrics.add_metric(name=name, unit=unit, value=value)


def record_outcome(result: RouteResult) -> None:
    """Log the image's route and count it (or count the outcome that needed no routing)."""
    decision = result.decision
    if result.outcome != "routed" or result.item is None or decision is None:
        logger.info("nothing to route", outcome=result.outcome)
        _add(f"Skipped_{result.outcome}", MetricUnit.Count, 1)
        return
    logger.info(
        "routed",
        status=decision.status,
        label=decision.shown_label,
        reason=decision.reason,
        destination=f"s3://{result.item['destination_bucket']}/{result.item['destination_key']}",
    )
    if not is_metrics_disabled():  # single_metric prints even when POWERTOOLS_METRICS_DISABLED is set
        with single_metric(
            name="ImagesRouted", unit=MetricUnit.Count, value=1, default_dimensions=metrics.default_dimensions
        ) as metric:
            metric.add_dimension(name="status", value=decision.status)
            metric.add_dimension(name="label", value=decision.category)
    if decision.endpoint_latency_ms is not None:
        _add("EndpointLatency", MetricUnit.Milliseconds, decision.endpoint_latency_ms)


def count_failure(name: str) -> None:
    """One ``BucketMissing`` or ``EndpointUnavailable``."""
    _add(name, MetricUnit.Count, 1)
