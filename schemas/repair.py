"""``recon_repairs``: what ``payrecon repair`` did about each discrepancy, and the review record.

One row per discrepancy (the key): repaired (repair events published to ``ledger.repairs``),
sent for review (``recon.review``: a human must act, e.g. refund a double charge), or dead-
lettered (Stripe could not be asked after bounded retries, or the discrepancy was unreadable).
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

ACTIONS = ("repaired", "review", "dead_lettered")

RECON_REPAIR_V1 = versioned(
    "recon_repair",
    1,
    [
        field("discrepancy_id", pa.string(), "The discrepancy (recon_discrepancies)."),
        field("kind", pa.string(), "Its kind."),
        field("stripe_object_id", pa.string(), "The Stripe object fetched.", nullable=True),
        field("order_id", pa.string(), "The order, when known.", nullable=True),
        field("action", pa.string(), "repaired, review or dead_lettered.", enum=list(ACTIONS)),
        field("reason", pa.string(), "Why this action, one line."),
        field(
            "repair_event_ids",
            pa.string(),
            "JSON array: the ledger events published to ledger.repairs (deterministic ids).",
        ),
        field("stripe_source", pa.string(), "api, or the export the truth was read from."),
        field("repair_run_id", pa.string(), "The repair run (its Kafka offsets' hash)."),
        field("repaired_at", UTC_MICROS, "When the repair run handled it."),
    ],
    doc="One row per discrepancy handled by payrecon repair.",
)

RECON_REVIEW_V1 = versioned(
    "recon_review",
    1,
    [
        field("discrepancy_id", pa.string(), "The discrepancy to review."),
        field("kind", pa.string(), "Its kind (duplicate_charge, missing_in_stripe ...)."),
        field("order_id", pa.string(), "The order.", nullable=True),
        field("stripe_object_id", pa.string(), "The Stripe object concerned.", nullable=True),
        field("currency", pa.string(), "ISO 4217, lowercase.", nullable=True),
        field("reason", pa.string(), "Why a human must act, and what to do."),
        field(
            "stripe_objects",
            pa.string(),
            "JSON: what Stripe says about each object concerned (id, amount, currency, "
            "created, status, payment intent), everything needed to refund a double charge.",
        ),
        field("reviewed_from_run", pa.string(), "The reconcile run that found it."),
    ],
    doc="A discrepancy payrecon cannot repair itself (Kafka value on recon.review).",
)
