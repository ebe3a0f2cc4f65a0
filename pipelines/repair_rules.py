"""What to do about one discrepancy, given what Stripe says: repair it, or hand it to a human.

Stripe is the authority on money it moved. A repair republishes the ledger's account of the
object as Stripe records it, as ledger events on ``ledger.repairs``; the reconcile job lets
an object's repair events supersede its original events (see
``transforms.match_objects._superseded_by_repairs``), so one repair heals a wrong amount or
currency, a wrong status, a duplicate, or a missing event alike:

- per category of the object's balance transactions: ``charge`` -> ``charge.succeeded``,
  ``refund`` -> ``refund.succeeded``, ``dispute`` -> ``dispute.created``,
  ``dispute_reversal`` -> ``dispute.funds_reinstated``; a charge or refund whose money Stripe
  took back (``charge_failure`` / ``refund_failure``) -> ``charge.failed`` /
  ``refund.failed``; the amount is the magnitude of the category's sum, as the matcher
  compares it, and the time is Stripe's ``created``;
- each event's id is a UUID derived from the object, type, currency and amount, so
  repairing twice, or two discrepancies of one object, publish the same events (a no-op).

Not repaired, sent to ``recon.review`` with what a human needs: a ``duplicate_charge`` (a
refund is a decision), a ``missing_in_stripe`` whose object Stripe has no money for (the
ledger claims money that never moved), an object Stripe does not know, or one whose order
Stripe does not name (a ledger event needs its order).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from transforms.match_objects import REPAIR_OF_KEY
from transforms.match_rules import REVERSALS, TYPE_TO_CATEGORY
from transforms.repair_truth import StripeTruth

CATEGORY_EVENT = {
    "charge": "charge.succeeded",
    "refund": "refund.succeeded",
    "dispute": "dispute.created",
    "dispute_reversal": "dispute.funds_reinstated",
}
REVERSED_EVENT = {"charge": "charge.failed", "refund": "refund.failed"}
_NAMESPACE = uuid.UUID("5d0c6c3e-4c1e-4f57-9a51-7d1b7d9e2a10")  # payrecon repair events


class RepairPlan(NamedTuple):
    action: str  # "repaired" or "review"
    reason: str
    events: tuple[dict[str, Any], ...]  # ledger event v1, JSON-ready
    review: dict[str, Any] | None  # RECON_REVIEW_V1 row


def plan_repair(discrepancy: Mapping[str, Any], truth: StripeTruth) -> RepairPlan:
    kind = discrepancy["kind"]
    if kind == "duplicate_charge":
        return _review(
            discrepancy,
            truth,
            "more than one succeeded charge for one order: refund the extra charge(s) "
            "listed in stripe_objects if the customer was charged twice",
        )
    if not truth.exists:
        return _review(discrepancy, truth, f"Stripe has no object {truth.object_id}")
    if not truth.rows:
        return _review(
            discrepancy,
            truth,
            "Stripe moved no money for this object: the ledger records money that never "
            "moved; correct the ledger entry or find the payment",
        )
    events = repair_events(discrepancy, truth)
    if not events:
        return _review(
            discrepancy, truth, "Stripe does not name the order: a ledger event needs it"
        )
    said = ", ".join(f"{e['event_type']} {e['amount']} {e['currency']}" for e in events)
    return RepairPlan("repaired", f"ledger set to Stripe's record: {said}", events, None)


def repair_events(discrepancy: Mapping[str, Any], truth: StripeTruth) -> tuple[dict, ...]:
    """The ledger events that say what Stripe says about the object (empty without order)."""
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    for row in truth.rows:
        category = row["reporting_category"] or TYPE_TO_CATEGORY.get(row["type"] or "")
        if category:
            by_category.setdefault(category, []).append(row)
    reversed_ = {REVERSALS[c] for c in by_category if c in REVERSALS}
    order_id = next(
        (r["order_id"] for r in truth.rows if r["order_id"]),
        truth.order_id or discrepancy.get("order_id"),
    )
    if not order_id:
        return ()
    events = []
    for category, rows in sorted(by_category.items()):
        if category not in CATEGORY_EVENT:
            continue  # reversals shape their category's event; fees, payouts: not ledger's
        event_type = REVERSED_EVENT[category] if category in reversed_ else CATEGORY_EVENT[category]
        for currency in sorted({r["currency"] for r in rows}):
            mine = [r for r in rows if r["currency"] == currency]
            amount = abs(sum(r["amount"] for r in mine))
            first = min(mine, key=lambda r: r["created"])
            events.append(
                {
                    "event_id": str(
                        uuid.uuid5(
                            _NAMESPACE, f"{truth.object_id}|{event_type}|{currency}|{amount}"
                        )
                    ),
                    "event_type": event_type,
                    "occurred_at": first["created"].isoformat().replace("+00:00", "Z"),
                    "order_id": order_id,
                    "stripe_object_id": truth.object_id,
                    "payment_intent_id": first["payment_intent_id"],
                    "amount": amount,
                    "currency": currency,
                    "idempotency_key": first["idempotency_key"],
                    "metadata": {REPAIR_OF_KEY: discrepancy["discrepancy_id"]},
                }
            )
    return tuple(events)


def _review(discrepancy: Mapping[str, Any], truth: StripeTruth, reason: str) -> RepairPlan:
    objects = [
        {
            "balance_transaction_id": r["balance_transaction_id"],
            "object_id": r["source_id"] or r["balance_transaction_id"],
            "category": r["reporting_category"] or r["type"],
            "amount": r["amount"],
            "fee": r["fee"],
            "currency": r["currency"],
            "created": r["created"].isoformat(),
            "status": r["status"],
            "charge_id": r["charge_id"],
            "payment_intent_id": r["payment_intent_id"],
            "order_id": r["order_id"],
        }
        for r in truth.rows
    ]
    review = {
        "discrepancy_id": discrepancy["discrepancy_id"],
        "kind": discrepancy["kind"],
        "order_id": discrepancy.get("order_id"),
        "stripe_object_id": discrepancy.get("stripe_object_id"),
        "currency": discrepancy.get("currency"),
        "reason": reason,
        "stripe_objects": json.dumps(objects, sort_keys=True),
        "reviewed_from_run": discrepancy["run_id"],
    }
    return RepairPlan("review", reason, (), review)
