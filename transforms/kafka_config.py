"""librdkafka settings shared by every payrecon Kafka client.

One place decides how payrecon talks to a broker, so the Beam IO, ``payrecon publish`` and
the tests behave the same against the embedded broker and a real cluster. Extra settings
(SASL, TLS, ...) come from the user as ``key=value`` pairs and override these defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def producer_config(bootstrap_servers: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """An idempotent, fully acknowledged, batching producer.

    ``enable.idempotence`` makes librdkafka's own retries safe (no duplicates, order kept per
    partition); ``acks=all`` means a delivery report is a durable write.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
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
