"""The day's objects (payments, Stripe charges/refunds/disputes, balance transactions) and
the factory that mints them with realistic ids, amounts and fees.

A ledger event and a balance transaction are two views of one :class:`StripeObject`; the
injected discrepancies are made by changing or dropping one of the two views.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from pipelines.synthetic import catalog
from pipelines.synthetic.catalog import CARD, CURRENCIES, METHODS, Market
from pipelines.synthetic.clock import DAY_S, Rfc3339
from pipelines.synthetic.ids import StripeIds, Tokens, order_id
from schemas.currencies import exponent


@dataclass(slots=True)
class Payment:
    """One checkout: an order paid through one PaymentIntent (maybe in several attempts)."""

    order_id: str
    payment_intent_id: str
    customer_id: str
    amount: int
    currency: str
    method: str
    country: str
    card_brand: str  # empty unless method is card
    card_funding: str
    channel: str


@dataclass(slots=True)
class StripeObject:
    """A charge (``ch_``), refund (``re_``) or dispute (``dp_``) of a payment."""

    id: str
    kind: str  # "charge" | "refund" | "dispute"
    payment: Payment
    charge_id: str
    charge_created_s: int
    amount: int
    currency: str
    created_s: int
    dispute_reason: str = ""


@dataclass(slots=True)
class BalanceTxn:
    """One row of ``balance_change_from_activity.itemized``; money is signed minor units."""

    id: str
    created_s: int
    available_on_s: int
    currency: str
    gross: int
    fee: int
    reporting_category: str
    source: StripeObject
    description: str

    @property
    def net(self) -> int:
        return self.gross - self.fee


def major_units(minor: int, exp: int) -> str:
    """Exact decimal text of ``minor`` in major units (``-1999, 2 -> "-19.99"``)."""
    if exp == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}"


class Draws:
    """Random draws made a block at a time with numpy: payment profiles, normals."""

    _BLOCK = 8192

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._pickers = {
            (card, refundable): catalog.profiles(card_only=card, refundable_only=refundable)
            for card in (False, True)
            for refundable in (False, True)
        }
        self._blocks: dict[tuple[bool, bool], list[catalog.Profile]] = {
            key: [] for key in self._pickers
        }
        self._normals: list[float] = []
        self._below: list[int] = []

    def profile(self, *, card: bool = False, refundable: bool = False) -> catalog.Profile:
        key = (card, refundable)
        block = self._blocks[key]
        if not block:
            picker = self._pickers[key]
            p = np.asarray(picker.weights) / picker.total
            indices = self._rng.choice(len(p), size=self._BLOCK, p=p).tolist()
            block.extend(picker.values[i] for i in reversed(indices))
        return block.pop()

    def below(self, n: int) -> int:
        """A uniform integer in [0, n); ``n`` must be the same on every call."""
        if not self._below:
            self._below = self._rng.integers(0, n, self._BLOCK).tolist()
        return self._below.pop()

    def normal(self) -> float:
        if not self._normals:
            self._normals = self._rng.standard_normal(self._BLOCK).tolist()
        return self._normals.pop()


@dataclass
class Mint:
    """Makes the day's objects; all randomness comes from the seeded generators."""

    rnd: random.Random
    rng: np.random.Generator
    seed: int
    customers_per_market: int
    id_space: int = 0
    ids: StripeIds = field(init=False)
    tokens: Tokens = field(init=False)
    draws: Draws = field(init=False)
    rfc3339: Rfc3339 = field(init=False, default_factory=Rfc3339)

    def __post_init__(self) -> None:
        self.ids = StripeIds(self.seed, self.id_space)
        self.tokens = Tokens(self.rng)
        self.draws = Draws(self.rng)

    # -- payments and Stripe objects ------------------------------------------------------

    def payment(
        self,
        ms: int,
        market: Market | None = None,
        *,
        card: bool = False,
        refundable: bool = False,
    ) -> Payment:
        """A new order from a (returning or new) customer, paid by a local method.

        ``market`` forces the market (and a card); ``card`` a card payment; ``refundable`` a method
        that can be refunded.
        """
        rnd = self.rnd
        if market is None:
            profile = self.draws.profile(card=card, refundable=refundable)
        else:
            profile = catalog.Profile(
                market, CARD, market.brands(rnd), catalog.FUNDING(rnd), catalog.CHANNELS(rnd)
            )
        market = profile.market
        customer = catalog.MARKET_INDEX[market.country] * self.customers_per_market + (
            self.draws.below(self.customers_per_market)
        )
        currency = CURRENCIES[market.currency]
        return Payment(
            order_id(ms, self.tokens),
            self.ids.new("pi", ms // 1000),
            self.ids.customer(customer),
            catalog.draw_amount(rnd, currency, self.draws.normal()),
            currency.code,
            profile.method,
            market.country,
            profile.brand,
            profile.funding,
            profile.channel,
        )

    def past_charge(self, ms: int, *, days: tuple[int, int], card: bool = False) -> StripeObject:
        """A charge made ``days`` (range) before ``ms``: what refunds and disputes refer to."""
        back_ms = self.rnd.randint(days[0] * DAY_S, days[1] * DAY_S) * 1000
        payment = self.payment(ms - back_ms, card=card, refundable=True)
        return self.charge(payment, (ms - back_ms) // 1000)

    def charge(self, payment: Payment, created_s: int) -> StripeObject:
        charge_id = self.ids.new("ch", created_s)
        return StripeObject(
            charge_id,
            "charge",
            payment,
            charge_id,
            created_s,
            payment.amount,
            payment.currency,
            created_s,
        )

    def refund(self, charge: StripeObject, created_s: int, *, partial: bool) -> StripeObject:
        amount = charge.amount
        if partial:
            amount = catalog.partial_amount(self.rnd, amount, CURRENCIES[charge.currency])
        return StripeObject(
            self.ids.new("re", created_s),
            "refund",
            charge.payment,
            charge.id,
            charge.charge_created_s,
            amount,
            charge.currency,
            created_s,
        )

    def dispute(self, charge: StripeObject, created_s: int) -> StripeObject:
        return StripeObject(
            self.ids.new("dp", created_s),
            "dispute",
            charge.payment,
            charge.id,
            charge.charge_created_s,
            charge.amount,
            charge.currency,
            created_s,
            catalog.DISPUTE_REASONS(self.rnd),
        )

    # -- the ledger's view ----------------------------------------------------------------

    def event(
        self,
        event_type: str,
        ms: int,
        obj: StripeObject,
        *,
        amount: int | None = None,
        currency: str | None = None,
        idempotency_key: str | None = "new",
        metadata: dict[str, str] | None = None,
    ) -> dict:
        """A ledger event v1 naming ``obj``; ``amount``/``currency`` override the true ones."""
        p = obj.payment
        if idempotency_key == "new":
            idempotency_key = self.tokens.uuid4()
        return {
            "event_id": self.tokens.uuid4(),
            "event_type": event_type,
            "occurred_at": self.rfc3339(ms),
            "order_id": p.order_id,
            "stripe_object_id": obj.id,
            "payment_intent_id": p.payment_intent_id,
            "amount": obj.amount if amount is None else amount,
            "currency": obj.currency if currency is None else currency,
            "idempotency_key": idempotency_key,
            "customer_id": p.customer_id,
            "payment_method_type": p.method,
            "country": p.country,
            "metadata": {"channel": p.channel, **metadata} if metadata else {"channel": p.channel},
        }

    def failure_metadata(self, obj: StripeObject) -> dict[str, str]:
        if obj.payment.method == CARD:
            return {"failure_code": catalog.CARD_FAILURES(self.rnd)}
        return {"failure_code": "payment_method_provider_decline"}

    # -- Stripe's view ----------------------------------------------------------------------

    def balance_txn(
        self, obj: StripeObject, created_s: int, category: str, *, gross: int | None = None
    ) -> BalanceTxn:
        """The balance transaction Stripe records for ``obj`` under ``category``.

        ``gross`` overrides the true (signed) amount, for injected amount mismatches.
        """
        p = obj.payment
        if category == "charge":
            true_gross = obj.amount
            description = f"Order {p.order_id}"
        elif category == "refund":
            true_gross = -obj.amount
            description = f"REFUND FOR CHARGE (Order {p.order_id})"
        elif category == "dispute":
            true_gross = -obj.amount
            description = f"Chargeback withdrawal for {obj.charge_id}"
        else:  # dispute_reversal
            true_gross = obj.amount
            description = f"Chargeback reversal for {obj.charge_id}"
        gross = true_gross if gross is None else gross
        if category == "charge":
            fee = catalog.processing_fee(gross, obj.currency, p.method)
        elif category == "dispute":
            fee = CURRENCIES[obj.currency].dispute_fee
        else:
            fee = 0
        days = METHODS[p.method].available_after_days
        available_on = (created_s // DAY_S + days) * DAY_S
        return BalanceTxn(
            self.ids.new("txn", created_s),
            created_s,
            available_on,
            obj.currency,
            gross,
            fee,
            category,
            obj,
            description,
        )


def customer_facing(obj: StripeObject) -> str:
    return major_units(obj.amount, exponent(obj.currency))
