"""Planning a bounded Kafka read: which offsets of which partitions a run reads.

A plan is resolved once, from the window's timestamps (and optionally a consumer group's
committed offsets), recorded with the run, and can be replayed to repeat the run exactly
(backfills, retries). Planning is written to be exact on Apache Kafka and still correct on
brokers that answer ListOffsets loosely (the embedded Tansu under-reports the high
watermark and answers every time lookup with the earliest offset):

* the start offset from ``offsets_for_times`` is used as a lower bound only; the reader
  filters every message by its timestamp;
* a partition's end is found by consuming from the reported high watermark to partition
  EOF, never by trusting the reported high watermark (a no-op round trip on Kafka).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from transforms.kafka_config import consumer_config


class BrokerUnavailable(RuntimeError):
    """The broker did not answer in time (exit code 3 at the command line)."""


class BadReadRequest(ValueError):
    """The read asked for cannot be planned: unknown topic, empty window (exit code 2)."""


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, stop)`` of one partition; messages are kept if their timestamp
    lies in ``[min_timestamp_ms, max_timestamp_ms)`` (None: unbounded)."""

    topic: str
    partition: int
    start: int
    stop: int
    min_timestamp_ms: int | None = None
    max_timestamp_ms: int | None = None

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


@dataclass(frozen=True)
class ReadPlan:
    """Every partition range of one bounded read: record it to repeat the read exactly.

    Holds no clock time, so two plans of the same read are equal (and so are the run ids
    and ``recon_runs.offsets`` derived from them)."""

    ranges: tuple[PartitionRange, ...]
    group_id: str | None = None

    @property
    def total_offsets(self) -> int:
        return sum(r.size for r in self.ranges)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReadPlan:
        raw = json.loads(text)
        ranges = tuple(PartitionRange(**r) for r in raw["ranges"])
        return cls(ranges=ranges, group_id=raw.get("group_id"))


def to_millis(moment: datetime | None) -> int | None:
    """Epoch milliseconds of a timezone-aware datetime (None stays None)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no timezone; payrecon times are UTC")
    return int(moment.timestamp() * 1000)


def _partitions_of(
    consumer: Consumer, topics: Sequence[str], timeout: float
) -> list[TopicPartition]:
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"broker did not answer a metadata request: {exc}") from exc
    partitions: list[TopicPartition] = []
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            known = ", ".join(sorted(t for t in metadata.topics if not t.startswith("__")))
            raise BadReadRequest(f"topic {topic!r} does not exist (topics: {known or 'none'})")
        partitions.extend(TopicPartition(topic, p) for p in sorted(info.partitions))
    return partitions


def _true_ends(consumer: Consumer, reported: dict[tuple[str, int], int], timeout: float) -> dict:
    """Consume from each reported high watermark to partition EOF; return the real ends."""
    ends = dict(reported)
    pending = set(reported)
    consumer.assign([TopicPartition(t, p, off) for (t, p), off in reported.items()])
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"no partition EOF within {timeout}s for {sorted(pending)}")
        for msg in consumer.consume(num_messages=10_000, timeout=0.2):
            key = (str(msg.topic()), int(msg.partition() or 0))
            err = msg.error()
            if err is None:
                ends[key] = max(ends[key], int(msg.offset() or 0) + 1)
            elif err.code() == KafkaError._PARTITION_EOF:
                pending.discard(key)
            else:
                raise BrokerUnavailable(f"probing the end of {key}: {err}")
    consumer.unassign()
    return ends


def partition_bounds(
    consumer: Consumer, partitions: Sequence[TopicPartition], timeout: float
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """The first retained offset and the true end (next offset to be written) of each
    partition: the reported high watermark is only where probing for the end starts."""
    reported = {}
    lows = {}
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
        lows[(tp.topic, tp.partition)] = max(low, 0)
        reported[(tp.topic, tp.partition)] = max(high, low, 0)
    return lows, _true_ends(consumer, reported, timeout)


def plan_read(
    bootstrap_servers: str,
    topics: Sequence[str],
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    group_id: str | None = None,
    consumer_overrides: dict | None = None,
    timeout: float = 30.0,
) -> ReadPlan:
    """Resolve the offsets to read for ``topics`` in ``[window_start, window_end)``.

    With ``group_id``, each partition starts no earlier than the group's committed offset,
    so a second reader of the same group starts after what the first one committed.
    """
    start_ms, end_ms = to_millis(window_start), to_millis(window_end)
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise BadReadRequest("the window end must be after its start")
    consumer = Consumer(consumer_config(bootstrap_servers, group_id, consumer_overrides))
    try:
        partitions = _partitions_of(consumer, topics, timeout)
        lows, ends = partition_bounds(consumer, partitions, timeout)
        starts = dict(lows)
        if start_ms is not None:
            lookups = [TopicPartition(tp.topic, tp.partition, start_ms) for tp in partitions]
            for tp in consumer.offsets_for_times(lookups, timeout=timeout):
                key = (tp.topic, tp.partition)
                # -1: no message at or after start_ms (nothing to read in this partition).
                starts[key] = ends[key] if tp.offset < 0 else max(starts[key], tp.offset)
        if group_id is not None:
            for tp in consumer.committed(partitions, timeout=timeout):
                if tp.offset != OFFSET_INVALID and tp.offset >= 0:
                    key = (tp.topic, tp.partition)
                    starts[key] = max(starts[key], tp.offset)
    except KafkaException as exc:
        raise BrokerUnavailable(f"planning the read of {list(topics)}: {exc}") from exc
    finally:
        consumer.close()
    ranges = tuple(
        PartitionRange(t, p, min(starts[(t, p)], ends[(t, p)]), ends[(t, p)], start_ms, end_ms)
        for (t, p) in sorted(ends)
    )
    return ReadPlan(ranges=ranges, group_id=group_id)


def commit_offsets(
    bootstrap_servers: str,
    group_id: str,
    ranges: Iterable[PartitionRange],
    consumer_overrides: dict | None = None,
    *,
    forward_only: bool = False,
    timeout: float = 30.0,
) -> None:
    """Commit, for ``group_id``, the position after every range a run read.

    Call this only after the run's sinks succeeded: never from a checkpoint or bundle
    finalization callback, which on the local runner fire while the data is still only in
    memory. Committing is idempotent (the same run commits the same offsets). With
    ``forward_only``, a partition whose committed offset is already further is left alone,
    so a backfill of an old window never moves a group backwards.
    """
    offsets = [TopicPartition(r.topic, r.partition, r.stop) for r in ranges]
    if not offsets:
        return
    consumer = Consumer(consumer_config(bootstrap_servers, group_id, consumer_overrides))
    try:
        if forward_only:
            current = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.committed(offsets, timeout=timeout)
            }
            offsets = [tp for tp in offsets if tp.offset > current[(tp.topic, tp.partition)]]
            if not offsets:
                return
        results = consumer.commit(offsets=offsets, asynchronous=False)
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            raise BrokerUnavailable(f"commit failed for {failed}")
    except KafkaException as exc:
        raise BrokerUnavailable(f"committing offsets of group {group_id!r}: {exc}") from exc
    finally:
        consumer.close()
