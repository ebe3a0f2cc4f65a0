"""The rules of the reconciliation, in one place: which ledger events and Stripe categories
move money, how severe each discrepancy is, which Stripe object repairs it, and its id.

Ledger event types (``event_type``):

- money-moving (``MONEY_MOVING``): each expects Stripe balance transactions of one
  ``reporting_category`` for the object it names: ``charge.succeeded`` -> ``charge``,
  ``refund.succeeded`` -> ``refund``, ``dispute.created`` -> ``dispute``,
  ``dispute.funds_reinstated`` -> ``dispute_reversal``.
- failures (``FAILURES``): ``charge.failed`` and ``refund.failed`` say no money moved for the
  object; Stripe balance transactions of the matching category contradict them.
- everything else (``charge.refunded``, ``dispute.closed``, ``dispute.funds_withdrawn``, ...)
  is informational: it names an object but neither claims nor denies a money movement.

Stripe categories: ``charge``, ``refund``, ``dispute``, ``dispute_reversal`` move money;
``charge_failure`` and ``refund_failure`` reverse a charge or refund that had moved money
(an asynchronous debit that failed, a refund that bounced). Every other category (fees,
payouts, transfers, ...) is not the ledger's business and is counted as ``out_of_scope``.

Severity (one rule, independent of currency, because a fixed amount means very different
money in JPY and in KWD):

- ``critical``: ``duplicate_charge`` (a customer paid twice).
- ``high``: ``missing_in_stripe``, ``missing_in_ledger``, ``status_mismatch``,
  ``currency_mismatch`` (the books are wrong about whether or in what money moved).
- ``medium``: ``duplicate_in_ledger``; ``amount_mismatch`` of 1% or more of the larger amount.
- ``low``: ``amount_mismatch`` under 1% of the larger amount (rounding-sized).

``discrepancy_id`` is the first 32 hex digits of the SHA-256 of
``payrecon.discrepancy.v1|<kind>|<keys>``, where the keys identify the finding, not the run:
the object and category for pair kinds and ``missing_*``, the object and event type for
``duplicate_in_ledger``, ``order|<order_id>`` or ``idempotency_key|<key>`` for
``duplicate_charge``. A rerun of the window therefore gives the same ids.
"""

from __future__ import annotations

import hashlib

import polars as pl

MONEY_MOVING = {
    "charge.succeeded": "charge",
    "refund.succeeded": "refund",
    "dispute.created": "dispute",
    "dispute.funds_reinstated": "dispute_reversal",
}
FAILURES = {"charge.failed": "charge", "refund.failed": "refund"}

MOVED_CATEGORIES = ("charge", "refund", "dispute", "dispute_reversal")
# A reversal category -> the category whose money movement it undoes.
REVERSALS = {"charge_failure": "charge", "refund_failure": "refund"}
# API balance transaction types, for rows without a reporting_category (Stripe recommends
# the category; REPORTS.md §4 gives this mapping).
TYPE_TO_CATEGORY = {
    "charge": "charge",
    "payment": "charge",
    "refund": "refund",
    "payment_refund": "refund",
    "payment_failure_refund": "charge_failure",
    "refund_failure": "refund_failure",
}

SEVERITY = {
    "duplicate_charge": "critical",
    "missing_in_stripe": "high",
    "missing_in_ledger": "high",
    "status_mismatch": "high",
    "currency_mismatch": "high",
    "duplicate_in_ledger": "medium",
    "amount_mismatch": "medium",
}
LOW_AMOUNT_MISMATCH_BP = 100  # under 1% (100 basis points) of the larger amount: low

# Stripe id prefix -> the API path that returns the object (with what a repair needs).
_FETCH = {
    "ch_": "GET /v1/charges/{id}?expand[]=balance_transaction",
    "py_": "GET /v1/charges/{id}?expand[]=balance_transaction",
    "re_": "GET /v1/refunds/{id}?expand[]=balance_transaction",
    "pyr_": "GET /v1/refunds/{id}?expand[]=balance_transaction",
    "dp_": "GET /v1/disputes/{id}",
    "du_": "GET /v1/disputes/{id}",
    "po_": "GET /v1/payouts/{id}",
    "tr_": "GET /v1/transfers/{id}",
    "pi_": "GET /v1/payment_intents/{id}?expand[]=latest_charge",
    "txn_": "GET /v1/balance_transactions/{id}",
}
ID_PREFIX = "payrecon.discrepancy.v1"


def severity_expr() -> pl.Expr:
    """Severity of each row of a frame with ``kind``, ``ledger_amount``, ``stripe_amount``."""
    base = pl.col("kind").replace_strict(SEVERITY, return_dtype=pl.String)
    larger = pl.max_horizontal(pl.col("ledger_amount").abs(), pl.col("stripe_amount").abs())
    delta = (pl.col("stripe_amount") - pl.col("ledger_amount")).abs()
    small = delta * 10_000 < larger * LOW_AMOUNT_MISMATCH_BP
    return (
        pl.when((pl.col("kind") == "amount_mismatch") & small).then(pl.lit("low")).otherwise(base)
    )


def repair_hint(object_id: str | None) -> str | None:
    """The Stripe API call that returns the true object, or None for an unknown id."""
    if not object_id:
        return None
    for prefix in sorted(_FETCH, key=len, reverse=True):
        if object_id.startswith(prefix):
            return _FETCH[prefix].format(id=object_id)
    return None


def discrepancy_id(kind: str, keys: str) -> str:
    """Deterministic id of a finding: the same kind and keys always give the same id."""
    return hashlib.sha256(f"{ID_PREFIX}|{kind}|{keys}".encode()).hexdigest()[:32]
