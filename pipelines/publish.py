"""``payrecon publish``: publish a JSON-lines file to a Kafka topic, one message per line.

Each line is sent verbatim (the message value is the line's bytes without its newline),
malformed lines included, so a consumer sees exactly what the file holds. The message key is
the line's --key-field value when the line is a JSON object that has it (a string, or the
JSON text of a number); otherwise the message has no key.

The message timestamp is the line's --timestamp-field parsed as RFC 3339 (epoch ms). A line
without a valid one (malformed lines, mostly) gets the timestamp of the previous line that
had one, and leading such lines that of the first, so every line lands in the same time
window as its neighbours, where a windowed reader will find it and dead-letter it.

The topic is created with --partitions partitions if it does not exist (an existing topic
is used as it is). Messages go through payrecon's idempotent producer (acks=all); only
messages the broker acknowledged are counted as published.

Exit codes: 0 every line was acknowledged; 2 bad usage; 3 the broker was unreachable, or
some messages were not acknowledged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from pipelines.cli_args import OneLineParser, whole_number
from transforms.kafka_admin import admin_client, ensure_topics
from transforms.kafka_config import parse_overrides, producer_config
from transforms.kafka_offsets import BrokerUnavailable
from transforms.ledger_validation import parse_rfc3339_micros

PROG = "payrecon publish"
DEFAULT_TOPIC = "ledger.transactions"
CONNECT_TIMEOUT_S = 15.0
FLUSH_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 2.0
MAX_UNTIMED_LEADING_LINES = 100_000
_ERRORS_KEPT = 5


@dataclass
class PublishResult:
    """What the broker acknowledged. ``published`` counts acknowledged messages only."""

    topic: str
    produced: int = 0  # handed to the producer
    published: int = 0  # acknowledged by the broker
    failed: int = 0  # delivery failed, or still unacknowledged when the flush timed out
    bytes: int = 0  # value bytes of the acknowledged messages
    partitions: dict[int, int] = field(default_factory=dict)  # acknowledged per partition
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # the first few delivery errors

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.published == self.produced

    @property
    def rate(self) -> float:
        """Acknowledged messages per second."""
        return self.published / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        per_partition = ", ".join(f"{p}: {n:,}" for p, n in sorted(self.partitions.items()))
        lines = [
            f"published {self.published:,} of {self.produced:,} messages "
            f"({self.bytes:,} bytes) to {self.topic} in {self.seconds:.1f}s "
            f"({self.rate:,.0f} msgs/s)",
            f"per partition: {per_partition or 'none'}",
        ]
        if self.failed:
            lines.append(f"NOT acknowledged: {self.failed:,}; first errors: {self.errors}")
        return "\n".join(lines)


def message_key(obj: Any, key_field: str | None) -> bytes | None:
    """The key for a parsed line: its ``key_field`` value as text, or None."""
    if not key_field or not isinstance(obj, dict):
        return None
    value = obj.get(key_field)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value).encode()
    return None


def message_timestamp_ms(obj: Any, timestamp_field: str | None) -> int | None:
    """The line's ``timestamp_field`` as epoch ms when it is valid RFC 3339, else None."""
    if not timestamp_field or not isinstance(obj, dict):
        return None
    value = obj.get(timestamp_field)
    if not isinstance(value, str):
        return None
    micros = parse_rfc3339_micros(value)
    return None if micros is None else micros // 1000


def _parse(value: bytes) -> Any:
    if value.lstrip()[:1] != b"{":
        return None  # only objects can carry a key or a timestamp
    try:
        return json.loads(value)
    except ValueError:  # includes UnicodeDecodeError
        return None


def keyed_messages(
    lines: Iterable[bytes | str], key_field: str | None, timestamp_field: str | None
) -> Iterator[tuple[bytes, bytes | None, int | None]]:
    """``(value, key, timestamp_ms)`` per line, timestamps filled in from neighbours.

    Lines before the first valid timestamp are held back (at most
    ``MAX_UNTIMED_LEADING_LINES``) and get the first valid one; after it, a line without
    one gets the previous valid one. ``None`` means the producer's clock.
    """
    last_ms: int | None = None
    waiting: list[tuple[bytes, bytes | None]] = []
    for line in lines:
        value = line.encode() if isinstance(line, str) else line
        if value.endswith(b"\n"):
            value = value[:-2] if value.endswith(b"\r\n") else value[:-1]
        obj = _parse(value)
        key = message_key(obj, key_field)
        ts = message_timestamp_ms(obj, timestamp_field)
        if ts is not None:
            last_ms = ts
            if waiting:
                yield from ((v, k, ts) for v, k in waiting)
                waiting.clear()
        elif last_ms is None and timestamp_field:
            waiting.append((value, key))
            if len(waiting) >= MAX_UNTIMED_LEADING_LINES:  # give up waiting, keep the order
                yield from ((v, k, None) for v, k in waiting)
                waiting.clear()
            continue
        yield value, key, last_ms
    yield from ((v, k, None) for v, k in waiting)


class _Deliveries:
    """Delivery-report bookkeeping (called from ``poll``/``flush`` on this thread)."""

    def __init__(self, result: PublishResult):
        self.result = result

    def __call__(self, err, msg) -> None:
        result = self.result
        if err is not None:
            result.failed += 1
            if len(result.errors) < _ERRORS_KEPT:
                result.errors.append(str(err))
            return
        result.published += 1
        result.bytes += len(msg.value() or b"")
        partition = msg.partition()
        result.partitions[partition] = result.partitions.get(partition, 0) + 1


