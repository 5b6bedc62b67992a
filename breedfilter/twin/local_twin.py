"""The local twin of the stack in one object: moto's server, a local SageMaker endpoint and the router.

``LocalTwin(predictor)`` starts moto on a free loopback port and provisions the stack from template.yaml
(inbox bucket -> inbox queue -> dead-letter queue, sorted bucket, results and idempotency tables), serves
``predictor`` at a local endpoint (``/ping``, ``/invocations``, ``/endpoints/{name}/invocations``), points
this process's environment at both (as template.yaml configures the Lambda) and feeds the router's
``lambda_handler``, loaded the way Lambda loads it, from the inbox queue as Lambda's SQS event source does.
``make demo``, ``breedfilter local up`` and the end-to-end tests all run this one wiring.

Retries keep the template's numbers on a scaled clock: a failed message comes back after the inbox queue's
visibility timeout (390 s) x ``time_scale`` (default ``$BREEDFILTER_TWIN_TIME_SCALE`` or 0.01: 3.9 s) and goes
to the dead-letter queue after the template's ``maxReceiveCount`` receives (see ``breedfilter.twin.sqs_poller``).
S3 notifications carry ``versionId`` and ``sequencer`` as S3's do (see ``breedfilter.twin.local_aws``).
Everything lives in this process's memory: closing the twin forgets it.

    with LocalTwin(ArtifactModel("model.tar.gz")) as twin:
        twin.drop("uploads/dog.jpg", data)
        twin.drain()           # or twin.start_polling() to route live until close()
        print(twin.snapshot())
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from breedfilter import units
from breedfilter.template import StackTemplate
from breedfilter.twin.endpoint_server import EndpointServer
from breedfilter.twin.local_aws import (
    LocalAws,
    Stack,
    StackNames,
    aws_environment,
    object_keys,
    queue_depth,
    router_environment,
    scan_items,
)
from breedfilter.twin.predictor import Predictor
from breedfilter.twin.reconciler import schedule_interval_seconds, twin_reconciler
from breedfilter.twin.sqs_poller import PollReport, SqsEventSource, twin_time_scale

log = logging.getLogger("breedfilter.twin.local_twin")


@dataclass
class Snapshot:
    """Where everything is now: the inbox, both queues, the sorted bucket and the results table."""

    inbox: list[str]
    sorted: list[str]
    items: list[dict[str, Any]]
    queue_depth: int
    dlq_depth: int
    dlq_bodies: list[str] = field(default_factory=list)


class LocalTwin:
    """``with LocalTwin(predictor) as twin``: everything started on enter, stopped (ports freed) on exit.

    While open, ``os.environ`` holds the twin's environment (fake credentials, local endpoints, the router's
    variables from template.yaml) because the router reads it as it does on Lambda; it is restored on exit.
    moto keeps its resources per process, so a twin starts from a clean slate (moto's reset).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        names: StackNames | None = None,
        router_overrides: dict[str, str] | None = None,
        max_receive_count: int | None = None,
        time_scale: float | None = None,
        quiet_router: bool = True,
        aws_port: int | None = None,
        endpoint_port: int = 0,
    ):
        self.template = StackTemplate.load()
        self.names = names or StackNames()
        if not isinstance(predictor, Predictor):
            raise TypeError(
                f"{type(predictor).__name__} is not a Predictor: it needs identity and __call__(body, content_type)"
                " (breedfilter/twin/predictor.py)"
            )
        self.predictor = predictor
        self.router_overrides = dict(router_overrides or {})
        self.max_receive_count = max_receive_count
        self.time_scale = twin_time_scale(time_scale)
        self.quiet_router = quiet_router
        self.aws = LocalAws(aws_port)
        self.endpoint_port = endpoint_port
        self.endpoint: EndpointServer | None = None
        self.batch_size = int(self.template.parameter_default("BatchSize"))
        self.stack: Stack | None = None
        self.source: SqsEventSource | None = None
        self.environment: dict[str, str] = {}
        self._saved_environ: dict[str, str] | None = None
        self._saved_log_levels: tuple[str, dict[str, int]] | None = None
        self._cold_start: units.ColdStart | None = None
        self._started: list[Any] = []
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        self.live = PollReport()
        self._live_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalTwin:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.aws.start()
        self._started.append(self.aws)
        self.aws.reset()
        self.stack = self.aws.provision(self.names, max_receive_count=self.max_receive_count)
        self.endpoint = EndpointServer(self.predictor, self.names.endpoint_name, port=self.endpoint_port).start()
        self._started.append(self.endpoint)
        self.environment = {
            **aws_environment(self.aws.url, self.endpoint.url),
            **router_environment(self.stack, self.template),
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            **self.router_overrides,
        }
        if self.quiet_router:  # JSON logs and EMF metrics are for CloudWatch; the caller prints summaries
            self.environment["POWERTOOLS_LOG_LEVEL"] = "WARNING"
            self.environment["POWERTOOLS_METRICS_DISABLED"] = "true"
        self._saved_environ = dict(os.environ)
        os.environ.update(self.environment)
        # a twin is a new deployment of the router: its code imported afresh from this environment (no warm
        # router from an earlier twin pointing at its ports), and the process's own imports put back on close
        self._cold_start = units.ColdStart(units.ROUTER_DIR, "app.lambda_handler")
        service = self.environment.get("POWERTOOLS_SERVICE_NAME", "service_undefined")
        self._saved_log_levels = _logger_levels(service)  # the modules' Loggers set their levels as they import
        handler = self._cold_start.load()
        # the function's log level, as Lambda's logging controls set it: on the service's logger, which a
        # Powertools Logger configured earlier in this process shares by name
        logging.getLogger(service).setLevel(self.environment.get("POWERTOOLS_LOG_LEVEL", "INFO"))
        self.source = SqsEventSource(
            self.aws.client("sqs"),
            self.stack.queue_url,
            handler,
            batch_size=self.batch_size,
            function_name=self.names.function_name,
            time_scale=self.time_scale,
        )

    def close(self) -> None:
        """Stop polling, the endpoint and moto (in that order), and give the environment back."""
        self.stop_polling()
        while self._started:
            with contextlib.suppress(Exception):
                self._started.pop().stop()
        if self._cold_start is not None:
            self._cold_start.close()
            self._cold_start = None
        if self._saved_log_levels is not None:  # the process's loggers as they were; new ones inherit again
            service, levels = self._saved_log_levels
            for name in _logger_levels(service)[1]:
                logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
            self._saved_log_levels = None
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None

    # -- use ------------------------------------------------------------------------------------------------

    def router_module(self, name: str) -> Any:
        """A module of the router as this twin runs it (its own cold start: patch this one, not an earlier import)."""
        assert self._cold_start is not None, "use LocalTwin as a context manager"
        return units.router_module(name)

    def client(self, service: str) -> Any:
        return self.aws.client(service)

    def drop(self, key: str, body: bytes) -> None:
        """Put an object into the inbox, as a user would; S3 notifies the inbox queue."""
        self.client("s3").put_object(Bucket=self.names.inbox_bucket, Key=key, Body=body)

    def duplicate_notification(self) -> None:
        """Deliver one queued notification twice, as S3 and SQS may: the router must do its work once."""
        assert self.stack is not None, "use LocalTwin as a context manager"
        sqs, url = self.client("sqs"), self.stack.queue_url
        original = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
        sqs.send_message(QueueUrl=url, MessageBody=original["Body"])
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=original["ReceiptHandle"], VisibilityTimeout=0)

    def drain(self, max_seconds: float = 120.0) -> PollReport:
        """Route until the inbox queue stays empty (failed messages come back until the DLQ takes them)."""
        assert self.source is not None, "use LocalTwin as a context manager"
        with self._router_stdout():
            return self.source.drain(max_seconds=max_seconds)

    def start_polling(self, wait_seconds: int = 1, *, reconcile: bool = False) -> None:
        """Route live in a background thread (long polling) until ``stop_polling`` or ``close``; with
        ``reconcile`` also run the reconciler on its schedule, as the deployed stack does (``local up``)."""
        assert self.source is not None, "use LocalTwin as a context manager"
        self._stop_polling.clear()
        self._poller = threading.Thread(
            target=self._poll_loop, args=(wait_seconds, reconcile), name="sqs-poller", daemon=True
        )
        self._poller.start()

    def stop_polling(self) -> None:
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
            self._poller = None

    def _poll_loop(self, wait_seconds: int, reconcile: bool) -> None:
        assert self.source is not None
        # the reconciler's schedule (template.yaml's rate), on the twin's scaled clock like the queue's
        period = max(1.0, schedule_interval_seconds(self.template) * self.time_scale)
        next_reconcile = time.monotonic() + period
        while not self._stop_polling.is_set():
            if reconcile and time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + period
                self._scheduled_reconcile()
            try:
                report = self.source.poll_once(wait_seconds=wait_seconds)
            except Exception:  # moto going away at shutdown, or a transient local error: keep serving
                if self._stop_polling.is_set():
                    return
                log.exception("polling the inbox queue failed; retrying in 1 s")
                self._stop_polling.wait(1.0)
                continue
            if report.received:
                with self._live_lock:
                    self.live.add(report)
                log.info(
                    "batch of %d: %d routed, %d returned to the queue%s",
                    report.received,
                    report.succeeded,
                    report.failed,
                    f" (back {self.source.retry_after_seconds:g} s after their receive)" if report.failed else "",
                )
                continue
            waiting = self.source.next_release_in()
            if waiting is not None and waiting < wait_seconds:  # poll_once long-polls whole seconds only
                self._stop_polling.wait(waiting + 0.001)

    def _scheduled_reconcile(self) -> None:
        try:
            found = self.reconcile()
        except Exception:  # the next period tries again, as EventBridge Scheduler would
            log.exception("the reconciler's run failed")
            return
        if found["stuck"]:
            log.info(
                "reconciler: %d stuck in the inbox (%d without a notification, %d left after a crash), %d sent again",
                found["stuck"],
                found["lost"],
                found["leftover"],
                found["sent"],
            )

    def _router_stdout(self) -> contextlib.AbstractContextManager[Any]:
        """EMF metric lines go to stdout on Lambda; keep them out of a quiet twin's output."""
        return contextlib.redirect_stdout(io.StringIO()) if self.quiet_router else contextlib.nullcontext()

    def snapshot(self) -> Snapshot:
        assert self.stack is not None
        s3, sqs = self.client("s3"), self.client("sqs")
        dlq_messages = sqs.receive_message(
            QueueUrl=self.stack.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        return Snapshot(
            inbox=object_keys(s3, self.names.inbox_bucket),
            sorted=object_keys(s3, self.names.sorted_bucket),
            items=scan_items(self.client("dynamodb"), self.names.results_table),
            queue_depth=queue_depth(sqs, self.stack.queue_url),
            dlq_depth=queue_depth(sqs, self.stack.dlq_url),
            dlq_bodies=[m["Body"] for m in dlq_messages],
        )

    def reconcile(self, grace_minutes: float | None = None, *, dry_run: bool = False) -> dict[str, Any]:
        """One pass of the reconciler (the scheduled function's code) over the twin's inbox; its summary.

        ``grace_minutes`` defaults to the template's, scaled like the queue's clock (``time_scale``)."""
        assert self.stack is not None, "use LocalTwin as a context manager"
        runner = twin_reconciler(self.stack, self.aws.client, self.template)
        scaled = runner.settings.grace_minutes * self.time_scale if grace_minutes is None else grace_minutes
        runner.settings = dataclasses.replace(runner.settings, grace_minutes=scaled)
        with self._router_stdout():
            return runner.run(dry_run=dry_run).summary()

    def exports(self) -> dict[str, str]:
        """What a shell needs so that ``aws`` and ``breedfilter`` commands reach this twin."""
        assert self.endpoint is not None, "use LocalTwin as a context manager"
        return {
            **aws_environment(self.aws.url, self.endpoint.url),
            "RESULTS_TABLE": self.names.results_table,
            "INBOX_BUCKET": self.names.inbox_bucket,
            "SORTED_BUCKET": self.names.sorted_bucket,
            "ENDPOINT_NAME": self.names.endpoint_name,
        }


def _logger_levels(service: str) -> tuple[str, dict[str, int]]:
    """The levels of a Powertools service's logger and its children (``service.module``)."""
    names = [name for name in logging.root.manager.loggerDict if name == service or name.startswith(f"{service}.")]
    return service, {name: logging.getLogger(name).level for name in [service, *names]}
