"""Native Python Kafka IO for Beam: a bounded, splittable read and an idempotent write.

Beam's own Python Kafka IO is a cross-language transform that downloads a Java expansion
service at run time; it cannot run offline or on locked-down CI. These transforms use
confluent-kafka (librdkafka) directly, in batches.

``ReadKafkaWindow`` reads one or more topics between two timestamps: the offsets are planned
once (``transforms.kafka_offsets.plan_read``), then each (topic, partition, offset range) is
read by a splittable DoFn with ``assign()`` (no consumer-group join), so a distributed runner
can split and parallelise it. Output: ``pyarrow.Table`` batches of ``schemas.KAFKA_MESSAGE``.

``WriteToKafka`` produces keyed records with the idempotent producer and fails the bundle on
any delivery error: nothing counts as written that the broker did not acknowledge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.kafka_message import KAFKA_MESSAGE
from transforms.arrow_coder import ArrowTableCoder  # noqa: F401 (registers the pa.Table coder)
from transforms.kafka_config import consumer_config, producer_config
from transforms.kafka_offsets import BrokerUnavailable, PartitionRange, ReadPlan, plan_read

NAMESPACE = "payrecon.kafka"


class KafkaRecord(NamedTuple):
    """One message to produce. ``topic`` None means the sink's default topic."""

    value: bytes | None
    key: bytes | None = None
    topic: str | None = None
    headers: list[tuple[str, bytes]] | None = None
    timestamp_ms: int | None = None


class _ReadPartitionRangeFn(beam.DoFn, RestrictionProvider):
    """Reads one partition's offset range in batches and emits Arrow tables of messages.

    It is its own restriction provider: a restriction is an offset range of the element's
    ``PartitionRange``, split initially into chunks of ``chunk_offsets`` so that a large
    partition is read in parallel, and dynamically by the runner through the tracker.
    """

    def __init__(
        self, bootstrap_servers, consumer_overrides, batch_size, chunk_offsets, idle_timeout_s
    ):
        self._bootstrap = bootstrap_servers
        self._overrides = dict(consumer_overrides or {})
        self._batch_size = batch_size
        self._chunk_offsets = chunk_offsets
        self._idle_timeout_s = idle_timeout_s
        self._consumer: Consumer | None = None
        self.read = Metrics.counter(NAMESPACE, "messages_read")
        self.outside = Metrics.counter(NAMESPACE, "messages_outside_window")
        self.bytes_read = Metrics.counter(NAMESPACE, "bytes_read")

    def initial_restriction(self, element: PartitionRange) -> OffsetRange:
        return OffsetRange(element.start, max(element.start, element.stop))

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def split(self, element: PartitionRange, restriction: OffsetRange):
        yield from restriction.split(self._chunk_offsets, self._chunk_offsets // 4)

    def restriction_size(self, element: PartitionRange, restriction: OffsetRange) -> int:
        return restriction.size()

    def setup(self):
        self._consumer = Consumer(consumer_config(self._bootstrap, None, self._overrides))

    def teardown(self):
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def process(
        self,
        element: PartitionRange,
        tracker=beam.DoFn.RestrictionParam(),
    ) -> Iterator[pa.Table]:
        restriction = tracker.current_restriction()
        if restriction.start >= restriction.stop:
            return
        assert self._consumer is not None
        self._consumer.assign([TopicPartition(element.topic, element.partition, restriction.start)])
        try:
            yield from self._read(element, tracker)
        finally:
            self._consumer.unassign()

    def _read(self, element: PartitionRange, tracker) -> Iterator[pa.Table]:
        assert self._consumer is not None
        next_offset = tracker.current_restriction().start
        idle_since = time.monotonic()
        while True:
            stop = tracker.current_restriction().stop
            if next_offset >= stop:
                return
            batch, eof = self._poll(element, next_offset, stop)
            if batch:
                idle_since = time.monotonic()
                last = batch[-1].offset()
                if not tracker.try_claim(last):
                    # A split moved the stop below ``last`` after we looked: everything
                    # before the new stop is still ours, the rest belongs to the residual.
                    stop = tracker.current_restriction().stop
                    batch = [m for m in batch if m.offset() < stop]
                    yield from self._emit(element, batch)
                    return
                next_offset = last + 1
                yield from self._emit(element, batch)
            if eof:
                # The partition ends before the planned stop (compaction, deletion):
                # mark the rest of the range as done.
                tracker.try_claim(tracker.current_restriction().stop)
                return
            if not batch and time.monotonic() - idle_since > self._idle_timeout_s:
                raise BrokerUnavailable(
                    f"no data from {element.topic}[{element.partition}] at offset "
                    f"{next_offset} for {self._idle_timeout_s}s"
                )

    def _poll(self, element: PartitionRange, next_offset: int, stop: int):
        """One consume() call: the messages in ``[next_offset, stop)`` and whether EOF came."""
        assert self._consumer is not None
        batch, eof = [], False
        for msg in self._consumer.consume(num_messages=self._batch_size, timeout=0.5):
            err = msg.error()
            mine = msg.topic() == element.topic and msg.partition() == element.partition
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof = eof or (mine and (msg.offset() or 0) >= next_offset)
                    continue
                if err.retriable() or err.code() == KafkaError._TRANSPORT:
                    continue  # librdkafka retries the fetch itself
                raise KafkaException(err)
            offset = msg.offset() or 0
            if mine and next_offset <= offset < stop:
                batch.append(msg)
        return batch, eof

    def _emit(self, element: PartitionRange, batch) -> Iterator[pa.Table]:
        if not batch:
            return
        lo = element.min_timestamp_ms if element.min_timestamp_ms is not None else -(2**63)
        hi = element.max_timestamp_ms if element.max_timestamp_ms is not None else 2**63
        offsets, stamps, keys, values = [], [], [], []
        size = 0
        for msg in batch:
            ts_type, ts = msg.timestamp()
            ts = ts or 0
            if not lo <= ts < hi:
                continue
            value = msg.value()
            offsets.append(msg.offset())
            stamps.append(ts if ts_type != 0 else None)
            keys.append(msg.key())
            values.append(value)
            size += len(value) if value else 0
        self.read.inc(len(batch))
        self.outside.inc(len(batch) - len(offsets))
        self.bytes_read.inc(size)
        if offsets:
            n = len(offsets)
            yield pa.Table.from_arrays(
                [
                    pa.array([element.topic] * n, pa.string()),
                    pa.array([element.partition] * n, pa.int32()),
                    pa.array(offsets, pa.int64()),
                    pa.array(stamps, pa.int64()).cast(KAFKA_MESSAGE.field("timestamp").type),
                    pa.array(keys, pa.binary()),
                    pa.array(values, pa.binary()),
                ],
                schema=KAFKA_MESSAGE,
            )


class ReadKafkaRanges(beam.PTransform):
    """Reads exactly the ranges of a ``ReadPlan`` (a recorded plan repeats a run exactly).

    Output: ``pyarrow.Table`` batches of ``schemas.kafka_message.KAFKA_MESSAGE``, each with
    the messages of one partition whose timestamps lie inside the plan's window.
    At-least-once: a retried bundle re-reads its range; downstream sinks are idempotent.
    ``batch_size`` messages per table at most: large enough that per-batch costs downstream
    (a data-quality validation has a fixed ~0.1 s) stay small.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        plan: ReadPlan,
        *,
        consumer_overrides: dict[str, Any] | None = None,
        batch_size: int = 100_000,
        chunk_offsets: int = 1_000_000,
        idle_timeout_s: float = 60.0,
    ):
        super().__init__()
        self._bootstrap = bootstrap_servers
        self._plan = plan
        self._overrides = consumer_overrides
        self._batch_size = batch_size
        self._chunk = chunk_offsets
        self._idle_timeout_s = idle_timeout_s

    def expand(self, pbegin):
        ranges = [r for r in self._plan.ranges if r.size > 0]
        read_fn = _ReadPartitionRangeFn(
            self._bootstrap, self._overrides, self._batch_size, self._chunk, self._idle_timeout_s
        )
        return (
            pbegin
            | "PlannedRanges" >> beam.Create(ranges, reshuffle=False)
            | "DistributeRanges" >> beam.Reshuffle()
            | "ReadRanges"
            >> beam.ParDo(read_fn).with_input_types(PartitionRange).with_output_types(pa.Table)
        )


class ReadKafkaWindow(beam.PTransform):
    """Reads ``topics`` between two timestamps, ``[window_start, window_end)``.

    Offsets are planned when the pipeline is built; ``self.plan`` then holds the ranges the
    run reads, to record with the run and to commit after its sinks succeeded.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        *,
        group_id: str | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        **read_options: Any,
    ):
        super().__init__()
        self._bootstrap = bootstrap_servers
        self._topics = list(topics)
        self._window = (window_start, window_end)
        self._group_id = group_id
        self._overrides = consumer_overrides
        self._read_options = read_options
        self.plan: ReadPlan | None = None

    def expand(self, pbegin):
        self.plan = plan_read(
            self._bootstrap,
            self._topics,
            *self._window,
            group_id=self._group_id,
            consumer_overrides=self._overrides,
        )
        return pbegin | "ReadPlannedRanges" >> ReadKafkaRanges(
            self._bootstrap, self.plan, consumer_overrides=self._overrides, **self._read_options
        )


