"""``payrecon repair``: fetch what Stripe says about each new discrepancy and heal the ledger.

Reads ``recon.discrepancies`` from the consumer group's committed offsets to the end. For
each discrepancy it asks Stripe (the API, or the itemized exports a reconcile read) and
either publishes the ledger events that make the ledger agree with Stripe to
``ledger.repairs`` (deterministic event ids: repeating a repair is a no-op), or, when a
human must decide (a double charge to refund, money the ledger claims that Stripe never
moved), publishes a review record to ``recon.review``. What it did goes to the warehouse
table ``recon_repairs``. The next ``payrecon reconcile`` reads ``ledger.repairs`` with
``ledger.transactions`` and reports only what is still wrong.

Exit codes: 0 done (reviews are results, not failures), 2 bad usage, 3 the broker, Stripe
or the warehouse unreachable (nothing committed: rerun).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from pipelines.cli_args import OneLineParser
from pipelines.options import UsageError, rfc3339
from pipelines.repair_run import RepairRequest, run_repair
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import BrokerUnavailable
from transforms.repair_truth import ApiTruth, ExportTruth
from transforms.stripe_io import API, API_KEY_ENV

PROG = "payrecon repair"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--bootstrap-servers", default="127.0.0.1:9092", help="Kafka bootstrap servers "
        "(default: %(default)s).")  # fmt: skip
    add("--broker-timeout", type=float, default=30.0, help="Seconds to wait for the broker "
        "before exit code 3 (default: %(default)s).")  # fmt: skip
    add("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
        help="Extra librdkafka setting (repeatable).")  # fmt: skip
    add("--discrepancies-topic", default="recon.discrepancies",
        help="Where reconcile publishes discrepancies (default: %(default)s).")  # fmt: skip
    add("--repairs-topic", default="ledger.repairs",
        help="Where repair events go; reconcile reads it (default: %(default)s).")  # fmt: skip
    add("--review-topic", default="recon.review",
        help="Where discrepancies for humans go (default: %(default)s).")  # fmt: skip
    add("--group-id", default="payrecon-repair",
        help="Consumer group marking what was handled (default: %(default)s).")  # fmt: skip
    add("--stripe-source", default=API, help="Where Stripe's truth comes from: api (key in "
        f"${API_KEY_ENV}), or the itemized export files a reconcile read, as a file or "
        "pattern (default: %(default)s).")  # fmt: skip
    add("--stripe-api-base", help="Stripe API base URL (a proxy, or localstripe in tests).")
    add("--as-of", help="When the exports were produced, RFC 3339 (decides pending funds; "
        "default: now).")  # fmt: skip
    add("--warehouse", default="duckdb:///payrecon.duckdb",
        help="Where recon_repairs and recon_health go (default: %(default)s).")  # fmt: skip
    return parser


def _truth_source(args):
    if args.stripe_source == API:
        from transforms.stripe_api import StripeClient

        key = os.environ.get(API_KEY_ENV)
        if not key:
            raise UsageError(f"--stripe-source api needs the Stripe key in ${API_KEY_ENV}")
        return ApiTruth(StripeClient(key, api_base=args.stripe_api_base))
    try:
        as_of = rfc3339(args.as_of) if args.as_of else datetime.now(UTC)
        return ExportTruth(args.stripe_source, as_of)
    except (FileNotFoundError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"--stripe-source / --as-of: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        truth = _truth_source(args)
        request = RepairRequest(
            bootstrap_servers=args.bootstrap_servers,
            kafka_overrides=parse_overrides(args.kafka_config),
            broker_timeout=args.broker_timeout,
            discrepancies_topic=args.discrepancies_topic,
            repairs_topic=args.repairs_topic,
            review_topic=args.review_topic,
            group_id=args.group_id,
            warehouse=args.warehouse,
            stripe_source=args.stripe_source,
        )
    except (UsageError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        return run_repair(request, truth)
    except BrokerUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
