"""Admin clients, and creating the topics a job writes to, so it never depends on broker
auto-creation.

Production clusters usually disable ``auto.create.topics.enable``; a job that writes dead
letters to ``<topic>.dlq`` creates it first (idempotently) instead of failing mid-run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from transforms.kafka_config import admin_config
from transforms.kafka_offsets import BrokerUnavailable


@contextmanager
def admin_client(
    bootstrap_servers: str, overrides: Mapping[str, Any] | None = None
) -> Iterator[AdminClient]:
    """An ``AdminClient`` with payrecon's settings, polled once when the block ends: an admin
    client hands librdkafka's queued log lines to logging only when polled."""
    admin = AdminClient(admin_config(bootstrap_servers, overrides))
    try:
        yield admin
    finally:
        admin.poll(0)


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int = 1,
    overrides: dict | None = None,
    timeout: float = 30.0,
) -> None:
    """Create each missing topic with ``partitions`` partitions; existing ones are kept."""
    with admin_client(bootstrap_servers, overrides) as admin:
        try:
            existing = set(admin.list_topics(timeout=timeout).topics)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"the Kafka broker at {bootstrap_servers} did not answer within {timeout:g} s "
                f"(listing topics: {exc.args[0].str() if exc.args else exc})"
            ) from exc
        missing = [NewTopic(t, partitions, 1) for t in sorted(set(topics) - existing)]
        if not missing:
            return
        for topic, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerUnavailable(f"creating topic {topic!r}: {exc}") from exc