class _WriteFn(beam.DoFn):
    """Produces records; the bundle fails unless every one was acknowledged."""

    def __init__(self, bootstrap_servers, topic, producer_overrides):
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._overrides = dict(producer_overrides or {})
        self._producer: Producer | None = None
        self._errors: list[str] = []
        self.written = Metrics.counter(NAMESPACE, "messages_written")

    def setup(self):
        self._producer = Producer(producer_config(self._bootstrap, self._overrides))

    def start_bundle(self):
        self._errors = []
        self._acked = 0

    def _on_delivery(self, err, msg):
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")
        else:
            self._acked += 1

    def process(self, record: KafkaRecord):
        assert self._producer is not None
        topic = record.topic or self._topic
        if topic is None:
            raise ValueError("KafkaRecord has no topic and the sink has no default topic")
        kwargs: dict[str, Any] = {
            "value": record.value,
            "key": record.key,
            "on_delivery": self._on_delivery,
        }
        if record.headers:
            kwargs["headers"] = record.headers
        if record.timestamp_ms is not None:
            kwargs["timestamp"] = record.timestamp_ms
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def finish_bundle(self):
        assert self._producer is not None
        remaining = self._producer.flush(120)
        if remaining or self._errors:
            raise BrokerUnavailable(
                f"{remaining} message(s) unacknowledged, {len(self._errors)} delivery "
                f"error(s): {self._errors[:3]}"
            )
        self.written.inc(self._acked)

    def teardown(self):
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None


class WriteToKafka(beam.PTransform):
    """Writes ``KafkaRecord`` elements with the idempotent producer, keyed.

    A bundle succeeds only when the broker acknowledged every record of it; on a retry the
    bundle is produced again, so readers dedupe by the record's id (at-least-once).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str | None = None,
        *,
        producer_overrides: dict[str, Any] | None = None,
    ):
        super().__init__()
        self._fn = _WriteFn(bootstrap_servers, topic, producer_overrides)

    def expand(self, records):
        return records | "ProduceAcknowledged" >> beam.ParDo(self._fn).with_input_types(KafkaRecord)
