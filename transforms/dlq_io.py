"""Small, exact Kafka IO for ``payrecon dlq``: read a topic to its end, produce and confirm.

Dead-letter topics and their bookkeeping topics are small and read whole, so this is plain
confluent-kafka rather than a Beam transform. Everything works on the embedded broker's
quirks as well as on Apache Kafka:

* topics are looked up in one metadata request that names none (naming an unknown topic
  creates it on brokers with auto-creation, the embedded one included);
* partitions are read with ``assign()`` (no consumer-group join) until partition EOF, never
  up to a reported high watermark (the embedded broker under-reports it);
* a produced message counts only once the broker acknowledged it, and its offset comes from
  the acknowledgement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from transforms.kafka_admin import admin_client
from transforms.kafka_config import consumer_config, producer_config
from transforms.kafka_offsets import BrokerUnavailable


@dataclass(frozen=True)
class StoredMessage:
    """A message as read back, with its coordinates and headers (in order, repeats kept)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclass(frozen=True)
class Outgoing:
    """A message to produce to an explicit partition."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Delivery:
    """The broker's answer for one ``Outgoing``: its offset, or the error."""

    partition: int
    offset: int | None
    error: str | None = None


def topic_partitions(
    bootstrap_servers: str, overrides: Mapping[str, Any] | None = None, timeout: float = 30.0
) -> dict[str, int]:
    """Every topic on the cluster and its number of partitions (internal ones excluded)."""
    with admin_client(bootstrap_servers, overrides) as admin:
        try:
            metadata = admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"no answer from {bootstrap_servers} in {timeout:g}s") from exc
    return {
        name: len(info.partitions)
        for name, info in metadata.topics.items()
        if not name.startswith("__") and info.error is None and info.partitions
    }


def create_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``topic`` with ``config`` (e.g. ``cleanup.policy=compact``); existing is fine."""
    new = NewTopic(topic, partitions, 1, config=dict(config or {}))
    with admin_client(bootstrap_servers, overrides) as admin:
        futures = admin.create_topics([new], operation_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerUnavailable(f"creating topic {name!r}: {exc}") from exc


def read_to_end(
    bootstrap_servers: str,
    topic: str,
    starts: Mapping[int, int],
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Iterator[StoredMessage]:
    """Every message of ``topic`` from ``starts[partition]`` to the partition's EOF.

    Messages come partition by partition in offset order within each partition. Raises
    ``BrokerUnavailable`` when no message and no EOF arrived for ``timeout`` seconds.
    """
    if not starts:
        return
    consumer = Consumer(consumer_config(bootstrap_servers, None, overrides))
    try:
        consumer.assign([TopicPartition(topic, p, max(0, o)) for p, o in starts.items()])
        yield from _consume_to_eof(consumer, topic, dict(starts), timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def _consume_to_eof(
    consumer: Consumer, topic: str, position: dict[int, int], timeout: float
) -> Iterator[StoredMessage]:
    pending = set(position)
    requested = dict(position)
    last_progress = time.monotonic()
    while pending:
        batch = consumer.consume(num_messages=1000, timeout=0.05)
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > timeout:
            raise BrokerUnavailable(f"no end of {topic} partitions {sorted(pending)} in {timeout}s")
        for msg in batch:
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    # At our position, or before the start asked for (nothing to read there).
                    if offset >= position[partition] or offset < requested[partition]:
                        pending.discard(partition)
                    continue
                if err.retriable() or err.code() == KafkaError._TRANSPORT:
                    continue  # librdkafka retries the fetch itself
                raise KafkaException(err)
            if offset < position[partition]:
                continue
            position[partition] = offset + 1
            ts_type, ts = msg.timestamp()
            yield StoredMessage(
                topic=topic,
                partition=partition,
                offset=offset,
                key=msg.key(),
                value=msg.value(),
                headers=_headers(msg.headers()),
                timestamp_ms=ts if ts_type != 0 else None,
            )


_HeaderValue = str | bytes | None


def _headers(
    raw: Mapping[str, _HeaderValue] | Sequence[tuple[str, _HeaderValue]] | None,
) -> tuple[tuple[str, bytes], ...]:
    """confluent-kafka's headers as ``(name, bytes)`` pairs; a null value reads as b""."""
    pairs = raw.items() if isinstance(raw, Mapping) else raw or ()
    return tuple(
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    )


def read_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Iterator[StoredMessage]:
    """Every message of every partition of ``topic``, from the beginning."""
    yield from read_to_end(
        bootstrap_servers, topic, dict.fromkeys(range(partitions), 0), overrides, timeout
    )


def end_offsets(
    bootstrap_servers: str,
    topic: str,
    partitions: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> dict[int, int]:
    """The offset the next message of each partition will get: found by consuming from the
    reported high watermark (a lower bound on some brokers) to partition EOF."""
    consumer = Consumer(consumer_config(bootstrap_servers, None, overrides))
    try:
        reported = {
            p: max(0, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout, False)[1])
            for p in partitions
        }
    except KafkaException as exc:
        raise BrokerUnavailable(f"asking the end of {topic}: {exc}") from exc
    finally:
        consumer.close()
    ends = dict(reported)
    for msg in read_to_end(bootstrap_servers, topic, reported, overrides, timeout):
        ends[msg.partition] = max(ends[msg.partition], msg.offset + 1)
    return ends


class AcknowledgedProducer:
    """The idempotent producer, reused across sends (starting one costs the broker a round of
    producer-id requests): each ``send`` returns once every message was acknowledged or
    ``timeout`` passed, with one ``Delivery`` per message, in order."""

    def __init__(self, bootstrap_servers: str, overrides: Mapping[str, Any] | None = None):
        self._config = producer_config(bootstrap_servers, overrides)
        self._producer: Producer | None = None

    def send(self, messages: Sequence[Outgoing], timeout: float = 60.0) -> list[Delivery]:
        if self._producer is None:
            self._producer = Producer(self._config)
        producer = self._producer
        deliveries: list[Delivery | None] = [None] * len(messages)

        def on_delivery(index: int):
            def record(err, msg) -> None:
                partition = int(msg.partition() or 0)
                if err is not None:
                    deliveries[index] = Delivery(partition, None, str(err))
                else:
                    deliveries[index] = Delivery(partition, int(msg.offset() or 0))

            return record

        for index, out in enumerate(messages):
            error = _produce(producer, out, on_delivery(index))
            if error is not None:
                deliveries[index] = Delivery(out.partition, None, error)
        producer.flush(timeout)
        return [
            d if d is not None else Delivery(m.partition, None, "not acknowledged in time")
            for d, m in zip(deliveries, messages, strict=True)
        ]


def _produce(producer: Producer, out: Outgoing, on_delivery) -> str | None:
    """Hand ``out`` to the producer; the error text if it refused it locally."""
    kwargs: dict[str, Any] = {"key": out.key, "partition": out.partition}
    if out.headers:
        kwargs["headers"] = list(out.headers)
    if out.timestamp_ms is not None:
        kwargs["timestamp"] = out.timestamp_ms
    while True:
        try:
            producer.produce(out.topic, out.value, on_delivery=on_delivery, **kwargs)
            producer.poll(0)
            return None
        except BufferError:  # the local queue is full: serve delivery reports, then retry
            producer.poll(0.1)
        except KafkaException as exc:  # refused locally: too large, unknown partition
            return str(exc.args[0])
