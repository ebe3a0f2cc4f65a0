"""Ledger event v1: what the order and checkout services publish to ``ledger.transactions``.

One JSON object per Kafka message, keyed by ``order_id``. ``event_id`` is the dedupe key.
Amounts are non-negative integers in the currency's minor units.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.currencies import ISO_4217
from schemas.fields import UTC_MICROS, field, is_required, versioned

EVENT_TYPES = (
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "refund.succeeded",
    "refund.failed",
    "dispute.created",
    "dispute.closed",
    "dispute.funds_withdrawn",
    "dispute.funds_reinstated",
)

MAX_AMOUNT = 2**63 - 1

LEDGER_EVENT_V1 = versioned(
    "ledger_event",
    1,
    [
        field(
            "event_id", pa.string(), "Unique id of this ledger event; the dedupe key.", minLength=1
        ),
        field(
            "event_type",
            pa.string(),
            "What happened, e.g. charge.succeeded, refund.succeeded, dispute.created.",
            minLength=1,
            examples=list(EVENT_TYPES),
        ),
        field(
            "occurred_at",
            UTC_MICROS,
            "When it happened, RFC 3339, stored in UTC.",
            format="date-time",
        ),
        field("order_id", pa.string(), "The order; also the Kafka message key.", minLength=1),
        field(
            "stripe_object_id",
            pa.string(),
            "The Stripe object that moved the money (ch_, re_, dp_, py_ ...).",
            minLength=1,
        ),
        field(
            "payment_intent_id",
            pa.string(),
            "The Stripe PaymentIntent (pi_...); null where none exists.",
            nullable=True,
        ),
        field(
            "amount",
            pa.int64(),
            "Amount in minor units of currency, never negative.",
            minimum=0,
            maximum=MAX_AMOUNT,
        ),
        field("currency", pa.string(), "ISO 4217 code, lowercase.", enum=sorted(ISO_4217)),
        field(
            "idempotency_key",
            pa.string(),
            "The idempotency key the money movement was requested with; null for "
            "movements Stripe starts itself, such as disputes.",
            nullable=True,
        ),
        field("customer_id", pa.string(), "Stripe customer (cus_...).", required=False),
        field("payment_method_type", pa.string(), "card, sepa_debit, konbini ...", required=False),
        field(
            "country",
            pa.string(),
            "ISO 3166-1 alpha-2 country of the payment.",
            required=False,
            pattern="^[A-Z]{2}$",
        ),
        field(
            "metadata", pa.map_(pa.string(), pa.string()), "Free-form string map.", required=False
        ),
    ],
    doc="A money movement recorded by the internal ledger.",
)

REQUIRED_FIELDS = tuple(f.name for f in LEDGER_EVENT_V1 if is_required(f))
