"""``payrecon reconcile``: the ledger window joined with Stripe, every difference named.

Reads ``ledger.transactions`` for ``[window start - margin, window end + margin)`` and
Stripe's balance transactions for the same range (API or itemized exports), decodes and
validates both, matches them bucketed by Stripe object, classifies every discrepancy kind of
DESIGN.md, publishes each discrepancy to ``recon.discrepancies`` keyed by its deterministic
id, stages every table, then loads the warehouse in one transaction and only then commits
the consumer group's offsets. A rerun of the same window with the same inputs produces the
same run id, the same discrepancy ids and the same tables.

Exit codes: 0 success; 1 more discrepancies than ``--max-discrepancies`` or a failing
data-quality suite; 2 bad usage or configuration; 3 broker, Stripe or warehouse unreachable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from typing import NamedTuple

import apache_beam as beam

from pipelines.options import KafkaOptions, UsageError, WindowOptions
from pipelines.reconcile_run import ReconcileRequest, run_reconcile
from schemas.tables import TABLES
from transforms.dead_letters import WriteDeadLetters
from transforms.decode import DEFAULT_MAX_PAYLOAD_BYTES, DecodeLedgerEvents
from transforms.discrepancy_sink import discrepancy_records
from transforms.kafka import KafkaRecord, WriteToKafka
from transforms.ledger_mapping import LedgerFieldMap
from transforms.match import MatchAndClassify, MatchConfig
from transforms.payout_totals import SumPayouts
from transforms.quality import ValidateBatches
from transforms.quality_suites import (
    DISCREPANCIES,
    LEDGER_EVENTS,
    PAYOUT_TOTALS,
    STRIPE_BALANCE_TRANSACTIONS,
    window_parameters,
)
from transforms.staging import StageTables
from transforms.stripe_files import StripeExportBatches

JOB = "reconcile"
log = logging.getLogger(__name__)


class ReconcileOptions(KafkaOptions, WindowOptions):
    """Options of ``payrecon reconcile`` (DESIGN.md's command line; extend, never rename)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--stripe-source",
            dest="stripe_source",
            help="api (balance transactions from the Stripe API, key in $STRIPE_API_KEY), or "
            "an itemized export file or pattern: balance_change_from_activity.csv, *.parquet.",
        )
        parser.add_argument(
            "--warehouse",
            default="duckdb:///payrecon.duckdb",
            help="Where the tables go: duckdb:///path.duckdb[?memory_limit=1GB], "
            "bigquery://project/dataset[?location=EU] or "
            "snowflake://account/database/schema[?warehouse=W&role=R] (credentials from the "
            "environment, see docs/warehouses.md; default: %(default)s).",
        )
        parser.add_argument(
            "--ledger-topic",
            dest="ledger_topics",
            action="append",
            default=None,
            help="Ledger topic to read (repeatable; default: ledger.transactions).",
        )
        parser.add_argument(
            "--repairs-topic",
            dest="repairs_topic",
            default="ledger.repairs",
            help="The repair events of `payrecon repair`, read with the ledger topics: an "
            "object's repair events supersede its original events ('' to read none; "
            "default: %(default)s).",
        )
        parser.add_argument(
            "--discrepancies-topic",
            dest="discrepancies_topic",
            default="recon.discrepancies",
            help="Topic the discrepancies are published to (default: %(default)s).",
        )
        parser.add_argument(
            "--group-id",
            dest="group_id",
            default="payrecon-reconcile",
            help="Consumer group whose offsets are committed after the run (default: %(default)s).",
        )
        parser.add_argument(
            "--lateness-margin",
            dest="lateness_margin",
            default="10m",
            help="How far outside the window to look for the other side of a record, e.g. "
            "30s, 10m, 1h (default: %(default)s).",
        )
        parser.add_argument(
            "--as-of",
            dest="as_of",
            default=None,
            help="RFC 3339 time the run reports as of: decides which Stripe funds are still "
            "pending and is each discrepancy's detected_at (default: now).",
        )
        parser.add_argument(
            "--max-discrepancies",
            dest="max_discrepancies",
            type=int,
            default=None,
            help="Exit 1 when more discrepancies than this are found (default: no limit).",
        )
        parser.add_argument(
            "--staging-dir",
            dest="staging_dir",
            default=None,
            help="Where the run stages its tables before the warehouse load (default: a "
            "folder beside a DuckDB warehouse, else the system temp dir; gs:// on Dataflow).",
        )
        parser.add_argument(
            "--buckets",
            type=int,
            default=16,
            help="Hash buckets of the join: more shard wider (default: %(default)s).",
        )
        parser.add_argument(
            "--stripe-api-base",
            dest="stripe_api_base",
            default=None,
            help="Stripe API base URL (default: Stripe's; for localstripe or a proxy).",
        )
        parser.add_argument(
            "--ledger-field-map",
            dest="ledger_field_map",
            default=None,
            metavar="JSON",
            help='Ledger events of another shape: {"fields": {"source.path": "v1_field"}, '
            '"constants": {"v1_field": value}}, applied before decoding (payrecon.yaml\'s '
            "ledger_mapping; default: the events are ledger event v1).",
        )
        parser.add_argument(
            "--max-payload-bytes",
            dest="max_payload_bytes",
            type=int,
            default=DEFAULT_MAX_PAYLOAD_BYTES,
            help="Larger ledger messages are dead-lettered (default: %(default)s).",
        )


