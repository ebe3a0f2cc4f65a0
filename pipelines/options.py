"""Typed options shared by the jobs, and parsing that turns user mistakes into exit code 2."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.ledger_validation import parse_rfc3339_micros


class UsageError(ValueError):
    """A bad flag or configuration value: the command prints it in one line and exits 2."""


def rfc3339(text: str) -> datetime:
    """argparse type for ``2026-11-20T00:00:00Z`` (milliseconds and offsets allowed)."""
    micros = parse_rfc3339_micros(text)
    if micros is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2026-11-20T00:00:00Z"
        )
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


class KafkaOptions(PipelineOptions):
    """Where the broker is and how to talk to it."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--bootstrap-servers",
            dest="bootstrap_servers",
            default="127.0.0.1:9092",
            help="Kafka bootstrap servers, host:port[,host:port] (default: %(default)s, "
            "where `payrecon broker` listens).",
        )
        parser.add_argument(
            "--broker-timeout",
            dest="broker_timeout",
            type=float,
            default=30.0,
            help="Seconds to wait for the broker before giving up with exit code 3 "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--kafka-config",
            "--kafka_config",
            dest="kafka_config",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Extra librdkafka setting for every client (repeatable), e.g. "
            "security.protocol=SASL_SSL.",
        )


class WindowOptions(PipelineOptions):
    """The time window a bounded job reads."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--window-start",
            "--window_start",
            dest="window_start",
            type=rfc3339,
            help="Start of the window, inclusive, RFC 3339 (e.g. 2026-11-20T00:00:00Z).",
        )
        parser.add_argument(
            "--window-end",
            "--window_end",
            dest="window_end",
            type=rfc3339,
            help="End of the window, exclusive, RFC 3339.",
        )


def check_window(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise UsageError(
            f"--window-end {end.isoformat()} is not after --window-start {start.isoformat()}"
        )
