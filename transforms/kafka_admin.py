"""Creating the topics a job writes to, so it never depends on broker auto-creation.

Production clusters usually disable ``auto.create.topics.enable``; a job that writes dead
letters to ``<topic>.dlq`` creates it first (idempotently) instead of failing mid-run.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from transforms.kafka_offsets import BrokerUnavailable


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int = 1,
    overrides: dict | None = None,
    timeout: float = 30.0,
) -> None:
    """Create each missing topic with ``partitions`` partitions; existing ones are kept."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(overrides or {})})
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
