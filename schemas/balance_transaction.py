"""Balance transaction v1: Stripe's side of the reconciliation, one row per ``txn_``.

Built from either source payrecon reads (the API's BalanceTransaction objects, or Stripe's
itemized report exports ``balance_change_from_activity.itemized`` and
``payout_reconciliation.itemized``), so matching never cares where a row came from.
Amounts are signed integers in minor units of ``currency`` (reports give major units and are
converted exactly with the currency's exponent): positive when money came in, negative when
it went out (refunds, disputes). ``net = amount - fee``.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.currencies import ISO_4217
from schemas.fields import UTC_MICROS, field, versioned

FEE_DETAIL = pa.struct(
    [
        pa.field("amount", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("type", pa.string()),
    ]
)

BALANCE_TRANSACTION_V1 = versioned(
    "balance_transaction",
    1,
    [
        field(
            "balance_transaction_id",
            pa.string(),
            "Stripe balance transaction id (txn_...).",
            minLength=1,
        ),
        field(
            "source_id",
            pa.string(),
            "The object behind it (ch_, re_, dp_, py_, po_ ...).",
            nullable=True,
        ),
        field(
            "type",
            pa.string(),
            "API type: charge, refund, adjustment, payout ... "
            "(reports have only reporting_category).",
            nullable=True,
        ),
        field(
            "reporting_category",
            pa.string(),
            "Stripe's accounting grouping: charge, refund, dispute, dispute_reversal, fee ...",
            nullable=True,
        ),
        field("amount", pa.int64(), "Gross amount, signed minor units of currency."),
        field("fee", pa.int64(), "Fees, minor units (positive when a fee was charged)."),
        field("net", pa.int64(), "amount - fee, minor units."),
        field(
            "currency",
            pa.string(),
            "Settlement currency, ISO 4217 lowercase.",
            enum=sorted(ISO_4217),
        ),
        field(
            "created",
            UTC_MICROS,
            "When the balance transaction was created (UTC).",
            format="date-time",
        ),
        field(
            "available_on",
            UTC_MICROS,
            "When the funds become available (UTC).",
            nullable=True,
            format="date-time",
        ),
        field(
            "status",
            pa.string(),
            "available or pending (derived from available_on for "
            "report rows, against the report's as-of time).",
            nullable=True,
        ),
        field(
            "exchange_rate",
            pa.string(),
            "Exchange rate as Stripe sent it, exact text; null when no conversion happened.",
            nullable=True,
        ),
        field(
            "customer_facing_amount",
            pa.int64(),
            "What the customer saw, minor units of customer_facing_currency.",
            nullable=True,
        ),
        field("customer_facing_currency", pa.string(), "ISO 4217 lowercase.", nullable=True),
        field(
            "charge_id",
            pa.string(),
            "The original charge (for charges, refunds, disputes).",
            nullable=True,
        ),
        field("payment_intent_id", pa.string(), "The related PaymentIntent.", nullable=True),
        field("order_id", pa.string(), "The order, from the payment's metadata.", nullable=True),
        field(
            "idempotency_key",
            pa.string(),
            "Idempotency key of the request that created the source, when known.",
            nullable=True,
        ),
        field("customer_id", pa.string(), "Related customer.", nullable=True),
        field("payment_method_type", pa.string(), "card, sepa_debit, konbini ...", nullable=True),
        field("card_brand", pa.string(), "visa, mastercard ...", nullable=True),
        field("card_country", pa.string(), "Card issuing country.", nullable=True),
        field(
            "automatic_payout_id",
            pa.string(),
            "The automatic payout that settles it.",
            nullable=True,
        ),
        field("fee_details", pa.list_(FEE_DETAIL), "Fee breakdown (API only).", nullable=True),
        field("origin", pa.string(), "Where the row came from: api, or the export file name."),
    ],
    doc="A Stripe balance transaction, from the API or an itemized report export.",
)
