"""The gateway listening to ``telemetry.alerts``: the loop from telemetry back to the gateway.

:class:`AlertFeed` reads the alerts ``payrecon telemetry`` publishes, hands them to the
:class:`~transforms.alert_governor.AlertGovernor` (which caps the AIMD ceiling and raises
the retry backoff, and undoes it step by step once the alerts stop), and publishes every
change it makes as a ``controller`` telemetry event with its reason (``alert:rate_429``,
``recovered``), the new ceiling and the backoff base in force.

Where it starts reading: every partition from the first alert of the last ``max_age_s``
seconds (offsets for that time; a broker that cannot answer by time, as Tansu, gives the
earliest offset and the governor's age rule does the rest). So a gateway restarted in the
middle of a storm honours the alerts of the last minutes, and one started long after does
not relive an old storm. It reads with ``assign()`` and commits nothing: the alerts are
advice, not the gateway's input, and every consumer of the group hears every alert.

An unreadable alert (not JSON, a missing field) is logged and counted, never fatal; it gets
no dead letter either: the alerts topic is not the gateway's input, nothing is lost by
skipping advice, and its producer (the telemetry job) owns its format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from pipelines.gateway_summary import GatewaySummary
from transforms.alert_governor import AlertGovernor, GovernorChange, parse_alert
from transforms.kafka_config import consumer_config
from transforms.kafka_offsets import BrokerUnavailable
from transforms.payment_records import TelemetryEvent

log = logging.getLogger(__name__)
BATCH = 100


class AlertFeed:
    """Call :meth:`open` once, :meth:`step` on every turn of the consume loop (it never
    blocks), :meth:`close` at the end. Single-threaded: the loop's thread."""

    def __init__(
        self,
        governor: AlertGovernor,
        emit: Callable[[TelemetryEvent], None],
        summary: GatewaySummary,
        *,
        topic: str,
        consumer_id: str,
        base_backoff_s: float,
    ):
        self._governor = governor
        self._emit = emit
        self._summary = summary
        self._topic = topic
        self._consumer_id = consumer_id
        self._base_backoff_s = base_backoff_s
        self._consumer: Consumer | None = None

    def open(self, bootstrap_servers: str, group_id: str, overrides: Mapping[str, Any]) -> None:
        settings = {**overrides, "enable.partition.eof": False}
        consumer = Consumer(consumer_config(bootstrap_servers, f"{group_id}.alerts", settings))
        since_ms = int((time.time() - self._governor.settings.max_age_s) * 1000)
        try:
            metadata = consumer.list_topics(self._topic, timeout=10)
            partitions = sorted(metadata.topics[self._topic].partitions)
            lookups = [TopicPartition(self._topic, p, since_ms) for p in partitions]
            starts = consumer.offsets_for_times(lookups, timeout=10)
        except KafkaException as exc:
            consumer.close()
            raise BrokerUnavailable(f"finding where to read {self._topic}: {exc}") from exc
        # -1: no alert since then in this partition: only the ones published from now on.
        consumer.assign(
            [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
             for tp in starts]
        )  # fmt: skip
        self._consumer = consumer

    def step(self) -> None:
        """Apply the alerts that arrived, and a recovery step when one is due."""
        if self._consumer is None:
            return
        for message in self._consumer.consume(BATCH, timeout=0):
            error = message.error()
            if error is not None:
                log.warning("reading %s: %s", self._topic, error)
                continue
            self._apply(message.value(), message.partition(), message.offset())
        self._publish(self._governor.tick())

    def _apply(self, value: bytes | None, partition: int | None, offset: int | None) -> None:
        try:
            alert = parse_alert(value)
        except ValueError as exc:
            self._summary.alerts["unreadable"] += 1
            log.warning("skipping an unreadable alert at %s/%s/%s: %s",
                        self._topic, partition, offset, exc)  # fmt: skip
            return
        verdict = self._governor.on_alert(alert)
        self._summary.alerts[verdict.what] += 1
        self._publish(verdict.change)

    def _publish(self, change: GovernorChange | None) -> None:
        if change is None:
            return
        log.warning(
            "%s: concurrency ceiling %d -> %d, limit %d -> %d, backoff x%g -> x%g",
            change.reason, change.previous_ceiling, change.ceiling, change.previous_limit,
            change.limit, change.previous_backoff, change.backoff,
        )  # fmt: skip
        self._summary.governor[change.reason] += 1
        self._emit(
            TelemetryEvent(
                kind="controller",
                outcome=change.direction,
                consumer_id=self._consumer_id,
                concurrency=change.limit,
                previous_concurrency=change.previous_limit,
                ceiling=change.ceiling,
                reason=change.reason,
                backoff_ms=self._base_backoff_s * change.backoff * 1000,
            )
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
