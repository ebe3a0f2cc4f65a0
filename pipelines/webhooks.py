"""``payrecon webhooks``: receive Stripe's webhooks into Kafka, and turn them into order updates.

``payrecon webhooks serve`` runs the receiver (:mod:`pipelines.webhook_app`): POST
/stripe/webhook verifies the Stripe-Signature with the endpoint's signing secret (from
$STRIPE_WEBHOOK_SECRET, never logged) and answers 200 only once the event is on
``stripe.events`` (acknowledged by the broker), 400 for an unsigned, forged or replayed
delivery (nothing is published), 503 if the broker did not acknowledge (Stripe retries).

``payrecon webhooks consume`` (:mod:`pipelines.stripe_events`) reads ``stripe.events`` in a
consumer group and publishes order status updates to ``orders.status`` and ledger events to
``ledger.transactions``, deterministically (a redelivered event gives identical records),
committing offsets only after the broker acknowledged its outputs. Events it cannot map go to
``stripe.events.dlq`` with the reason. Subscribe the Stripe endpoint to these event types:
{handled}

Exit codes: 0 success; 2 bad usage or configuration; 3 the broker was unreachable or did
not acknowledge. ``serve`` runs until SIGINT/SIGTERM, answers the deliveries in flight, then
exits by that signal (uvicorn's convention); ``consume`` finishes its batch and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import textwrap
import threading
from types import FrameType
from typing import Any

from pydantic import SecretStr

from pipelines.cli_args import OneLineParser, whole_number
from pipelines.publish import check_broker
from pipelines.stripe_events import DEFAULT_GROUP_ID, StripeEventsConsumer, Topics
from pipelines.webhook_app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REMEMBERED,
    DEFAULT_TOLERANCE_S,
    WEBHOOK_PATH,
    ReceiverConfig,
    create_app,
)
from pipelines.webhook_publisher import AckedPublisher
from transforms.kafka_admin import ensure_topics
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import BrokerUnavailable
from transforms.stripe_events import HANDLED_TYPES

PROG = "payrecon webhooks"
SECRET_ENV = "STRIPE_WEBHOOK_SECRET"

__doc__ = (__doc__ or "").format(handled=textwrap.fill(", ".join(HANDLED_TYPES) + ".", 92))


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not more than 0 seconds")
    return value


def _kafka_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, host:port[,host:port] (default: %(default)s).",
    )
    parser.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra librdkafka setting for every client (repeatable).",
    )
    parser.add_argument(
        "--broker-timeout",
        type=_positive_seconds,
        default=15.0,
        help="Seconds to wait for the broker at start before exit code 3 (default: %(default)s).",
    )
    parser.add_argument(
        "--partitions",
        type=whole_number(1),
        default=4,
        help="Partitions of a topic that has to be created (default: %(default)s).",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,consume}")
    serve = commands.add_parser(
        "serve", help="Run the webhook receiver.", description=f"POST {WEBHOOK_PATH}, GET /healthz."
    )
    _kafka_flags(serve)
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (%(default)s).")
    serve.add_argument(
        "--port", type=whole_number(0), default=8000, help="Port to listen on (%(default)s)."
    )
    serve.add_argument("--topic", default="stripe.events", help="Topic (default: %(default)s).")
    serve.add_argument(
        "--tolerance",
        type=whole_number(1),
        default=DEFAULT_TOLERANCE_S,
        help="Oldest signature accepted, in seconds; older ones are replays (%(default)s).",
    )
    serve.add_argument(
        "--ack-timeout",
        type=_positive_seconds,
        default=5.0,
        help="Seconds to wait for the broker's acknowledgement before answering 503 "
        "(default: %(default)s; keep it well under Stripe's response timeout).",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=whole_number(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help="Largest request body accepted (default: %(default)s).",
    )
    serve.add_argument(
        "--remembered",
        type=whole_number(1),
        default=DEFAULT_REMEMBERED,
        help="Acknowledged event ids kept to answer duplicate deliveries (%(default)s).",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])

    consume = commands.add_parser(
        "consume", help="Map stripe.events to orders.status and ledger events."
    )
    _kafka_flags(consume)
    consume.add_argument(
        "--topic", default="stripe.events", help="Topic of Stripe events (default: %(default)s)."
    )
    consume.add_argument(
        "--status-topic",
        default="orders.status",
        help="Topic of order status updates (default: %(default)s).",
    )
    consume.add_argument(
        "--ledger-topic",
        default="ledger.transactions",
        help="Topic of ledger events (default: %(default)s).",
    )
    consume.add_argument(
        "--group-id",
        default=DEFAULT_GROUP_ID,
        help="Consumer group; its offsets say what was processed (default: %(default)s).",
    )
    consume.add_argument(
        "--max-messages", type=whole_number(1), help="Stop after this many messages."
    )
    consume.add_argument(
        "--idle-timeout",
        type=_positive_seconds,
        help="Stop when no message came for this many seconds (default: run until stopped).",
    )
    consume.add_argument(
        "--batch-size", type=whole_number(1), default=500, help="Messages per commit (%(default)s)."
    )
    consume.add_argument(
        "--stripe-api-base",
        help="Stripe API base URL for the order lookup of disputes (a proxy, or localstripe).",
    )
    return parser


def _order_lookup(args: argparse.Namespace):
    """With $STRIPE_API_KEY: a dispute's order from its charge's metadata (cached). A Stripe
    outage raises out of the batch, so nothing is committed and the batch is retried."""
    import os

    key = os.environ.get("STRIPE_API_KEY")
    if not key:
        return None
    from transforms.stripe_api import StripeClient

    client = StripeClient(key, api_base=args.stripe_api_base)
    cache: dict[str, str | None] = {}

    def order_of_charge(charge_id: str) -> str | None:
        if charge_id not in cache:
            charge = client.retrieve("charge", charge_id)
            cache[charge_id] = (charge.get("metadata") or {}).get("order_id")
        return cache[charge_id]

    return order_of_charge


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        overrides = parse_overrides(args.kafka_config)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.command == "serve":
            return _serve(args, overrides)
        return _consume(args, overrides)
    except BrokerUnavailable as exc:
        print(f"{PROG} {args.command}: broker unavailable: {exc}", file=sys.stderr)
        return 3


def _serve(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import uvicorn  # only the receiver needs the web server

    secret = os.environ.get(SECRET_ENV, "").strip()
    if not secret:
        print(
            f"{PROG} serve: ${SECRET_ENV} is not set; give it the endpoint's signing secret "
            "(whsec_..., Stripe dashboard > Developers > Webhooks)",
            file=sys.stderr,
        )
        return 2
    _prepare_topics(args, overrides, [args.topic])
    publisher = AckedPublisher(
        args.bootstrap_servers, args.topic, ack_timeout_s=args.ack_timeout, kafka_config=overrides
    )
    config = ReceiverConfig(SecretStr(secret), args.tolerance, args.max_body_bytes, args.remembered)
    uvicorn.run(
        create_app(publisher, config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        server_header=False,
    )
    return 0


def _consume(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    topics = Topics(args.topic, args.status_topic, args.ledger_topic)
    _prepare_topics(args, overrides, list(topics.all))
    consumer = StripeEventsConsumer(
        args.bootstrap_servers,
        topics,
        group_id=args.group_id,
        kafka_config=overrides,
        batch_size=args.batch_size,
        order_of_charge=_order_lookup(args),
    )
    with _stop_on_signals(consumer.stop):
        counts = consumer.run(
            max_messages=args.max_messages,
            idle_timeout_s=args.idle_timeout,
            join_timeout_s=max(args.broker_timeout, 30.0),
        )
    print(counts.render())
    return 0


def _prepare_topics(args: argparse.Namespace, overrides: dict[str, Any], topics: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check_broker(args.bootstrap_servers, overrides, args.broker_timeout)
    ensure_topics(
        args.bootstrap_servers, topics, args.partitions, overrides, timeout=args.broker_timeout
    )


class _stop_on_signals:
    """SIGINT/SIGTERM call ``stop`` (a graceful end after the current batch) while inside."""

    def __init__(self, stop: Any):
        self._stop = stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self._stop()

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
