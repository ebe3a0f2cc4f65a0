"""Warehouse tables: one definition each, shared by DuckDB, BigQuery and Snowflake.

A ``TableDef`` names the table, its pyarrow schema (columns, types, docs), its primary key
(every load is an upsert on it, so reruns never duplicate a row), and how a warehouse that
supports it should partition (by day) and cluster the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.discrepancy import DISCREPANCY_V1
from schemas.dq_result import (
    DQ_RESULT_CLUSTER_BY,
    DQ_RESULT_PARTITION_BY,
    DQ_RESULT_PRIMARY_KEY,
    DQ_RESULT_V1,
)
from schemas.fields import UTC_MICROS, field, versioned
from schemas.health import RECON_HEALTH_V1
from schemas.kafka_message import with_provenance
from schemas.ledger_event import LEDGER_EVENT_V1
from schemas.match import RECON_MATCH_V1
from schemas.repair import RECON_REPAIR_V1
from schemas.telemetry import (
    FACT_PAYMENT_REQUESTS_V1,
    PAYMENT_CONVERSION_V1,
    TELEMETRY_ANOMALIES_V1,
    TELEMETRY_CONSUMER_LAG_V1,
    TELEMETRY_MINUTELY_V1,
    TELEMETRY_REQUEST_PARTIALS_V1,
    TELEMETRY_WINDOW_COUNTS_V1,
)


@dataclass(frozen=True)
class TableDef:
    name: str
    schema: pa.Schema
    primary_key: tuple[str, ...]
    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [c for c in (*self.primary_key, *self.cluster_by) if c not in self.schema.names]
        if self.partition_by and self.partition_by not in self.schema.names:
            missing.append(self.partition_by)
        if missing:
            raise ValueError(f"table {self.name}: unknown key columns {missing}")


RECON_RUN_V1 = versioned(
    "recon_run",
    1,
    [
        field("run_id", pa.string(), "Deterministic id of the run: job, window and inputs."),
        field("job", pa.string(), "reconcile, repair, telemetry ..."),
        field("window_start", UTC_MICROS, "Start of the window, inclusive."),
        field("window_end", UTC_MICROS, "End of the window, exclusive."),
        field("started_at", UTC_MICROS, "When this attempt started."),
        field("finished_at", UTC_MICROS, "When this attempt finished."),
        field(
            "status",
            pa.string(),
            "succeeded, discrepancies_over_threshold or data_quality_failed (a run that "
            "failed has no row here, only in recon_health).",
        ),
        field("stripe_source", pa.string(), "api, or the export file name."),
        field(
            "offsets",
            pa.string(),
            "JSON: the Kafka offset ranges read per topic partition (repeatable).",
        ),
        field("messages_in", pa.int64(), "Kafka messages in the window."),
        field("events_out", pa.int64(), "Ledger events decoded."),
        field("dead_letters", pa.int64(), "Messages dead-lettered."),
        field("dead_letters_by_reason", pa.string(), "JSON object: reason -> count."),
        field("stripe_rows", pa.int64(), "Stripe balance transactions read."),
        field("matched", pa.int64(), "Ledger events matched to a balance transaction."),
        field("pending", pa.int64(), "Items not yet settled (not discrepancies)."),
        field("discrepancies", pa.int64(), "Discrepancies found."),
        field("discrepancies_by_kind", pa.string(), "JSON object: kind -> count."),
        field("totals", pa.string(), "JSON: per currency, both sides, minor units."),
        field("dq_failures", pa.int64(), "Data-quality expectations that failed."),
    ],
    doc="One row per reconciliation run.",
)

DAILY_REVENUE_V1 = versioned(
    "daily_revenue",
    1,
    [
        field("day", pa.date32(), "UTC day of the balance transactions' created time."),
        field("currency", pa.string(), "Settlement currency, ISO 4217 lowercase."),
        field("transactions", pa.int64(), "Balance transactions that day."),
        field("gross", pa.int64(), "Charges, minor units."),
        field("refunds", pa.int64(), "Refunds (negative), minor units."),
        field("disputes", pa.int64(), "Disputes less reversals (negative), minor units."),
        field("fees", pa.int64(), "Stripe fees, minor units."),
        field("net", pa.int64(), "Sum of net, minor units."),
        field(
            "gross_major",
            pa.decimal128(38, 3),
            "gross in major units, converted with the currency's own exponent.",
        ),
        field("refunds_major", pa.decimal128(38, 3), "refunds in major units."),
        field("disputes_major", pa.decimal128(38, 3), "disputes in major units."),
        field("fees_major", pa.decimal128(38, 3), "fees in major units."),
        field("net_major", pa.decimal128(38, 3), "net in major units."),
    ],
    doc="Money per UTC day and currency, from the balance transactions (stripe__daily_overview).",
)

AGE_BUCKETS = ("0-1d", "1-3d", "3-7d", "7-30d", "30d+")

DISCREPANCY_AGING_V1 = versioned(
    "discrepancy_aging",
    1,
    [
        field("as_of_date", pa.date32(), "UTC day of the snapshot (the run's --as-of)."),
        field("kind", pa.string(), "Discrepancy kind."),
        field("currency", pa.string(), "ISO 4217 code, lowercase ('?' when unknown)."),
        field(
            "age_bucket",
            pa.string(),
            "Age of the discrepancy's window at the snapshot: " + ", ".join(AGE_BUCKETS) + ".",
        ),
        field("age_order", pa.int64(), "0 for the youngest bucket, for sorting."),
        field(
            "open_discrepancies",
            pa.int64(),
            "Discrepancies still found by the latest run of their window.",
        ),
        field(
            "amount_at_stake",
            pa.int64(),
            "Money concerned, minor units: |amount_delta| for an amount mismatch, else the "
            "larger side's amount.",
        ),
        field(
            "amount_at_stake_major",
            pa.decimal128(38, 3),
            "amount_at_stake in major units, converted with the currency's own exponent.",
        ),
    ],
    doc="Open discrepancies by kind, currency and age, one snapshot per day: what is still "
    "wrong, and for how long.",
)

TABLES: dict[str, TableDef] = {
    t.name: t
    for t in (
        TableDef("recon_runs", RECON_RUN_V1, ("run_id",), "window_start", ("job",)),
        TableDef(
            "recon_health", RECON_HEALTH_V1, ("job", "run_id"), "window_start", ("job", "status")
        ),
        TableDef(
            "recon_discrepancies",
            DISCREPANCY_V1,
            ("discrepancy_id",),
            "window_start",
            ("kind", "currency"),
        ),
        TableDef(
            "fact_ledger_events",
            with_provenance(LEDGER_EVENT_V1),
            ("event_id",),
            "occurred_at",
            ("currency", "event_type"),
        ),
        TableDef(
            "fact_balance_transactions",
            BALANCE_TRANSACTION_V1,
            ("balance_transaction_id",),
            "created",
            ("currency", "reporting_category"),
        ),
        TableDef(
            "recon_matches", RECON_MATCH_V1, ("event_id",), "window_start", ("status", "currency")
        ),
        TableDef("daily_revenue", DAILY_REVENUE_V1, ("day", "currency"), "day", ("currency",)),
        TableDef(
            "discrepancy_aging",
            DISCREPANCY_AGING_V1,
            ("as_of_date", "kind", "currency", "age_bucket"),
            "as_of_date",
            ("kind", "currency"),
        ),
        TableDef(
            "recon_repairs",
            RECON_REPAIR_V1,
            ("discrepancy_id",),
            "repaired_at",
            ("action", "kind"),
        ),
        TableDef(
            "dq_results",
            DQ_RESULT_V1,
            DQ_RESULT_PRIMARY_KEY,
            DQ_RESULT_PARTITION_BY,
            DQ_RESULT_CLUSTER_BY,
        ),
        TableDef(
            "telemetry_minutely",
            TELEMETRY_MINUTELY_V1,
            ("window_start", "window_end", "gateway", "metric", "dimension"),
            "window_start",
            ("metric", "gateway"),
        ),
        TableDef(
            "telemetry_anomalies",
            TELEMETRY_ANOMALIES_V1,
            ("window_start", "metric", "dims"),
            "window_start",
            ("metric", "severity"),
        ),
        TableDef(
            "telemetry_consumer_lag",
            TELEMETRY_CONSUMER_LAG_V1,
            ("measured_at", "group_id", "topic", "partition"),
            "measured_at",
            ("group_id", "topic"),
        ),
        TableDef(
            "telemetry_window_counts",
            TELEMETRY_WINDOW_COUNTS_V1,
            ("window_start", "window_end", "gateway", "component", "batch_id"),
            "window_start",
            ("gateway",),
        ),
        TableDef(
            "telemetry_request_partials",
            TELEMETRY_REQUEST_PARTIALS_V1,
            ("request_id", "partial_id"),
            "loaded_at",
        ),
        TableDef(
            "fact_payment_requests",
            FACT_PAYMENT_REQUESTS_V1,
            ("request_id",),
            "day",
            ("country", "payment_method_type"),
        ),
        TableDef(
            "payment_conversion",
            PAYMENT_CONVERSION_V1,
            ("day", "country", "payment_method_type", "card_brand"),
            "day",
            ("country", "payment_method_type"),
        ),
    )
}
