"""Data-quality results, and the small tables the reconciliation invariants are checked on.

``DQ_RESULT_V1`` is the warehouse table ``dq_results``: one row per expectation per validated
batch, so an analyst sees which check failed, on which batch of which run, how many rows it
caught and what the suite did about it (failed the run or quarantined the rows). Its primary
key (``DQ_RESULT_PRIMARY_KEY``) is deterministic: a rerun of the same window upserts the same
rows instead of adding new ones.

``CONSERVATION_V1`` and ``PAYOUT_TOTALS_V1`` are what the ``reconciliation_invariants`` and
``payout_totals`` suites validate; the reconciliation job builds them from its counts.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

ON_FAILURE_ACTIONS = ("fail", "quarantine")

DQ_RESULT_V1 = versioned(
    "dq_result",
    1,
    [
        field("run_id", pa.string(), "The run that validated the batch.", minLength=1),
        field(
            "suite", pa.string(), "Expectation suite name (expectations/<suite>.json).", minLength=1
        ),
        field(
            "dataset",
            pa.string(),
            "What was validated: ledger_events, stripe_balance_transactions ...",
            minLength=1,
        ),
        field(
            "batch_id",
            pa.string(),
            "Deterministic id of the batch: a hash of its key column values, and its row count.",
            minLength=1,
        ),
        field(
            "expectation",
            pa.string(),
            "Expectation type, e.g. expect_column_values_to_be_unique.",
            minLength=1,
        ),
        field(
            "columns",
            pa.string(),
            "The column(s) checked, comma-separated for pair and multicolumn expectations; "
            "empty for expectations on the whole table (never null: it is in the primary key).",
        ),
        field("success", pa.bool_(), "Whether the batch met the expectation."),
        field(
            "unexpected_count",
            pa.int64(),
            "Rows that failed it; null when the expectation is not row-level or raised.",
            nullable=True,
        ),
        field(
            "evaluated_count",
            pa.int64(),
            "Rows it was evaluated on (nulls and rows outside its row condition excluded); "
            "null when not row-level.",
            nullable=True,
        ),
        field("batch_rows", pa.int64(), "Rows in the batch."),
        field(
            "unexpected_sample",
            pa.string(),
            'JSON list of up to 5 failing rows: [{"row": index in the batch, "value": ...}].',
            nullable=True,
        ),
        field(
            "observed_value",
            pa.string(),
            "JSON of the observed value of a table-level expectation (e.g. a column type).",
            nullable=True,
        ),
        field(
            "error",
            pa.string(),
            "Why the expectation could not be evaluated (e.g. a missing column); counts as failed.",
            nullable=True,
        ),
        field(
            "on_failure",
            pa.string(),
            "What the suite does with a failure: fail the run, or quarantine the failing rows.",
            enum=list(ON_FAILURE_ACTIONS),
        ),
        field(
            "validated_at", UTC_MICROS, "When the batch was validated (UTC).", format="date-time"
        ),
    ],
    doc="The outcome of one expectation on one batch.",
)

# Suggested TableDef for schemas.tables: the key is stable across reruns of a window, and
# (expectation, columns) is unique within every suite (tests/test_quality.py checks it).
DQ_RESULT_PRIMARY_KEY = ("run_id", "suite", "batch_id", "expectation", "columns")
DQ_RESULT_PARTITION_BY = "validated_at"
DQ_RESULT_CLUSTER_BY = ("suite", "success")

_COUNT_DOC = "{side}: {what}, records"
_AMOUNT_DOC = "{side}: {what}, sum of amounts in minor units (Stripe's are signed)"
_FATES = (
    ("in", "read in the window"),
    ("matched", "matched to the other side"),
    ("discrepancies", "reported in a discrepancy"),
    ("pending", "not yet settled, not a discrepancy"),
    ("dead_letters", "dead-lettered or quarantined"),
    (
        "other",
        "accounted for without a finding: margins, redelivered copies, failures, out of scope",
    ),
)


def _fate_fields() -> list[pa.Field]:
    fields = []
    for side, label in (("ledger", "Ledger events"), ("stripe", "Stripe balance transactions")):
        for fate, what in _FATES:
            name = f"{side}_{fate}"
            fields.append(field(name, pa.int64(), _COUNT_DOC.format(side=label, what=what)))
            fields.append(
                field(f"{name}_amount", pa.int64(), _AMOUNT_DOC.format(side=label, what=what))
            )
    return fields


CONSERVATION_V1 = versioned(
    "conservation",
    1,
    [
        field(
            "currency",
            pa.string(),
            "ISO 4217 code, lowercase; 'unknown' for records whose currency could not be read "
            "(undecodable dead letters).",
            minLength=1,
        ),
        *_fate_fields(),
    ],
    doc="Per currency, where every record read went: "
    "<side>_in = <side>_matched + <side>_discrepancies + <side>_pending + <side>_dead_letters "
    "+ <side>_other, "
    "for counts and for sums of amounts. Validated by the reconciliation_invariants suite.",
)

PAYOUT_TOTALS_V1 = versioned(
    "payout_totals",
    1,
    [
        field("payout_id", pa.string(), "Stripe payout (po_...).", minLength=1),
        field("currency", pa.string(), "Payout currency, ISO 4217 lowercase."),
        field("payout_amount", pa.int64(), "The payout's amount, minor units."),
        field(
            "sum_net",
            pa.int64(),
            "Sum of net of the balance transactions the payout settles, minor units.",
        ),
    ],
    doc="One row per payout of a payout_reconciliation export. Validated by payout_totals.",
)

# Columns appended to quarantined rows, after the columns of the batch they came from.
QUARANTINE_COLUMNS = pa.schema(
    [
        field("dq_suite", pa.string(), "The suite the row failed."),
        field("dq_batch_id", pa.string(), "The batch it was validated in (see dq_results)."),
        field(
            "dq_reason",
            pa.string(),
            "The expectations it failed, '; '-separated, each as type(columns), e.g. "
            "expect_column_values_to_be_unique(event_id).",
        ),
    ]
)


def with_quarantine_reason(schema: pa.Schema) -> pa.Schema:
    """``schema`` plus the quarantine columns, keeping the schema's metadata."""
    return pa.schema(list(schema) + list(QUARANTINE_COLUMNS), metadata=schema.metadata)