def check_broker(bootstrap_servers: str, overrides: dict, timeout: float) -> None:
    """Raises ``BrokerUnavailable`` unless the broker answers a metadata request in time."""
    with admin_client(bootstrap_servers, overrides) as admin:
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"no answer from {bootstrap_servers} in {timeout:g}s") from exc


def publish_lines(
    bootstrap_servers: str,
    topic: str,
    lines: Iterable[bytes | str],
    *,
    partitions: int = 4,
    key_field: str | None = "order_id",
    timestamp_field: str | None = "occurred_at",
    kafka_config: dict[str, Any] | None = None,
    create_topic: bool = True,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    flush_timeout: float = FLUSH_TIMEOUT_S,
    progress: Callable[[PublishResult], None] | None = None,
) -> PublishResult:
    """Publishes each line as one message; returns what the broker acknowledged.

    Raises ``BrokerUnavailable`` if the broker does not answer within ``connect_timeout``.
    Delivery failures do not raise: check ``result.ok`` (``failed`` counts them).
    ``kafka_config`` holds extra librdkafka settings (they override payrecon's defaults).
    """
    overrides = dict(kafka_config or {})
    check_broker(bootstrap_servers, overrides, connect_timeout)
    if create_topic:
        ensure_topics(
            bootstrap_servers,
            [topic],
            partitions,
            overrides,
            timeout=connect_timeout,
        )
    result = PublishResult(topic)
    config = producer_config(
        bootstrap_servers,
        # murmur2 is the partitioner of the Java client and Kafka Streams: the same key lands
        # in the same partition whichever client wrote it.
        {
            "partitioner": "murmur2_random",
            **overrides,
            "on_delivery": _Deliveries(result),
        },
    )
    producer = Producer(config)
    started = last_report = time.monotonic()
    for value, key, timestamp_ms in keyed_messages(lines, key_field, timestamp_field):
        result.produced += 1
        try:
            _produce(producer, topic, value, key, timestamp_ms)
        except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
            result.failed += 1
            if len(result.errors) < _ERRORS_KEPT:
                result.errors.append(str(exc.args[0]))
        if progress and result.produced % 8192 == 0:
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                result.seconds, last_report = now - started, now
                progress(result)
    remaining = producer.flush(flush_timeout)
    result.failed += remaining
    result.seconds = time.monotonic() - started
    return result


def _produce(
    producer: Producer, topic: str, value: bytes, key: bytes | None, timestamp_ms: int | None
) -> None:
    kwargs: dict[str, Any] = {"key": key}
    if timestamp_ms is not None:
        kwargs["timestamp"] = timestamp_ms
    while True:
        try:
            producer.produce(topic, value, **kwargs)
            break
        except BufferError:  # the local queue is full: serve delivery reports, then retry
            producer.poll(0.05)
    producer.poll(0)


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, host:port[,host:port] "
        "(default: %(default)s, where `payrecon broker` listens).",
    )
    parser.add_argument(
        "--topic", default=DEFAULT_TOPIC, help="Topic to publish to (default: %(default)s)."
    )
    parser.add_argument(
        "--file", type=Path, required=True, help="JSON-lines file to publish, one message per line."
    )
    parser.add_argument(
        "--partitions",
        type=whole_number(1),
        default=4,
        help="Partitions of the topic if it has to be created (default: %(default)s).",
    )
    parser.add_argument(
        "--key-field",
        default="order_id",
        help="Field whose value is the message key (default: %(default)s; '' for no keys).",
    )
    parser.add_argument(
        "--timestamp-field",
        default="occurred_at",
        help="RFC 3339 field used as the message timestamp (default: "
        "%(default)s; '' for the producer's clock).",
    )
    parser.add_argument(
        "--kafka-config",
        action="append",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Extra librdkafka settings, e.g. security.protocol=SASL_SSL (repeatable).",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        help="Seconds to wait for the broker to answer (default: %(default)s).",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    return parser


def _read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=1 << 20) as f:
        yield from f


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        overrides = parse_overrides(pair for pairs in args.kafka_config for pair in pairs)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.file.is_file():
        parser.error(f"argument --file: {str(args.file)!r} is not a readable file")

    def report(progress: PublishResult) -> None:
        print(
            f"{PROG}: {progress.produced:,} produced, {progress.published:,} acknowledged "
            f"({progress.published / max(progress.seconds, 1e-9):,.0f} msgs/s)",
            file=sys.stderr,
        )

    try:
        result = publish_lines(
            args.bootstrap_servers,
            args.topic,
            _read_lines(args.file),
            partitions=args.partitions,
            key_field=args.key_field or None,
            timestamp_field=args.timestamp_field or None,
            kafka_config=overrides,
            connect_timeout=args.timeout,
            progress=None if args.quiet else report,
        )
    except BrokerUnavailable as exc:
        print(f"{PROG}: broker unavailable: {exc}", file=sys.stderr)
        return 3
    print(result.render())
    if not result.ok:
        print(f"{PROG}: {result.failed:,} message(s) were not acknowledged", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
