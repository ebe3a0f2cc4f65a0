"""A planned bounded read as a plain loop: the messages of a ``ReadPlan``, in batches.

For jobs whose work per message is a side effect (a Stripe call, a publish) rather than a
dataflow: ``payrecon repair`` reads its discrepancies this way. It reads exactly the planned
offsets with ``assign()`` (no group join, so it starts at once on Tansu) and finishes each
partition at its planned stop, keeping messages inside the range's timestamp bounds, as
``ReadKafkaRanges`` does in Beam.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from transforms.kafka_config import consumer_config
from transforms.kafka_offsets import BrokerUnavailable, PartitionRange, ReadPlan


def consume_plan(
    bootstrap_servers: str,
    plan: ReadPlan,
    consumer_overrides: dict | None = None,
    *,
    batch_size: int = 10_000,
    idle_timeout: float = 30.0,
) -> Iterator[list[Message]]:
    """Batches of the planned messages; raises ``BrokerUnavailable`` when a partition stops
    delivering before its planned end for ``idle_timeout`` seconds."""
    ranges: dict[tuple[str | None, int | None], PartitionRange] = {
        (r.topic, r.partition): r for r in plan.ranges if r.size > 0
    }
    if not ranges:
        return
    consumer = Consumer(consumer_config(bootstrap_servers, None, consumer_overrides))
    consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges.values()])
    remaining = set(ranges)
    idle_since = time.monotonic()
    try:
        while remaining:
            kept = []
            for msg in consumer.consume(num_messages=batch_size, timeout=0.5):
                where = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(where)
                    elif not err.retriable():
                        raise KafkaException(err)
                    continue
                r = ranges.get(where)
                offset = msg.offset()
                if r is None or offset is None or where not in remaining:
                    continue
                if not r.start <= offset < r.stop:
                    continue
                if offset == r.stop - 1:
                    remaining.discard(where)
                stamp = msg.timestamp()[1]
                low, high = r.min_timestamp_ms, r.max_timestamp_ms
                if (low is None or stamp >= low) and (high is None or stamp < high):
                    kept.append(msg)
            if kept:
                idle_since = time.monotonic()
                yield kept
            elif time.monotonic() - idle_since > idle_timeout:
                raise BrokerUnavailable(
                    f"no messages for {idle_timeout:.0f} s from {sorted(remaining)} "
                    "before their planned end"
                )
    finally:
        consumer.close()
