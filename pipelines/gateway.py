"""``payrecon gateway``: the payment gateway adapter, sole consumer of payments.requests.

Each payment request v1 is paid through a gateway implementation (Stripe PaymentIntents by
default; ``--gateway``/``--route`` add others, such as the ``voucher`` gateway for konbini,
OXXO or boleto) with an idempotency key derived from its request_id, so a request delivered
twice (a crash before the commit, a rebalance) is paid once. Results go to payments.results
keyed by request_id; every gateway call and every concurrency change goes to
payments.telemetry; poison pills (malformed JSON, a missing amount, an unknown currency, a
request the gateway refuses for good) go to payments.requests.dlq, byte for byte, with the
reason in the payrecon.dlq.* headers. Card declines are results (status failed).

Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential
backoff and full jitter, never sooner than the server's Retry-After; an AIMD controller
halves the number of concurrent calls on a 429 or a timeout and adds one back after
--increase-after successes, so a rate-limit surge slows the consumer instead of failing it.
It also listens to the telemetry job's alerts (--alerts-topic, on by default; --no-alerts
turns it off): an alert for a gateway it runs of a 429 surge or a latency p95 spike halves
the ceiling the concurrency may grow to and doubles the backoff base (at most once per
--alert-cooldown); after --alert-quiet seconds without such an alert, each --alert-quiet
gives a quarter of --max-concurrency back to the ceiling and halves the backoff factor,
until the configured values are back. Error-rate and
conversion alerts do not slow it down (waiting fixes neither), nor do alerts for other
gateways, repeated alert ids, or alerts whose window ended more than --alert-max-age ago
(it reads the alerts of that last stretch at start). Every such change is a controller
telemetry event with reason alert:<metric> or recovered, and counted in the summary.
Offsets are committed only after the result or dead letter was acknowledged by the broker.

--config payrecon.yaml takes the broker, the topics and these alert settings (its gateway
section) from the file that configures the scheduled jobs; a flag given as well wins.

It runs until SIGTERM or SIGINT (finishing the calls in flight, then committing), or
bounded: --max-messages N, --idle-timeout S. The summary proves the counts:
requests in = results + dead letters + unfinished (uncommitted, processed again later).

The Stripe key comes from $STRIPE_API_KEY, never from a flag.

Exit codes: 0 stopped normally; 1 more dead letters than --max-dead-letters; 2 bad usage
or configuration, or Stripe refused the key; 3 the broker or a gateway was unreachable
after retries (--give-up-after).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import SecretStr

from pipelines.cli_args import OneLineParser, whole_number
from pipelines.config import ConfigError, load_config
from pipelines.config_jobs import gateway_argv
from pipelines.gateway_service import GatewayJob, GatewayService
from pipelines.gateway_summary import GatewaySummary
from pipelines.gateway_worker import GatewayMisconfigured, GatewayUnavailable
from transforms.aimd import AimdSettings
from transforms.alert_governor import GovernorSettings
from transforms.gateways import GATEWAYS, GatewayConfigError, GatewaySettings, build_gateway
from transforms.gateways.routing import Routes, parse_pairs
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import BrokerUnavailable
from transforms.payment_requests import DEFAULT_MAX_PAYLOAD_BYTES
from transforms.retry import RetryPolicy

PROG = "payrecon gateway"
API_KEY_ENV = "STRIPE_API_KEY"


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not more than 0 seconds")
    return value


def factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is less than 1 (1: never slower)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="payrecon.yaml: its broker, topics and gateway section (alert settings) as flags; "
        "a flag given here wins over the file (docs/operations.md).",
    )
    kafka = parser.add_argument_group("Kafka")
    kafka.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, host:port[,host:port] (default: %(default)s).",
    )
    kafka.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra librdkafka setting for every client (repeatable), e.g. "
        "security.protocol=SASL_SSL or session.timeout.ms=10000.",
    )
    kafka.add_argument(
        "--broker-timeout",
        type=positive_seconds,
        default=30.0,
        help="Seconds to wait for the broker before giving up with exit code 3 "
        "(default: %(default)s).",
    )
    for flag, default in (
        ("--requests-topic", "payments.requests"),
        ("--results-topic", "payments.results"),
        ("--telemetry-topic", "payments.telemetry"),
    ):
        kafka.add_argument(flag, default=default, help="(default: %(default)s)")
    kafka.add_argument(
        "--group-id",
        default="payrecon-gateway",
        help="Consumer group; run more consumers in it to share the partitions "
        "(default: %(default)s).",
    )
    kafka.add_argument(
        "--partitions",
        type=whole_number(1),
        default=4,
        help="Partitions of the topics if they must be created (default: %(default)s).",
    )
    kafka.add_argument(
        "--commit-interval",
        type=positive_seconds,
        default=1.0,
        help="Seconds between offset commits; a crash redelivers at most this much, "
        "idempotently (default: %(default)s).",
    )
    _add_gateway_flags(parser.add_argument_group("gateways"))
    _add_flow_flags(parser.add_argument_group("retries and concurrency"))
    _add_alert_flags(parser.add_argument_group("telemetry alerts (slowing down by itself)"))
    bounds = parser.add_argument_group("bounded runs (tests, micro-batches)")
    bounds.add_argument(
        "--max-messages",
        type=whole_number(1),
        default=None,
        help="Stop after this many requests are read and processed.",
    )
    bounds.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=None,
        help="Stop after this many seconds without a new request (and nothing in flight).",
    )
    bounds.add_argument(
        "--max-dead-letters",
        type=whole_number(0),
        default=None,
        help="Exit 1 when the run dead-lettered more requests than this.",
    )
    return parser


def _add_gateway_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--gateway",
        action="append",
        default=None,
        metavar="NAME",
        help=f"A gateway this consumer runs (repeatable; one of: {', '.join(sorted(GATEWAYS))}); "
        "the first pays requests that name none and match no route (default: stripe).",
    )
    group.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="PAYMENT_METHOD_TYPE=NAME",
        help="Pay requests of this payment_method_type with gateway NAME (repeatable), "
        "e.g. konbini=voucher; NAME is run too. A request's own gateway field wins.",
    )
    group.add_argument(
        "--gateway-option",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="A setting of one gateway (repeatable), e.g. voucher.path=vouchers.jsonl, "
        "voucher.payment_method_types=konbini,oxxo.",
    )
    group.add_argument(
        "--stripe-api-base",
        default=None,
        help="Stripe API base URL (default: Stripe's; for localstripe or a proxy).",
    )
    group.add_argument(
        "--stripe-timeout",
        type=positive_seconds,
        default=30.0,
        help="Seconds to wait for Stripe's answer to one call; longer is a timeout, "
        "retried (default: %(default)s).",
    )
    group.add_argument(
        "--stripe-connect-timeout",
        type=positive_seconds,
        default=10.0,
        help="Seconds to wait for a connection to Stripe (default: %(default)s).",
    )
    group.add_argument(
        "--max-payload-bytes",
        type=whole_number(1),
        default=DEFAULT_MAX_PAYLOAD_BYTES,
        help="Larger requests are dead-lettered (default: %(default)s).",
    )
    group.add_argument(
        "--consumer-id",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="This instance's name in telemetry (default: host-pid).",
    )


def _add_flow_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--concurrency",
        type=whole_number(1),
        default=4,
        help="Concurrent gateway calls at start (default: %(default)s).",
    )
    group.add_argument(
        "--min-concurrency", type=whole_number(1), default=1, help="(default: %(default)s)"
    )
    group.add_argument(
        "--max-concurrency",
        type=whole_number(1),
        default=16,
        help="Worker threads; the AIMD limit never exceeds it (default: %(default)s).",
    )
    group.add_argument(
        "--increase-after",
        type=whole_number(1),
        default=10,
        help="Successful calls in a row before the limit grows by one (default: %(default)s).",
    )
    group.add_argument(
        "--decrease-factor",
        type=float,
        default=0.5,
        help="The limit is multiplied by this on a 429 or a timeout (default: %(default)s).",
    )
    group.add_argument(
        "--max-attempts",
        type=whole_number(1),
        default=8,
        help="Calls per request before giving up, exit 3 (default: %(default)s).",
    )
    group.add_argument(
        "--backoff-base",
        type=positive_seconds,
        default=0.5,
        help="Retry n waits a random time up to base * 2^(n-1) seconds, capped by "
        "--backoff-max, and never less than Retry-After (default: %(default)s).",
    )
    group.add_argument(
        "--backoff-max", type=positive_seconds, default=30.0, help="(default: %(default)s)"
    )
    group.add_argument(
        "--give-up-after",
        type=positive_seconds,
        default=300.0,
        help="Seconds of retries for one request before the consumer stops with exit code "
        "3, leaving it uncommitted (default: %(default)s).",
    )


def _add_alert_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--alerts-topic",
        default="telemetry.alerts",
        help="Alerts of payrecon telemetry to act on (default: %(default)s).",
    )
    group.add_argument(
        "--alerts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Read alerts (the default); --no-alerts: only the calls' own 429s and timeouts "
        "set the concurrency.",
    )
    for flag, default, text in (
        ("--alert-cooldown", 60.0, "At most one slow-down per this many seconds (one alert "
         "window), however many alerts arrive"),
        ("--alert-quiet", 120.0, "Seconds without an alert before each recovery step"),
        ("--alert-max-age", 300.0, "Alerts whose window ended longer ago are ignored"),
    ):  # fmt: skip
        group.add_argument(
            flag, type=positive_seconds, default=default, help=f"{text} (default: %(default)s)."
        )
    group.add_argument(
        "--alert-max-backoff",
        type=factor,
        default=8.0,
        help="The highest factor alerts raise the backoff base to (default: %(default)s).",
    )


def job_from_args(args: argparse.Namespace) -> tuple[GatewayJob, GatewaySettings, list[str]]:
    """The run's configuration; raises GatewayConfigError (exit 2) naming the flag."""
    try:
        overrides = parse_overrides(args.kafka_config)
    except ValueError as exc:
        raise GatewayConfigError(str(exc)) from None
    names = list(args.gateway or ["stripe"])
    routes = Routes(names[0], parse_pairs(args.route, "--route"))
    names += [n for n in sorted(routes.targets) if n not in names]
    for name in names:
        if name not in GATEWAYS:
            known = ", ".join(sorted(GATEWAYS))
            raise GatewayConfigError(
                f"--gateway/--route: unknown gateway {name!r}; one of: {known}"
            )
    options = parse_pairs(args.gateway_option, "--gateway-option")
    for key in options:
        if key.partition(".")[0] not in GATEWAYS or "." not in key:
            raise GatewayConfigError(f"--gateway-option expects NAME.KEY=VALUE, got {key!r}")
    try:
        aimd = AimdSettings(
            initial=args.concurrency,
            minimum=args.min_concurrency,
            maximum=args.max_concurrency,
            increase_after=args.increase_after,
            decrease_factor=args.decrease_factor,
        )
    except ValueError as exc:
        raise GatewayConfigError(f"--concurrency/--min-/--max-concurrency: {exc}") from None
    secret = os.environ.get(API_KEY_ENV)
    settings = GatewaySettings(
        stripe_api_key=SecretStr(secret) if secret else None,
        stripe_api_base=args.stripe_api_base,
        connect_timeout_s=args.stripe_connect_timeout,
        read_timeout_s=args.stripe_timeout,
        options=options,
    )
    job = GatewayJob(
        bootstrap_servers=args.bootstrap_servers,
        routes=routes,
        consumer_id=args.consumer_id,
        requests_topic=args.requests_topic,
        results_topic=args.results_topic,
        telemetry_topic=args.telemetry_topic,
        group_id=args.group_id,
        partitions=args.partitions,
        kafka_overrides=overrides,
        broker_timeout_s=args.broker_timeout,
        max_messages=args.max_messages,
        idle_timeout_s=args.idle_timeout,
        commit_interval_s=args.commit_interval,
        max_payload_bytes=args.max_payload_bytes,
        retry=RetryPolicy(
            max_attempts=args.max_attempts,
            base_delay_s=args.backoff_base,
            max_delay_s=args.backoff_max,
            deadline_s=args.give_up_after,
        ),
        aimd=aimd,
        alerts_topic=args.alerts_topic if args.alerts else None,
        governor=GovernorSettings(
            max_backoff=args.alert_max_backoff,
            cooldown_s=args.alert_cooldown,
            quiet_s=args.alert_quiet,
            max_age_s=args.alert_max_age,
        ),
        request_timeout_s=args.stripe_connect_timeout + args.stripe_timeout,
    )
    return job, settings, names


