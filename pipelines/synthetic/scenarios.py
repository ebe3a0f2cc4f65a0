"""Injected discrepancies: one small, self-contained story per discrepancy kind.

Each story uses fresh objects (its own order, charge, refund or dispute), so it produces
exactly one discrepancy of its kind and nothing else, and its answer-key entry can be
compared exactly with what a reconciliation finds. Stories sit well inside the day (never
within five minutes of midnight), so no lateness margin can change their verdict.

Answer-key entry fields follow Discrepancy v1: amounts are magnitudes in minor units,
``amount_delta`` is ``stripe_amount - ledger_amount`` (null when one side is missing).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pipelines.synthetic import catalog
from pipelines.synthetic.catalog import CURRENCIES, MARKETS
from pipelines.synthetic.records import BalanceTxn, Mint, StripeObject
from schemas.currencies import exponent
from schemas.discrepancy import KINDS

# How many ledger events (time slots of the day) each kind's story takes.
SLOTS_NEEDED = {
    "missing_in_stripe": 1,
    "missing_in_ledger": 0,
    "amount_mismatch": 1,
    "currency_mismatch": 1,
    "status_mismatch": 1,
    "duplicate_in_ledger": 2,
    "duplicate_charge": 2,
}
assert set(SLOTS_NEEDED) == set(KINDS)

# Markets charging in eur, gbp or cad, whose payments the buggy ledger records as usd.
_FOREIGN_MARKETS = [m for m in MARKETS if m.currency in ("eur", "gbp", "cad")]


@dataclass
class Injected:
    """One injected discrepancy: the ledger events (at their slot) and Stripe rows it adds."""

    kind: str
    events: list[tuple[int, dict]] = field(default_factory=list)
    balance_txns: list[BalanceTxn] = field(default_factory=list)
    expected: dict = field(default_factory=dict)


@dataclass
class Story:
    """What a story builder gets: the factory, its slots ``(index, ms)``, a spare time."""

    mint: Mint
    slots: list[tuple[int, int]]
    spare_ms: int
    variant: int

    @property
    def rnd(self) -> random.Random:
        return self.mint.rnd

    def ms(self, i: int = 0) -> int:
        return self.slots[i][1] if self.slots else self.spare_ms

    def created_s(self, i: int = 0) -> int:
        """Stripe creates the object a moment before the ledger records it."""
        return self.ms(i) // 1000 - self.rnd.randint(0, 2)


def build(kind: str, story: Story) -> Injected:
    injected = _BUILDERS[kind](story)
    injected.kind = kind
    injected.expected = {"kind": kind, **injected.expected}
    return injected


def _expect(
    obj: StripeObject,
    *,
    ledger_amount: int | None,
    stripe_amount: int | None,
    ledger_currency: str | None,
    stripe_currency: str | None,
    events: list[dict],
    bts: list[BalanceTxn],
    note: str,
    objects: list[StripeObject] | None = None,
) -> dict:
    both = ledger_amount is not None and stripe_amount is not None
    return {
        "order_id": obj.payment.order_id,
        "stripe_object_id": obj.id,
        "stripe_object_ids": [o.id for o in objects or [obj]],
        "ledger_amount": ledger_amount,
        "stripe_amount": stripe_amount,
        "amount_delta": stripe_amount - ledger_amount if both else None,  # type: ignore[operator]
        "currency": ledger_currency or stripe_currency,
        "ledger_currency": ledger_currency,
        "stripe_currency": stripe_currency,
        "event_ids": [e["event_id"] for e in events],
        "balance_transaction_ids": [bt.id for bt in bts],
        "note": note,
    }


def _charge_or_refund(story: Story, i: int = 0) -> tuple[StripeObject, str, str]:
    """A fresh charge (even variants) or a refund of an older charge (odd variants)."""
    mint = story.mint
    if story.variant % 2 == 0:
        charge = mint.charge(mint.payment(story.ms(i)), story.created_s(i))
        return charge, "charge.succeeded", "charge"
    old = mint.past_charge(story.ms(i), days=(1, 30))
    refund = mint.refund(old, story.created_s(i), partial=story.rnd.random() < 0.3)
    return refund, "refund.succeeded", "refund"


def _slot_events(story: Story, *events: dict) -> list[tuple[int, dict]]:
    return [(story.slots[i][0], event) for i, event in enumerate(events)]


def missing_in_stripe(story: Story) -> Injected:
    obj, event_type, _ = _charge_or_refund(story)
    event = story.mint.event(event_type, story.ms(), obj)
    expected = _expect(
        obj,
        ledger_amount=obj.amount,
        stripe_amount=None,
        ledger_currency=obj.currency,
        stripe_currency=None,
        events=[event],
        bts=[],
        note=f"{event_type} in the ledger; Stripe has no balance transaction for it",
    )
    return Injected("", _slot_events(story, event), [], expected)


def missing_in_ledger(story: Story) -> Injected:
    mint, created = story.mint, story.created_s()
    category = ("charge", "refund", "dispute")[story.variant % 3]
    if category == "charge":
        obj = mint.charge(mint.payment(story.ms()), created)
    else:
        old = mint.past_charge(story.ms(), days=(2, 45), card=True)
        if category == "refund":
            obj = mint.refund(old, created, partial=False)
        else:
            obj = mint.dispute(old, created)
    bt = mint.balance_txn(obj, created, category)
    expected = _expect(
        obj,
        ledger_amount=None,
        stripe_amount=abs(bt.gross),
        ledger_currency=None,
        stripe_currency=bt.currency,
        events=[],
        bts=[bt],
        note=f"Stripe {category} balance transaction with no ledger event for its source",
    )
    return Injected("", [], [bt], expected)


def amount_mismatch(story: Story) -> Injected:
    obj, event_type, category = _charge_or_refund(story)
    currency = CURRENCIES[obj.currency]
    quantum = currency.quantum if exponent(obj.currency) != 2 else 1
    if category == "charge":
        # The ledger kept the list price; Stripe charged after a coupon.
        coupon = max(obj.amount * story.rnd.choice((10, 15, 20)) // 100 // quantum, 1) * quantum
        ledger_amount = obj.amount + coupon
        note = "ledger recorded the price before a coupon; Stripe charged less"
    else:
        # The ledger recorded a full refund; Stripe refunded part of the charge.
        ledger_amount = obj.amount + catalog.partial_amount(story.rnd, obj.amount, currency)
        note = "ledger recorded a larger refund than Stripe made"
    event = story.mint.event(event_type, story.ms(), obj, amount=ledger_amount)
    bt = story.mint.balance_txn(obj, obj.created_s, category)
    expected = _expect(
        obj,
        ledger_amount=ledger_amount,
        stripe_amount=obj.amount,
        ledger_currency=obj.currency,
        stripe_currency=obj.currency,
        events=[event],
        bts=[bt],
        note=note,
    )
    return Injected("", _slot_events(story, event), [bt], expected)


def currency_mismatch(story: Story) -> Injected:
    mint = story.mint
    market = _FOREIGN_MARKETS[story.variant % len(_FOREIGN_MARKETS)]
    charge = mint.charge(mint.payment(story.ms(), market), story.created_s())
    event = mint.event("charge.succeeded", story.ms(), charge, currency="usd")
    bt = mint.balance_txn(charge, charge.created_s, "charge")
    expected = _expect(
        charge,
        ledger_amount=charge.amount,
        stripe_amount=charge.amount,
        ledger_currency="usd",
        stripe_currency=charge.currency,
        events=[event],
        bts=[bt],
        note=f"ledger defaulted to usd; Stripe charged {charge.currency}",
    )
    return Injected("", _slot_events(story, event), [bt], expected)


def status_mismatch(story: Story) -> Injected:
    obj, event_type, category = _charge_or_refund(story)
    failed_type = event_type.replace("succeeded", "failed")
    event = story.mint.event(
        failed_type, story.ms(), obj, metadata={"failure_code": "api_connection_timeout"}
    )
    bt = story.mint.balance_txn(obj, obj.created_s, category)
    expected = _expect(
        obj,
        ledger_amount=obj.amount,
        stripe_amount=obj.amount,
        ledger_currency=obj.currency,
        stripe_currency=obj.currency,
        events=[event],
        bts=[bt],
        note=f"ledger says {failed_type} (timed out); Stripe moved the money",
    )
    return Injected("", _slot_events(story, event), [bt], expected)


def duplicate_in_ledger(story: Story) -> Injected:
    obj, event_type, category = _charge_or_refund(story)
    first = story.mint.event(event_type, story.ms(0), obj)
    # The same fact recorded again later (a replayed webhook): a new event id only.
    again = story.mint.event(event_type, story.ms(1), obj)
    again["idempotency_key"] = first["idempotency_key"]
    bt = story.mint.balance_txn(obj, obj.created_s, category)
    expected = _expect(
        obj,
        ledger_amount=obj.amount,
        stripe_amount=obj.amount,
        ledger_currency=obj.currency,
        stripe_currency=obj.currency,
        events=[first, again],
        bts=[bt],
        note=f"{obj.id} is named by two ledger events",
    )
    return Injected("", _slot_events(story, first, again), [bt], expected)


def duplicate_charge(story: Story) -> Injected:
    mint = story.mint
    payment = mint.payment(story.ms(0))
    first = mint.charge(payment, story.created_s(0))
    # A double submit: a second PaymentIntent for the same order, charged again.
    second_payment = replace(payment, payment_intent_id=mint.ids.new("pi", story.ms(1) // 1000))
    second = mint.charge(second_payment, story.created_s(1))
    events = [
        mint.event("charge.succeeded", story.ms(0), first),
        mint.event("charge.succeeded", story.ms(1), second),
    ]
    bts = [mint.balance_txn(c, c.created_s, "charge") for c in (first, second)]
    expected = _expect(
        second,
        ledger_amount=second.amount,
        stripe_amount=second.amount,
        ledger_currency=second.currency,
        stripe_currency=second.currency,
        events=events,
        bts=bts,
        objects=[first, second],
        note="one order, two succeeded charges (two PaymentIntents)",
    )
    return Injected("", _slot_events(story, *events), bts, expected)


_BUILDERS: dict[str, Callable[[Story], Injected]] = {
    "missing_in_stripe": missing_in_stripe,
    "missing_in_ledger": missing_in_ledger,
    "amount_mismatch": amount_mismatch,
    "currency_mismatch": currency_mismatch,
    "status_mismatch": status_mismatch,
    "duplicate_in_ledger": duplicate_in_ledger,
    "duplicate_charge": duplicate_charge,
}


def plan_kinds(events: int, rate: float, rnd: random.Random) -> list[str]:
    """About ``rate * events`` kinds, spread evenly; one of each when events >= 100."""
    total = round(rate * events)
    if events >= 100 and rate > 0:
        total = max(total, len(KINDS))
    order = list(KINDS)
    rnd.shuffle(order)
    return [order[i % len(order)] for i in range(total)]
