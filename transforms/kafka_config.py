"""librdkafka settings shared by every payrecon Kafka client.

One place decides how payrecon talks to a broker, so the Beam IO, ``payrecon publish`` and
the tests behave the same against the embedded broker and a real cluster. Extra settings
(SASL, TLS, ...) come from the user as ``key=value`` pairs and override these defaults.

Every client logs through Python logging, not librdkafka's own stderr writer: while a broker
is down librdkafka reports each reconnection attempt (``%3|...|FAIL|...``), which would bury
the job's one-line reason. Its lines go to the ``payrecon.librdkafka`` logger at DEBUG
(hidden by default, shown when logging is configured at DEBUG), each with its own severity.
confluent-kafka hands them over only when a client is polled, flushed or closed (admin
clients: ``transforms.kafka_admin.admin_client`` polls them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any


class _LibrdkafkaLog:
    """The ``logger`` confluent-kafka calls as ``log(level, fmt, facility, client, text)``.

    A plain class holding a ``logging.Logger`` (which pickles by name), so a config that
    travels inside a Beam DoFn pickles with it.
    """

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def log(self, level: int, msg: str, *args: object) -> None:
        self.logger.debug("%s " + msg, logging.getLevelName(level), *args)


LIBRDKAFKA_LOG = _LibrdkafkaLog("payrecon.librdkafka")


def admin_config(bootstrap_servers: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """An ``AdminClient``'s settings (``kafka_admin.admin_client`` builds the client)."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": LIBRDKAFKA_LOG}
    config.update(overrides or {})
    return config


def producer_config(bootstrap_servers: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """An idempotent, fully acknowledged, batching producer.

    ``enable.idempotence`` makes librdkafka's own retries safe (no duplicates, order kept per
    partition); ``acks=all`` means a delivery report is a durable write.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "logger": LIBRDKAFKA_LOG,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "compression.type": "none",
        "queue.buffering.max.messages": 500_000,
        "message.timeout.ms": 60_000,
    }
    config.update(overrides or {})
    return config


def consumer_config(
    bootstrap_servers: str,
    group_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """A consumer for ``assign()``-based reads: no group join, no automatic commits.

    A group id is only used to fetch and commit offsets explicitly; payrecon never lets
    librdkafka commit on its own, because offsets may only move after the sinks succeeded.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "logger": LIBRDKAFKA_LOG,
        "group.id": group_id or "payrecon-reader",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.min.messages": 200_000,
        # A bounded read never waits for new data: answer fetches at once.
        "fetch.wait.max.ms": 50,
        "session.timeout.ms": 6_000,
    }
    config.update(overrides or {})
    return config


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["security.protocol=SASL_SSL", ...]`` to a dict; raises ValueError naming the pair."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--kafka-config expects key=value, got {pair!r}")
        result[key.strip()] = value
    return result