def run_gateway(
    job: GatewayJob,
    settings: GatewaySettings,
    names: list[str],
    stopping: threading.Event | None = None,
) -> GatewaySummary:
    """Build the gateways, run the consumer until it stops, close the gateways."""
    gateways = {}
    try:
        for name in names:
            gateways[name] = build_gateway(name, settings)
        service = GatewayService(job, gateways, stopping)
        try:
            return service.run()
        finally:
            print(service.summary.render())
    finally:
        for gateway in gateways.values():
            gateway.close()


@contextmanager
def stop_on_signals(stopping: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT ask the consumer to stop gracefully (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The flags; with ``--config FILE``, the file's (:func:`gateway_argv`) come first, so a
    flag given here wins. A bad file exits 2 with one line naming each key."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        return args
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        parser.exit(2, f"{PROG}: {exc}\n")
    return parser.parse_args([*gateway_argv(config), *argv])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stopping = threading.Event()
    try:
        job, settings, names = job_from_args(args)
        with stop_on_signals(stopping):
            summary = run_gateway(job, settings, names, stopping)
    except (GatewayConfigError, GatewayMisconfigured) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except (BrokerUnavailable, GatewayUnavailable) as exc:
        print(f"{PROG}: unavailable: {exc}", file=sys.stderr)
        return 3
    if args.max_dead_letters is not None and summary.dead_lettered > args.max_dead_letters:
        print(
            f"{PROG}: {summary.dead_lettered} dead letters, more than "
            f"--max-dead-letters {args.max_dead_letters}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
