"""What the reconciliation join produces besides discrepancies, and what the Stripe export
reader refuses.

- ``RECON_MATCH_V1``: one row per ledger event paired with its Stripe balance transaction(s)
  and found equal (warehouse table ``recon_matches``, primary key ``event_id``). Pairs whose
  Stripe funds are not yet available have ``status`` ``pending``.
- ``RECON_COUNT_V1``: how many rows (and how much money) of each side ended in each outcome,
  per currency. The outcomes partition the input, so the counts prove the conservation
  equation of :mod:`transforms.match` (nothing is lost silently).
- ``RECON_TOTALS_V1``: money per currency on each side of the window (gross, fee, net and the
  charges / refunds / disputes it is made of), in signed minor units.
- ``STRIPE_EXPORT_REJECT_V1``: a row of a Stripe report file that could not be converted
  exactly (unknown currency, unparseable amount or time ...), with the file, line and column.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.dead_letter import Reason
from schemas.fields import UTC_MICROS, field, versioned

MATCH_STATUSES = ("matched", "pending")

SIDES = ("ledger", "stripe")

# Outcomes of a ledger row (an event) and of a Stripe row (a balance transaction). Every input
# row gets exactly one; see transforms.match for the conservation equation they satisfy.
LEDGER_OUTCOMES = (
    "outside_read_range",
    "margin",
    "redelivered",
    "matched",
    "pending",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
    "missing_in_stripe",
    "duplicate_in_ledger",
    "failed",
    "informational",
)
STRIPE_OUTCOMES = (
    "outside_read_range",
    "margin",
    "redelivered",
    "matched",
    "pending",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
    "failed",
    "missing_in_ledger",
    "out_of_scope",
)
# Outcomes of rows that do not belong to the window (they are counted, never reported).
NOT_IN_WINDOW = ("outside_read_range", "margin")

_WINDOW_FIELDS = [
    field("window_start", UTC_MICROS, "Start of the run's window, inclusive.", format="date-time"),
    field("window_end", UTC_MICROS, "End of the run's window, exclusive.", format="date-time"),
]

RECON_MATCH_V1 = versioned(
    "recon_match",
    1,
    [
        field("event_id", pa.string(), "The ledger event (primary key).", minLength=1),
        field("run_id", pa.string(), "The reconciliation run that matched it.", minLength=1),
        field(
            "status",
            pa.string(),
            "matched, or pending when Stripe's funds are not yet available.",
            enum=list(MATCH_STATUSES),
        ),
        field("event_type", pa.string(), "The ledger event type, e.g. charge.succeeded."),
        field("order_id", pa.string(), "The order, from the ledger event."),
        field("stripe_object_id", pa.string(), "The Stripe object both sides name (ch_, re_...)."),
        field(
            "reporting_category",
            pa.string(),
            "Stripe's category of the paired balance transactions (charge, refund, dispute ...).",
        ),
        field(
            "balance_transaction_id",
            pa.string(),
            "The first paired balance transaction (by created time, then id).",
        ),
        field(
            "stripe_rows",
            pa.int64(),
            "How many balance transactions of this object and category were summed (usually 1).",
            minimum=1,
        ),
        field("ledger_amount", pa.int64(), "Ledger amount, minor units (magnitude).", minimum=0),
        field("stripe_amount", pa.int64(), "Sum of Stripe's signed amounts, minor units."),
        field("stripe_fee", pa.int64(), "Sum of Stripe's fees, minor units."),
        field("stripe_net", pa.int64(), "Sum of Stripe's net amounts, minor units."),
        field("currency", pa.string(), "ISO 4217 code, lowercase (equal on both sides)."),
        field("occurred_at", UTC_MICROS, "The ledger event's time.", format="date-time"),
        field("created", UTC_MICROS, "The first balance transaction's time.", format="date-time"),
        field(
            "available_on",
            UTC_MICROS,
            "When the last of Stripe's funds become available.",
            nullable=True,
            format="date-time",
        ),
        field(
            "lag_ms",
            pa.int64(),
            "occurred_at - created in milliseconds: how late the ledger recorded it "
            "(negative when the ledger was first).",
        ),
        field("detected_at", UTC_MICROS, "When the run matched it (UTC).", format="date-time"),
        *_WINDOW_FIELDS,
    ],
    doc="A ledger event and the Stripe balance transactions it agrees with.",
)

RECON_COUNT_V1 = versioned(
    "recon_count",
    1,
    [
        field("side", pa.string(), "ledger or stripe.", enum=list(SIDES)),
        field(
            "outcome",
            pa.string(),
            "What happened to the rows (see transforms.match).",
            enum=sorted(set(LEDGER_OUTCOMES) | set(STRIPE_OUTCOMES)),
        ),
        field("currency", pa.string(), "The row's own currency, ISO 4217 lowercase."),
        field("rows", pa.int64(), "Number of input rows.", minimum=0),
        field(
            "amount",
            pa.int64(),
            "Sum of their amounts, minor units: ledger amounts (non-negative), Stripe's signed.",
        ),
    ],
    doc="Input rows per side, outcome and currency: the outcomes partition the input.",
)

RECON_TOTALS_V1 = versioned(
    "recon_totals",
    1,
    [
        field("side", pa.string(), "ledger or stripe.", enum=list(SIDES)),
        field("currency", pa.string(), "ISO 4217 code, lowercase."),
        field(
            "rows",
            pa.int64(),
            "Distinct rows of the window (after redelivered copies are dropped).",
            minimum=0,
        ),
        field("charges", pa.int64(), "Charges (less charge failures), signed minor units."),
        field("refunds", pa.int64(), "Refunds (less refund failures), signed (<= 0 usually)."),
        field("disputes", pa.int64(), "Disputes less dispute reversals, signed (<= 0 usually)."),
        field(
            "other", pa.int64(), "Every other Stripe category (fees, payouts ...); 0 for ledger."
        ),
        field("gross", pa.int64(), "charges + refunds + disputes + other."),
        field(
            "fee", pa.int64(), "Stripe's fees; null for the ledger, which has none.", nullable=True
        ),
        field("net", pa.int64(), "gross - fee; null for the ledger.", nullable=True),
    ],
    doc="Money moved in the window per side and currency, in the balance's sign convention.",
)

STRIPE_EXPORT_REJECT_V1 = versioned(
    "stripe_export_reject",
    1,
    [
        field("origin", pa.string(), "The file name."),
        field(
            "row",
            pa.int64(),
            "1-based number of the record in the file, header not counted.",
            minimum=1,
        ),
        field(
            "line",
            pa.int64(),
            "1-based line of a CSV file (header = 1, one line per record); null for Parquet.",
            nullable=True,
        ),
        field("column", pa.string(), "The column whose value was refused."),
        field("reason", pa.string(), "Machine-readable reason.", enum=[r.value for r in Reason]),
        field("detail", pa.string(), "What was wrong, for a person."),
        field("record", pa.string(), "The record's values as a JSON object of strings."),
    ],
    doc="A Stripe report row that could not be converted exactly, kept for audit.",
)