class ReconcileOutputs(NamedTuple):
    dead_letters: beam.PCollection
    ledger_events: beam.PCollection
    ledger_quarantined: beam.PCollection
    stripe_rows: beam.PCollection
    stripe_rejected: beam.PCollection
    stripe_quarantined: beam.PCollection
    discrepancies: beam.PCollection
    matches: beam.PCollection
    pending: beam.PCollection
    counts: beam.PCollection
    totals: beam.PCollection
    dq_results: beam.PCollection
    payouts_quarantined: beam.PCollection


def build(
    ledger_messages,
    stripe: StripeExportBatches,
    *,
    config: MatchConfig,
    buckets: int,
    max_payload_bytes: int,
    field_map: LedgerFieldMap | None = None,
    spill_dir: str | None = None,
) -> ReconcileOutputs:
    """The job's logic, from raw ledger message batches and Stripe row batches to every
    output (tests feed it small inputs; ``run`` feeds it Kafka and Stripe). ``spill_dir``:
    the join's shuffle goes through files there (local runners; see MatchAndClassify)."""
    params = window_parameters(config.read_start, config.read_end)
    decoded = ledger_messages | "DecodeLedgerEvents" >> DecodeLedgerEvents(
        job=JOB, max_payload_bytes=max_payload_bytes, field_map=field_map or LedgerFieldMap()
    )
    ledger = decoded.events | "ValidateLedger" >> ValidateBatches(
        LEDGER_EVENTS, params, config.run_id, validated_at=config.detected_at
    )
    stripe_ok = stripe.rows | "ValidateStripe" >> ValidateBatches(
        STRIPE_BALANCE_TRANSACTIONS, params, config.run_id, validated_at=config.detected_at
    )
    found = (ledger.passed, stripe_ok.passed) | "MatchAndClassify" >> MatchAndClassify(
        config, buckets=buckets, spill_dir=spill_dir
    )
    checked = found.discrepancies | "ValidateDiscrepancies" >> ValidateBatches(
        DISCREPANCIES, {}, config.run_id, validated_at=config.detected_at
    )
    payouts = (
        stripe_ok.passed
        | "SumPayouts" >> SumPayouts()
        | "ValidatePayouts"
        >> ValidateBatches(PAYOUT_TOTALS, {}, config.run_id, validated_at=config.detected_at)
    )
    dq_results = (
        ledger.results,
        stripe_ok.results,
        checked.results,
        payouts.results,
    ) | "AllDqResults" >> beam.Flatten()
    return ReconcileOutputs(
        decoded.dead_letters,
        ledger.passed,
        ledger.quarantined,
        stripe_ok.passed,
        stripe.rejected,
        stripe_ok.quarantined,
        checked.passed,
        found.matches,
        found.pending,
        found.counts,
        found.totals,
        dq_results,
        payouts.quarantined,
    )


# staged name -> warehouse table (None: staged for the summary only)
STAGED_TABLES = {
    "discrepancies": "recon_discrepancies",
    "matches": "recon_matches",
    "pending": "recon_matches",
    "ledger_events": "fact_ledger_events",
    "stripe_rows": "fact_balance_transactions",
    "dq_results": "dq_results",
    "counts": None,
    "totals": None,
    "dead_letters": None,
    "ledger_quarantined": None,
    "stripe_quarantined": None,
    "stripe_rejected": None,
    "payouts_quarantined": None,
}


def wire_sinks(
    outputs: ReconcileOutputs,
    *,
    bootstrap: str,
    producer_overrides: dict,
    discrepancies_topic: str,
    staging: str,
) -> None:
    """Kafka sinks (keyed, idempotent by id) and the staged tables for the warehouse load."""
    outputs.dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
        bootstrap, producer_overrides=producer_overrides
    )
    (
        outputs.discrepancies
        | "ToDiscrepancyRecords" >> beam.FlatMap(discrepancy_records).with_output_types(KafkaRecord)
        | "PublishDiscrepancies"
        >> WriteToKafka(bootstrap, discrepancies_topic, producer_overrides=producer_overrides)
    )
    for name, table in STAGED_TABLES.items():
        schema = TABLES[table].schema if table else None
        getattr(outputs, name) | f"Stage_{name}" >> StageTables(staging, name, schema)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payrecon reconcile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --flag is passed to Beam (e.g. --runner=DataflowRunner, "
        "--direct_num_workers=2).",
    )
    for options in (ReconcileOptions, KafkaOptions, WindowOptions):
        options._add_argparse_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    known, beam_args = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        request = ReconcileRequest.from_args(known, now=datetime.now(UTC))
    except UsageError as exc:
        print(f"payrecon reconcile: {exc}", file=sys.stderr)
        return 2
    return run_reconcile(request, beam_args)


if __name__ == "__main__":
    raise SystemExit(main())
