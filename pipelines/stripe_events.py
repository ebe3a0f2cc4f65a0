"""The ``stripe.events`` consumer: order status updates and ledger events, once per event.

Each batch of messages goes through :func:`transforms.stripe_events.map_event`; the status
updates go to ``orders.status`` and the ledger events to ``ledger.transactions`` (both keyed
by ``order_id``), events that cannot be mapped to ``stripe.events.dlq`` with their reason
(the original bytes, as every payrecon dead letter). The group's offsets are committed only
after the broker acknowledged every record of the batch.

Effectively once:

- the mapping is deterministic: an event processed again (Stripe delivered it twice, or the
  consumer restarted before its commit) gives byte-identical records with the same keys and
  ids (``update_id``, ``event_id``), which readers dedupe;
- an event id processed recently by this consumer is skipped (counted as a duplicate). Keys
  are event ids, so every copy of an event is in the same partition, read by one consumer.

Counts prove nothing is lost: messages read = events mapped + duplicates + dead letters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.dead_letter import DEAD_LETTER_V1, dlq_topic
from transforms.dead_letters import dead_letter_records
from transforms.kafka import KafkaRecord
from transforms.kafka_config import consumer_config, producer_config
from transforms.kafka_offsets import BrokerUnavailable
from transforms.ledger_validation import Invalid, parse_rfc3339_micros
from transforms.stripe_event_parse import StripeEvent, parse_event
from transforms.stripe_events import Mapped, map_event

log = logging.getLogger("payrecon.webhooks.consume")

JOB = "webhooks"
DEFAULT_GROUP_ID = "payrecon-stripe-events"
HEADER_STRIPE_EVENT_ID = "stripe-event-id"


@dataclass(frozen=True)
class Topics:
    events: str = "stripe.events"
    status: str = "orders.status"
    ledger: str = "ledger.transactions"

    @property
    def dead_letters(self) -> str:
        return dlq_topic(self.events)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.events, self.status, self.ledger, self.dead_letters)


@dataclass
class ConsumeCounts:
    """What a run did. ``read == mapped + duplicates + dead_lettered`` always holds."""

    read: int = 0
    mapped: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    status_updates: int = 0
    ledger_events: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset

    @property
    def balanced(self) -> bool:
        return self.read == self.mapped + self.duplicates + self.dead_lettered

    def render(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons.items()))
        committed = ", ".join(f"{p}: {o}" for p, o in sorted(self.committed.items()))
        return "\n".join(
            [
                f"read {self.read:,} events: {self.mapped:,} mapped, {self.duplicates:,} "
                f"duplicates skipped, {self.dead_lettered:,} dead-lettered",
                f"wrote {self.status_updates:,} order status updates and "
                f"{self.ledger_events:,} ledger events",
                f"dead letters by reason: {reasons or 'none'}",
                f"committed offsets: {committed or 'none'}",
            ]
        )


class _RecentIds:
    """A bounded set of event ids; the least recently seen is forgotten first."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen before; remembers it either way."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return False


