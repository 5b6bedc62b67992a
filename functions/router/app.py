"""The router Lambda: SQS batches of S3 notifications in, each image routed to the sorted bucket.

Handler ``app.lambda_handler`` (template.yaml). Also accepts a direct S3 -> Lambda event. Each SQS record
succeeds or fails alone (``ReportBatchItemFailures``): a failed one returns to the queue, then the DLQ; a
batch in which every record failed is answered the same way (every message id listed), not raised.
The records of a batch are routed RECORD_CONCURRENCY at a time (Powertools' AsyncBatchProcessor, each record in
a worker thread with its own log keys): the endpoint sees them together and batches them in one forward pass.
Records naming the same object wait for each other (routing/source_locks.py).

    sam local invoke RouterFunction -e events/sqs-s3-put.json     # where Docker exists
    make demo                                                    # the same handler, on the local twin
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
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
from routing.source_locks import SourceLocks
from routing.time_budget import TimeBudget

logger = Logger()
tracer = Tracer()
# A batch whose every record failed is answered like any other, with every message id in batchItemFailures:
# raising instead (Powertools' default) would be a function error, and SQS would retry the whole batch.
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@lru_cache(maxsize=4)
def router_for(settings: Settings) -> Router:
    """One Router (clients, idempotency store) per configuration, reused across warm invocations."""
    return Router(settings)


@tracer.capture_method(capture_response=False)  # results items stay out of traces
def route_source(router: Router, source: SourceObject) -> RouteResult:
    logger.thread_safe_append_keys(source=source.source_id)  # this record's thread (or the handler's) only
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
        logger.thread_safe_remove_keys(["source"])
    return result


def handle_sqs_record(record: SQSRecord, budget: TimeBudget, locks: SourceLocks) -> list[str]:
    router = router_for(budget.settings)
    logger.thread_safe_append_keys(correlation_id=record.message_id)
    budget.admit()
    try:
        sources = parse_sqs_body(record.body)
    except PoisonMessage as exc:
        logger.error("unreadable message; it will reach the dead-letter queue", error=str(exc))
        raise
    outcomes = []
    for source in sources:
        with locks.holding(source.source_id):  # a duplicate in this batch waits, then finds the first's item
            outcomes.append(route_source(router, source).outcome)
    return outcomes


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = Settings.from_env()  # fails the whole batch, loudly, on a bad configuration
    router = router_for(settings)
    router.idempotency_config.register_lambda_context(context)
    if is_sqs_event(event):
        budget = TimeBudget(settings, context)
        locks = SourceLocks()
        threads = max(1, min(settings.record_concurrency, len(event["Records"])))
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="route") as workers:  # this invocation's

            async def record_handler(record: SQSRecord) -> list[str]:
                run = contextvars.copy_context().run  # the invocation's context; the thread's keys stay its own
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(workers, run, handle_sqs_record, record, budget, locks)

            return async_process_partial_response(
                event=event, record_handler=record_handler, processor=processor, context=context
            )
    if is_direct_s3_event(event):  # S3 -> Lambda directly: failures raise, Lambda's async retries apply
        outcomes = [route_source(router, s).outcome for s in parse_s3_records(event["Records"])]
        return {"outcomes": outcomes}
    if event.get("Event") == "s3:TestEvent":
        return {"outcomes": []}
    raise PoisonMessage(f"unrecognised event with keys {sorted(event)[:10]}")
