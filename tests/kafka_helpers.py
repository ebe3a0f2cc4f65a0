"""Small helpers for tests that talk to the embedded broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def new_topic(bootstrap: str, partitions: int = 4, prefix: str = "t") -> str:
    name = f"{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(30)
    return name


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def produce(bootstrap: str, topic: str, records: Iterable[tuple], linger_ms: int = 50) -> int:
    """Produce ``(key, value, timestamp_ms[, partition])`` tuples in multi-record batches."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.num.messages": 1000,
        }
    )
    errors: list = []
    count = 0
    for record in records:
        key, value, ts = record[:3]
        kwargs = {"partition": record[3]} if len(record) > 3 else {}
        producer.produce(
            topic,
            value=value,
            key=key,
            timestamp=ts,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
            **kwargs,
        )
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0
    assert not errors, errors
    return count


def consume_all(bootstrap: str, topic: str, partitions: int | None = None) -> list:
    """Every message of ``topic`` (read to partition EOF), as confluent-kafka messages."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    if partitions is None:
        partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages, done = [], set()
    while len(done) < partitions:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error() is None:
                messages.append(msg)
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                done.add(msg.partition())
    consumer.close()
    return messages


def ledger_event(i: int, occurred_at: datetime, **overrides) -> dict:
    event = {
        "event_id": f"evt_{i:06d}",
        "event_type": "charge.succeeded",
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "order_id": f"ord_{i:06d}",
        "stripe_object_id": f"ch_{i:06d}",
        "payment_intent_id": f"pi_{i:06d}",
        "amount": 1000 + i,
        "currency": "usd",
        "idempotency_key": f"idem_{i:06d}",
    }
    event.update(overrides)
    return event


def encode(event: dict) -> bytes:
    return json.dumps(event).encode()


def spread(start: datetime, end: datetime, n: int) -> list[datetime]:
    step = (end - start) / n
    return [start + step * i for i in range(n)]


__all__ = [
    "DAY",
    "consume_all",
    "encode",
    "ledger_event",
    "millis",
    "new_topic",
    "produce",
    "spread",
    "timedelta",
]