class StripeEventsConsumer:
    """Consumes ``topics.events`` in the consumer group ``group_id`` (partitions are shared
    among the group's members); see the module docstring for the guarantees."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics | None = None,
        *,
        group_id: str = DEFAULT_GROUP_ID,
        kafka_config: dict[str, Any] | None = None,
        batch_size: int = 500,
        flush_timeout_s: float = 60.0,
        remembered: int = 100_000,
        order_of_charge: Callable[[str], str | None] | None = None,
    ):
        overrides = kafka_config or {}
        self.topics = topics or Topics()
        self.counts = ConsumeCounts()
        self._batch_size = batch_size
        self._flush_timeout_s = flush_timeout_s
        self._recent = _RecentIds(remembered)
        self._order_of_charge = order_of_charge
        self._consumer = Consumer(consumer_config(bootstrap_servers, group_id, overrides))
        self._producer = Producer(
            producer_config(bootstrap_servers, {"partitioner": "murmur2_random", **overrides})
        )
        self._assigned_at: float | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Ends ``run`` after the batch in progress (safe from a signal handler or thread)."""
        self._stopping.set()

    def run(
        self,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        join_timeout_s: float = 30.0,
    ) -> ConsumeCounts:
        """Consumes until ``max_messages`` were read, or nothing came for ``idle_timeout_s``
        once partitions were assigned (both None: forever). Raises ``BrokerUnavailable`` if
        no partition is assigned within ``join_timeout_s``, or a batch is not acknowledged."""
        self._consumer.subscribe([self.topics.events], on_assign=self._on_assign)
        started = last_message = time.monotonic()
        try:
            while not self._stopping.is_set() and (
                max_messages is None or self.counts.read < max_messages
            ):
                wanted = self._batch_size
                if max_messages is not None:
                    wanted = min(wanted, max_messages - self.counts.read)
                batch = self._poll(wanted)
                now = time.monotonic()
                if batch:
                    self._process(batch)
                    last_message = now
                elif self._assigned_at is None:
                    if now - started > join_timeout_s:
                        raise BrokerUnavailable(
                            f"no partition of {self.topics.events} assigned in {join_timeout_s:g}s"
                        )
                elif idle_timeout_s is not None and (
                    now - max(last_message, self._assigned_at) >= idle_timeout_s
                ):
                    break
        finally:
            self.close()
        return self.counts

    def close(self) -> None:
        """Leaves the group. Every batch was flushed already, unless one failed: that one's
        offsets are not committed, so it is not waited for long."""
        self._consumer.close()
        self._producer.flush(min(self._flush_timeout_s, 5.0))

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._assigned_at is None:
            self._assigned_at = time.monotonic()
        log.info("assigned %s", [p.partition for p in partitions])

    def _poll(self, wanted: int) -> list[Message]:
        batch = []
        for msg in self._consumer.consume(num_messages=wanted, timeout=0.5):
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume: %s", err)  # librdkafka retries on its own
        return batch

    def _process(self, batch: list[Message]) -> None:
        records: list[KafkaRecord] = []
        for msg in batch:
            records.extend(self._outputs(msg))
        self._produce(records)
        self._commit(batch)

    def _outputs(self, msg: Message) -> list[KafkaRecord]:
        """The records of one message, counted (an empty list for a duplicate)."""
        counts = self.counts
        counts.read += 1
        event = parse_event(msg.value())
        if isinstance(event, Invalid):
            return self._dead_letter(msg, event)
        if self._recent.seen(event.id):
            counts.duplicates += 1
            return []
        mapped = map_event(event, self._order_of_charge)
        if isinstance(mapped, Invalid):
            return self._dead_letter(msg, mapped)
        counts.mapped += 1
        counts.status_updates += mapped.status is not None
        counts.ledger_events += len(mapped.ledger)
        return output_records(event, mapped, self.topics)

    def _dead_letter(self, msg: Message, problem: Invalid) -> list[KafkaRecord]:
        self.counts.dead_lettered += 1
        self.counts.reasons[problem.reason.value] += 1
        return list(dead_letter_records(dead_letter_row(msg, problem)))

    def _produce(self, records: list[KafkaRecord]) -> None:
        """Produces ``records``; returns once the broker acknowledged every one."""
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        for record in records:
            assert record.topic is not None  # every record here names its topic
            kwargs: dict[str, Any] = {"key": record.key, "headers": record.headers or []}
            if record.timestamp_ms is not None:
                kwargs["timestamp"] = record.timestamp_ms
            while True:
                try:
                    self._producer.produce(
                        record.topic, record.value, on_delivery=on_delivery, **kwargs
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining or errors:
            raise BrokerUnavailable(
                f"{remaining} record(s) unacknowledged, {len(errors)} delivery error(s): "
                f"{errors[:3]}; offsets not committed, the batch will be processed again"
            )

    def _commit(self, batch: list[Message]) -> None:
        """Commits the offsets after ``batch``: its records are all acknowledged."""
        ends: dict[tuple[str, int], int] = {}
        for msg in batch:
            position = (msg.topic() or "", msg.partition() or 0)
            ends[position] = max(ends.get(position, 0), (msg.offset() or 0) + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance: the batch is reprocessed, identically
            log.warning("offsets not committed (%s); the batch will be processed again", exc)
            return
        for (_, partition), offset in ends.items():
            self.counts.committed[partition] = offset


def output_records(event: StripeEvent, mapped: Mapped, topics: Topics) -> list[KafkaRecord]:
    """The Kafka records of a mapped event: byte-identical every time it is processed."""
    headers = [(HEADER_STRIPE_EVENT_ID, event.id.encode())]
    records = []
    if mapped.status is not None:
        records.append(
            KafkaRecord(
                value=_dumps(mapped.status),
                key=mapped.status["order_id"].encode(),
                topic=topics.status,
                headers=headers,
                timestamp_ms=event.created * 1000,
            )
        )
    for ledger in mapped.ledger:
        micros = parse_rfc3339_micros(ledger["occurred_at"])
        records.append(
            KafkaRecord(
                value=_dumps(ledger),
                key=ledger["order_id"].encode(),
                topic=topics.ledger,
                headers=headers,
                timestamp_ms=None if micros is None else micros // 1000,
            )
        )
    return records


def dead_letter_row(msg: Message, problem: Invalid) -> pa.Table:
    """A one-row ``DEAD_LETTER_V1`` table for ``msg``."""
    ts_type, ts = msg.timestamp()
    row = {
        "reason": problem.reason.value,
        "detail": problem.detail,
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": datetime.fromtimestamp(ts / 1000, UTC) if ts_type and ts else None,
        "key": msg.key(),
        "value": msg.value(),
        "job": JOB,
        "dead_lettered_at": datetime.now(UTC),
    }
    return pa.Table.from_pylist([row], schema=DEAD_LETTER_V1)


def _dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
