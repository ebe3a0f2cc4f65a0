"""The gateway consumer's loop: ``payments.requests`` in, results and dead letters out.

A plain confluent-kafka consumer in a consumer group, not a Beam pipeline: it is a
long-running service whose every message has a side effect (a payment). The loop

1. polls a request only while fewer calls are in flight than the AIMD limit allows, and
   hands it to a worker thread (:class:`~pipelines.gateway_worker.PaymentWorker`);
2. publishes each outcome with the idempotent producer: the result to
   ``payments.results`` keyed by ``request_id``, or the original message to
   ``payments.requests.dlq`` with the reason in headers;
3. commits a partition's offset only past messages whose result or dead letter the broker
   acknowledged (:class:`~transforms.offset_tracker.OffsetTracker`), every
   ``commit_interval_s`` and at the end.
4. reads ``telemetry.alerts`` (:class:`~pipelines.gateway_alerts.AlertFeed`): an alert
   of a 429 surge or a latency spike lowers the AIMD ceiling and raises the retry backoff,
   quiet minutes restore them step by step (:mod:`transforms.alert_governor`).

A crash between a payment and its commit redelivers the request; its idempotency key makes
the gateway replay the first payment, so a request is paid once and its result published
at least once (always with the same payment). The loop stops on ``stopping`` (SIGTERM),
after ``max_messages``, after ``idle_timeout_s`` without a request, or when a dependency
fails; it always finishes or abandons the calls in flight, flushes and commits first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from pipelines.gateway_alerts import AlertFeed
from pipelines.gateway_outputs import GatewayOutputs, offset_of
from pipelines.gateway_summary import GatewaySummary
from pipelines.gateway_worker import PaymentWorker
from schemas.dead_letter import dlq_topic
from transforms.aimd import AimdController, AimdSettings, LimitChange
from transforms.alert_governor import AlertGovernor, GovernorSettings
from transforms.gateways import PaymentGateway
from transforms.gateways.routing import Routes
from transforms.kafka_admin import ensure_topics
from transforms.kafka_config import consumer_config, producer_config
from transforms.kafka_offsets import BrokerUnavailable
from transforms.offset_tracker import OffsetTracker
from transforms.payment_records import TelemetryEvent
from transforms.payment_requests import DEFAULT_MAX_PAYLOAD_BYTES
from transforms.retry import RetryPolicy

POLL_S = 0.1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayJob:
    """Everything one run needs except the gateways themselves."""

    bootstrap_servers: str
    routes: Routes
    consumer_id: str
    requests_topic: str = "payments.requests"
    results_topic: str = "payments.results"
    telemetry_topic: str = "payments.telemetry"
    group_id: str = "payrecon-gateway"
    partitions: int = 4
    kafka_overrides: Mapping[str, str] = field(default_factory=dict)
    broker_timeout_s: float = 30.0
    max_messages: int | None = None
    idle_timeout_s: float | None = None
    commit_interval_s: float = 1.0
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    aimd: AimdSettings = field(default_factory=AimdSettings)
    alerts_topic: str | None = None  # telemetry.alerts; None: deaf to alerts
    governor: GovernorSettings = field(default_factory=GovernorSettings)
    request_timeout_s: float = 30.0  # the longest one gateway call can take


class GatewayService:
    def __init__(
        self,
        job: GatewayJob,
        gateways: Mapping[str, PaymentGateway],
        stopping: threading.Event | None = None,
    ):
        self.job = job
        self.stopping = stopping or threading.Event()
        self.summary = GatewaySummary(job.requests_topic)
        self.controller = AimdController(job.aimd, on_change=self._limit_changed)
        self.governor = AlertGovernor(self.controller, gateways, job.governor)
        self._alerts = None
        if job.alerts_topic:
            self._alerts = AlertFeed(
                self.governor,
                self._emit,
                self.summary,
                topic=job.alerts_topic,
                consumer_id=job.consumer_id,
                base_backoff_s=job.retry.base_delay_s,
            )
        self.worker = PaymentWorker(
            gateways,
            job.routes,
            job.retry,
            self.controller,
            self._emit,
            self.stopping,
            consumer_id=job.consumer_id,
            max_payload_bytes=job.max_payload_bytes,
            backoff=lambda: self.governor.backoff,
        )
        self._tracker = OffsetTracker()
        self._done: queue.Queue[tuple[Message, Future]] = queue.Queue()
        self._in_flight = 0
        self._failure: BaseException | None = None
        self._assigned_at: float | None = None
        self._last_activity = time.monotonic()
        self._last_commit = time.monotonic()
        self._outputs: GatewayOutputs | None = None
        self._consumer: Consumer | None = None

    # -- the run ------------------------------------------------------------------------

    def run(self) -> GatewaySummary:
        """Consume until told to stop; raises the failure that stopped it, if any
        (``BrokerUnavailable``, ``GatewayUnavailable``, ``GatewayMisconfigured``, a bug),
        after committing what was finished."""
        started = time.monotonic()
        job = self.job
        overrides = job.kafka_overrides
        topics = [job.requests_topic, job.results_topic, job.telemetry_topic]
        if job.alerts_topic:
            topics.append(job.alerts_topic)
        ensure_topics(
            job.bootstrap_servers,
            [*topics, dlq_topic(job.requests_topic)],
            job.partitions,
            overrides,
            timeout=job.broker_timeout_s,
        )
        producer = Producer(producer_config(job.bootstrap_servers, {"linger.ms": 5, **overrides}))
        self._outputs = GatewayOutputs(
            producer,
            results_topic=job.results_topic,
            telemetry_topic=job.telemetry_topic,
            summary=self.summary,
            tracker=self._tracker,
            on_failure=self._fail,
        )
        self._consumer = Consumer(
            consumer_config(job.bootstrap_servers, job.group_id, self._consumer_settings(overrides))
        )
        initial = self.controller.limit
        executor = ThreadPoolExecutor(job.aimd.maximum, thread_name_prefix="payrecon-gateway")
        try:
            if self._alerts is not None:
                self._alerts.open(job.bootstrap_servers, job.group_id, overrides)
            self._consumer.subscribe(
                [job.requests_topic], on_assign=self._assigned, on_revoke=self._revoked
            )
            self._loop(executor)
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._shut_down(executor)
            c = self.controller
            self.summary.concurrency = (initial, c.lowest, c.highest, c.limit)
            self.summary.changes = (c.increases, c.decreases)
            self.summary.ceiling_and_backoff = (c.ceiling, self.governor.backoff)
            self.summary.seconds = time.monotonic() - started
        if self._failure is not None:
            raise self._failure
        if self.summary.unfinished and self.summary.stopped_by != "signal":
            raise RuntimeError(f"a request was lost without a failure: {self.summary.render()}")
        return self.summary

    def _consumer_settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        # librdkafka leaves the group when poll() is not called for max.poll.interval.ms;
        # the loop stops polling while every slot is busy, for at most one request's
        # retries.
        budget_s = (self.job.retry.deadline_s or 300.0) + self.job.request_timeout_s + 60
        return {
            "enable.partition.eof": False,
            "max.poll.interval.ms": int(max(300.0, budget_s) * 1000),
            **overrides,
        }

    def _loop(self, executor: ThreadPoolExecutor) -> None:
        consumer, outputs = self._consumer, self._outputs
        assert consumer is not None and outputs is not None
        while self._failure is None:
            self._publish_outcomes(timeout=0)
            if self._alerts is not None:
                self._alerts.step()
            outputs.poll()
            self._commit_if_due()
            stop = self._stop_reason()
            if stop:
                self.summary.stopped_by = stop
                return
            if self._in_flight < self.controller.limit and not self._reached_max():
                message = consumer.poll(POLL_S)
                if message is not None:
                    self._dispatch(message, executor)
            else:
                self._publish_outcomes(timeout=POLL_S)

    def _stop_reason(self) -> str:
        job, now = self.job, time.monotonic()
        if self.stopping.is_set():
            return "signal"
        if self._reached_max() and self._in_flight == 0:
            return f"--max-messages {job.max_messages}"
        if job.idle_timeout_s is None or self._in_flight or self._tracker.in_flight:
            return ""
        if self._assigned_at is None:
            if now - self._last_activity > job.broker_timeout_s:
                raise BrokerUnavailable(
                    f"no partition of {job.requests_topic} was assigned to group "
                    f"{job.group_id!r} within {job.broker_timeout_s:g}s"
                )
            return ""
        if now - self._last_activity >= job.idle_timeout_s:
            return f"--idle-timeout {job.idle_timeout_s:g}s"
        return ""

    def _reached_max(self) -> bool:
        limit = self.job.max_messages
        return limit is not None and self.summary.consumed >= limit

    def _dispatch(self, message: Message, executor: ThreadPoolExecutor) -> None:
        error = message.error()
        if error is not None:
            if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise BrokerUnavailable(f"consuming {self.job.requests_topic}: {error}")
            log.warning("consumer: %s", error)
            return
        self.summary.consumed += 1
        self._last_activity = time.monotonic()
        self._tracker.start(str(message.topic()), int(message.partition() or 0), offset_of(message))
        future = executor.submit(self.worker.process, message.value(), self.controller.ticket())
        self._in_flight += 1
        future.add_done_callback(partial(self._finished, message))

    def _finished(self, message: Message, future: Future) -> None:
        self._done.put((message, future))  # on the worker thread: the loop publishes it

    # -- outcomes -------------------------------------------------------------------------

    def _publish_outcomes(self, timeout: float) -> None:
        """Publish every finished outcome (waiting up to ``timeout`` for the first)."""
        try:
            item = self._done.get(timeout=timeout) if timeout else self._done.get_nowait()
        except queue.Empty:
            return
        while True:
            message, future = item
            self._in_flight -= 1
            exc = future.exception()
            if exc is not None:
                self._fail(exc)
            elif self._outputs is not None:
                self._outputs.publish(message, future.result())
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return

    def _emit(self, event: TelemetryEvent) -> None:
        """Count and publish a telemetry event (from any thread)."""
        self.summary.observe(event)
        if self._outputs is not None:
            self._outputs.emit(event)

    def _limit_changed(self, change: LimitChange) -> None:
        log.info("concurrency %d -> %d (%s)", change.previous, change.limit, change.reason)
        self._emit(
            TelemetryEvent(
                kind="controller",
                outcome=change.direction,
                consumer_id=self.job.consumer_id,
                concurrency=change.limit,
                previous_concurrency=change.previous,
                ceiling=self.controller.ceiling,
                reason=change.reason,
            )
        )

    # -- offsets ------------------------------------------------------------------------

    def _commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self.job.commit_interval_s:
            try:
                self._commit()
            except BrokerUnavailable as exc:  # a rebalance or a blip: the next one retries
                log.warning("%s", exc)

    def _commit(self, partitions: list[tuple[str, int]] | None = None) -> None:
        self._last_commit = time.monotonic()
        positions = self._tracker.to_commit(partitions)
        if not positions or self._consumer is None:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise BrokerUnavailable(f"committing offsets of {self.job.group_id!r}: {exc}") from exc
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            raise BrokerUnavailable(f"committing offsets of {self.job.group_id!r}: {failed}")
        self._tracker.committed(positions)
        self.summary.committed.update(positions)

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_at = self._last_activity = time.monotonic()
        log.info("assigned %s", [(tp.topic, tp.partition) for tp in partitions])

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is finished in the partitions leaving us; results of requests still
        in flight there are published anyway (the next owner pays them idempotently)."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        try:
            self._commit(keys)
        except BrokerUnavailable as exc:
            log.warning("on revoke: %s", exc)
        self._tracker.forget(keys)

    # -- stopping -------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self.summary.stopped_by = type(exc).__name__
        self.stopping.set()  # the other requests in flight are abandoned, not retried

    def _shut_down(self, executor: ThreadPoolExecutor) -> None:
        outputs, consumer = self._outputs, self._consumer
        while self._in_flight:
            self._publish_outcomes(timeout=POLL_S)
            if outputs is not None:
                outputs.poll()
        executor.shutdown(wait=True)
        if outputs is not None and outputs.flush(self.job.broker_timeout_s):
            self._fail(BrokerUnavailable("the broker did not acknowledge every outcome"))
        try:
            self._commit()
        except BrokerUnavailable as exc:
            self._fail(exc)
        if consumer is not None:
            consumer.close()
        if self._alerts is not None:
            self._alerts.close()
