"""What the gateway consumer publishes: a result or a dead letter per request, telemetry.

Every record goes through payrecon's idempotent producer. A result or dead letter counts,
and its request's offset becomes committable, only when the broker acknowledged it;
telemetry is best effort (a lost event is counted, never retried, never blocks a payment).
Delivery reports are served on the thread that calls :meth:`GatewayOutputs.poll` or
:meth:`GatewayOutputs.flush`: the consume loop's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipelines.gateway_summary import GatewaySummary
from pipelines.gateway_worker import Abandoned, DeadLettered, Outcome, Paid
from schemas.dead_letter import dead_letter_headers, dlq_topic
from transforms.kafka_offsets import BrokerUnavailable
from transforms.offset_tracker import OffsetTracker
from transforms.payment_records import TelemetryEvent, result_record

JOB = "gateway"
log = logging.getLogger(__name__)


class GatewayOutputs:
    def __init__(
        self,
        producer: Producer,
        *,
        results_topic: str,
        telemetry_topic: str,
        summary: GatewaySummary,
        tracker: OffsetTracker,
        on_failure: Callable[[BaseException], None],
    ):
        self._producer = producer
        self._results_topic = results_topic
        self._telemetry_topic = telemetry_topic
        self._summary = summary
        self._tracker = tracker
        self._on_failure = on_failure

    def publish(self, message: Message, outcome: Outcome) -> None:
        """The result of a paid request (keyed by its request_id), or the original message
        to ``<topic>.dlq`` with the reason in headers. An abandoned request publishes
        nothing: its offset stays uncommitted."""
        if isinstance(outcome, Abandoned):
            return
        coordinates = (str(message.topic()), int(message.partition() or 0), offset_of(message))
        if isinstance(outcome, Paid):
            key, value = result_record(
                outcome.request,
                outcome.result,
                gateway=outcome.gateway,
                attempts=outcome.attempts,
                processed_at=datetime.now(UTC),
            )
            delivered = self._acked(coordinates, self._summary.results, outcome.result.status)
            self._produce(self._results_topic, key, value, on_delivery=delivered)
            return
        self._dead_letter(message, coordinates, outcome)

    def _dead_letter(
        self, message: Message, coordinates: tuple[str, int, int], letter: DeadLettered
    ) -> None:
        timestamp_type, timestamp_ms = message.timestamp()
        stamp = timestamp_ms if timestamp_type else None
        headers = dead_letter_headers(
            reason=letter.reason,
            detail=letter.detail,
            topic=coordinates[0],
            partition=coordinates[1],
            offset=coordinates[2],
            job=JOB,
            dead_lettered_at=datetime.now(UTC),
            timestamp_ms=stamp,
        )
        delivered = self._acked(coordinates, self._summary.dead_letters, letter.reason)
        self._produce(
            dlq_topic(coordinates[0]),
            message.key(),
            message.value(),
            on_delivery=delivered,
            headers=headers,
            **({"timestamp": stamp} if stamp is not None else {}),
        )

    def _acked(self, coordinates: tuple[str, int, int], tally: Counter, name: str):
        """A delivery callback: the offset is finished once the broker has the record."""

        def delivered(err: KafkaError | None, _message: Message) -> None:
            if err is not None:
                failure = BrokerUnavailable(f"publishing the outcome of {coordinates}: {err}")
                self._on_failure(failure)
                return
            tally[name] += 1
            self._tracker.finish(*coordinates)

        return delivered

    def emit(self, event: TelemetryEvent) -> None:
        """Publish a telemetry event (from any thread)."""
        key, value = event.record()
        try:
            self._producer.produce(
                self._telemetry_topic, value, key, on_delivery=self._telemetry_acked
            )
        except (BufferError, KafkaException) as exc:
            log.warning("telemetry event dropped: %s", exc)
            self._summary.telemetry_delivered(False)

    def _telemetry_acked(self, err: KafkaError | None, _message: Message) -> None:
        self._summary.telemetry_delivered(err is None)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Wait for every delivery report; the number of records still unacknowledged."""
        return self._producer.flush(timeout_s)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the local queue is full: serve delivery reports, retry
                self._producer.poll(0.05)


def offset_of(message: Message) -> int:
    offset = message.offset()
    if offset is None:
        raise ValueError("a consumed message without an offset")
    return offset
