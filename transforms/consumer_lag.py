"""Consumer lag per group and partition, measured from the broker's offsets.

A consumer group's lag on a partition is how many messages are waiting for it: the
partition's end (the offset the next message will get) minus the group's committed offset.
A partition of a topic the group reads that it never committed is counted from the first
retained offset (everything retained is waiting); so is a committed offset that retention
has already deleted. The groups are the ones given, or every group the broker lists.

Ends are found the way the bounded reads find them (``transforms.kafka_offsets``): probing
from the reported high watermark to partition EOF, because the embedded broker under-reports
the high watermark. On Apache Kafka that probe is a no-op round trip.

A measurement is a snapshot in processing time (``measured_at``), not in event time: lag
is about where the consumers are now, whatever the messages' timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_INVALID,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka.admin import AdminClient

from transforms.kafka_admin import admin_client
from transforms.kafka_config import consumer_config
from transforms.kafka_offsets import BrokerUnavailable, partition_bounds


@dataclass(frozen=True)
class PartitionLag:
    """Where one group is on one partition: ``committed`` is None if it never committed."""

    group_id: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


def _admin_error(what: str, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"{what}: {exc}")


def list_groups(admin: AdminClient, timeout: float) -> list[str]:
    """Every consumer group the broker knows, sorted."""
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout).result()
    except KafkaException as exc:
        raise _admin_error("listing the consumer groups", exc) from exc
    return sorted({g.group_id for g in listed.valid})


def committed_offsets(admin: AdminClient, group: str, timeout: float) -> dict[tuple[str, int], int]:
    """The offsets ``group`` committed, per (topic, partition)."""
    request = [ConsumerGroupTopicPartitions(group)]
    try:
        (future,) = admin.list_consumer_group_offsets(request, request_timeout=timeout).values()
        answer = future.result()
    except KafkaException as exc:
        raise _admin_error(f"reading the committed offsets of group {group!r}", exc) from exc
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in answer.topic_partitions or []
        if tp.error is None and tp.offset != OFFSET_INVALID and tp.offset >= 0
    }


def measure_lag(
    bootstrap_servers: str,
    groups: Sequence[str] | None = None,
    overrides: dict | None = None,
    timeout: float = 30.0,
) -> list[PartitionLag]:
    """The lag of ``groups`` (None: every group) on every partition of every topic they
    committed on, sorted by group, topic and partition. Raises ``BrokerUnavailable``."""
    with admin_client(bootstrap_servers, overrides) as admin:
        names = list_groups(admin, timeout) if groups is None else sorted(set(groups))
        committed = {group: committed_offsets(admin, group, timeout) for group in names}
        topics = sorted({topic for offsets in committed.values() for topic, _ in offsets})
        if not topics:
            return []
        try:
            metadata = admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise _admin_error("reading topic metadata", exc) from exc
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        if topic in metadata.topics and metadata.topics[topic].error is None
        for p in sorted(metadata.topics[topic].partitions)
    ]
    consumer = KafkaConsumer(consumer_config(bootstrap_servers, None, overrides))
    try:
        lows, ends = partition_bounds(consumer, partitions, timeout)
    except KafkaException as exc:
        raise _admin_error("finding the ends of the partitions", exc) from exc
    finally:
        consumer.close()
    lags = []
    for group in names:
        read = {t for t, _ in committed[group]}
        for (topic, partition), end in sorted(ends.items()):
            if topic not in read:
                continue
            position = committed[group].get((topic, partition))
            waiting = end - max(position if position is not None else 0, lows[(topic, partition)])
            lags.append(PartitionLag(group, topic, partition, position, end, max(0, waiting)))
    return lags
