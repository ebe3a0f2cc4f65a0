"""Discrepancy v1: one finding of a reconciliation run.

Published to ``recon.discrepancies`` (key = ``discrepancy_id``) and loaded to the warehouse
table ``recon_discrepancies``. ``discrepancy_id`` is a deterministic hash of the kind and the
keys, so a rerun of the same window produces the same ids and every sink stays idempotent.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

KINDS = (
    "missing_in_stripe",
    "missing_in_ledger",
    "amount_mismatch",
    "currency_mismatch",
    "status_mismatch",
    "duplicate_in_ledger",
    "duplicate_charge",
)

SEVERITIES = ("low", "medium", "high", "critical")

DISCREPANCY_V1 = versioned(
    "discrepancy",
    1,
    [
        field("discrepancy_id", pa.string(), "Deterministic hash of kind + keys.", minLength=1),
        field("run_id", pa.string(), "The reconciliation run that found it.", minLength=1),
        field("kind", pa.string(), "What is wrong.", enum=list(KINDS)),
        field("severity", pa.string(), "How urgent it is.", enum=list(SEVERITIES)),
        field("order_id", pa.string(), "The order, when known.", nullable=True),
        field(
            "stripe_object_id",
            pa.string(),
            "The Stripe object concerned (ch_, re_, dp_...).",
            nullable=True,
        ),
        field(
            "ledger_amount", pa.int64(), "Ledger amount, minor units (magnitude).", nullable=True
        ),
        field(
            "stripe_amount", pa.int64(), "Stripe amount, minor units (magnitude).", nullable=True
        ),
        field(
            "currency",
            pa.string(),
            "ISO 4217 code, lowercase.",
            nullable=True,
            pattern="^[a-z]{3}$",
        ),
        field(
            "amount_delta", pa.int64(), "stripe_amount - ledger_amount, minor units.", nullable=True
        ),
        field("detected_at", UTC_MICROS, "When the run found it (UTC).", format="date-time"),
        field(
            "window_start", UTC_MICROS, "Start of the run's window, inclusive.", format="date-time"
        ),
        field("window_end", UTC_MICROS, "End of the run's window, exclusive.", format="date-time"),
        field(
            "repair_hint", pa.string(), "Which Stripe object to fetch to repair it.", nullable=True
        ),
    ],
    doc="A typed difference between the ledger and Stripe, with the object to fetch.",
)
