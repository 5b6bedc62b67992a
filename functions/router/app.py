"""The router Lambda: SQS batches of S3 notifications in, each image routed to the sorted bucket.

Handler ``app.lambda_handler`` (template.yaml). Also accepts a direct S3 -> Lambda event. Each SQS record
succeeds or fails alone (``ReportBatchItemFailures``): a failed one returns to the queue, then the DLQ; a
batch in which every record failed is answered the same way (every message id listed), not raised.

    sam local invoke RouterFunction -e events/sqs-s3-put.json     # where Docker exists
    make demo                                                    # the same handler, on the local twin
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from routing.endpoint import EndpointUnavailable
from routing.events import (
    PoisonMessage,
    SourceObject,
    is_direct_s3_event,
    is_sqs_event,
    parse_s3_records,
    parse_sqs_body,
)
from routing.outcome_metrics import count_failure, metrics, record_outcome
from routing.pipeline import BucketMissing, DestinationTaken, Router, RouteResult
from routing.settings import Settings
from routing.time_budget import TimeBudget

logger = Logger()
tracer = Tracer()
# A batch whose every record failed is answered like any other, with every message id in batchItemFailures:
# raising instead (Powertools' default) would be a function error, and SQS would retry the whole batch.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@lru_cache(maxsize=4)
def router_for(settings: Settings) -> Router:
    """One Router (clients, idempotency store) per configuration, reused across warm invocations."""
    return Router(settings)


@tracer.capture_method(capture_response=False)  # results items stay out of traces
def route_source(router: Router, source: SourceObject) -> RouteResult:
    logger.append_keys(source=source.source_id)
    try:
        result = router.route(source)
        record_outcome(result)
    except IdempotencyAlreadyInProgressError:
        logger.info("another invocation is routing this object; retrying later")
        raise
    except BucketMissing as exc:
        logger.error(f"{exc}; the record fails and its message will reach the dead-letter queue", bucket=exc.bucket)
        count_failure("BucketMissing")
        raise
    except DestinationTaken as exc:
        logger.error("no sorted name is free for this revision; the message will reach the DLQ", error=str(exc))
        raise
    except EndpointUnavailable as exc:
        logger.warning("endpoint unavailable; the message returns to the queue", error=str(exc))
        count_failure("EndpointUnavailable")
        raise
    finally:
        logger.remove_keys(["source"])
    return result


def handle_sqs_record(record: SQSRecord, budget: TimeBudget) -> list[str]:
    router = router_for(budget.settings)
    logger.set_correlation_id(record.message_id)
    budget.admit()
    try:
        sources = parse_sqs_body(record.body)
    except PoisonMessage as exc:
        logger.error("unreadable message; it will reach the dead-letter queue", error=str(exc))
        raise
    return [route_source(router, source).outcome for source in sources]


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()  # fails the whole batch, loudly, on a bad configuration
    router = router_for(settings)
    router.idempotency_config.register_lambda_context(context)
    if is_sqs_event(event):
        budget = TimeBudget(settings, context)
        return process_partial_response(
            event=event,
            record_handler=lambda record: handle_sqs_record(record, budget),
            processor=processor,
            context=context,
        )
    if is_direct_s3_event(event):  # S3 -> Lambda directly: failures raise, Lambda's async retries apply
        outcomes = [route_source(router, s).outcome for s in parse_s3_records(event["Records"])]
        return {"outcomes": outcomes}
    if event.get("Event") == "s3:TestEvent":
        return {"outcomes": []}
    raise PoisonMessage(f"unrecognised event with keys {sorted(event)[:10]}")
