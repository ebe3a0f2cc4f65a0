"""What a realistic day of payments looks like: markets, payment methods, prices and fees.

The numbers are plausible rather than exact: Stripe's public list prices for the fees, price
levels typical for each market, card brand and failure mixes of a consumer checkout. All
amounts are integer minor units of their currency (JPY has none, KWD has three).
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from schemas.currencies import exponent

T = TypeVar("T")
_EXPONENTS = {code: exponent(code) for code in ("usd", "eur", "gbp", "cad", "jpy", "kwd")}


class Picker(Generic[T]):
    """Weighted choice by one ``random()`` and a bisect: faster than ``random.choices``."""

    def __init__(self, weighted: Sequence[tuple[T, float]]):
        self.values = [value for value, _ in weighted]
        self.weights = [weight for _, weight in weighted]
        self.cumulative: list[float] = []
        total = 0.0
        for _, weight in weighted:
            total += weight
            self.cumulative.append(total)
        self.total = total

    def __call__(self, rnd: random.Random) -> T:
        return self.values[bisect(self.cumulative, rnd.random() * self.total)]


@dataclass(frozen=True)
class Method:
    """A payment method type and how Stripe prices and settles it."""

    name: str
    fee_bps: int  # percentage fee, basis points (0 = use the currency's card fee)
    fee_fixed: int  # fixed fee in minor units
    fee_cap: int | None  # maximum fee in minor units
    available_after_days: int  # days from creation until the funds are available
    failure_rate: float
    refundable: bool = True


CARD = "card"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(CARD, 0, 0, None, 2, 0.08),
        Method("us_bank_account", 80, 0, 500, 4, 0.03),
        Method("cashapp", 290, 30, None, 2, 0.04),
        Method("sepa_debit", 0, 35, None, 7, 0.03),
        Method("ideal", 0, 29, None, 2, 0.03),
        Method("bancontact", 140, 25, None, 2, 0.03),
        Method("klarna", 299, 30, None, 3, 0.05),
        Method("bacs_debit", 100, 20, 200, 4, 0.03),
        Method("konbini", 360, 0, None, 4, 0.04, refundable=False),
        Method("acss_debit", 100, 40, 500, 5, 0.03),
    )
}


@dataclass(frozen=True)
class Currency:
    """Price level and Stripe fees of one currency (amounts in its minor units)."""

    code: str
    median_price: float  # major units
    quantum: int  # prices are multiples of this many minor units (two-decimal: see endings)
    minimum: int  # Stripe's minimum charge amount
    card_fee_bps: int
    card_fee_fixed: int
    dispute_fee: int

    @property
    def exponent(self) -> int:
        return _EXPONENTS[self.code]


CURRENCIES: dict[str, Currency] = {
    c.code: c
    for c in (
        Currency("usd", 48.0, 1, 50, 290, 30, 1500),
        Currency("eur", 42.0, 1, 50, 150, 25, 2000),
        Currency("gbp", 38.0, 1, 30, 150, 20, 2000),
        Currency("cad", 60.0, 1, 50, 290, 30, 1500),
        Currency("jpy", 4800.0, 10, 50, 360, 0, 1500),
        Currency("kwd", 14.0, 5, 100, 290, 100, 5000),
    )
}

# Two-decimal prices end like shop prices do: 19.99, 20.00, 19.50, 19.95.
_ENDINGS = Picker([(99, 0.55), (0, 0.25), (50, 0.12), (95, 0.08)])

US_BRANDS = Picker([("visa", 0.52), ("mastercard", 0.30), ("amex", 0.15), ("discover", 0.03)])
EU_BRANDS = Picker([("visa", 0.55), ("mastercard", 0.42), ("amex", 0.03)])
JP_BRANDS = Picker([("visa", 0.40), ("jcb", 0.35), ("mastercard", 0.20), ("amex", 0.05)])
FUNDING = Picker([("credit", 0.60), ("debit", 0.38), ("prepaid", 0.02)])


@dataclass(frozen=True)
class Market:
    """Payments from one country in one currency, with that country's payment methods."""

    country: str
    currency: str
    weight: float  # share of the day's payments
    methods: Picker[str]
    brands: Picker[str]


def _methods(*weighted: tuple[str, float]) -> Picker[str]:
    return Picker(list(weighted))


MARKETS: tuple[Market, ...] = (
    Market(
        "US",
        "usd",
        0.42,
        _methods((CARD, 0.92), ("us_bank_account", 0.05), ("cashapp", 0.03)),
        US_BRANDS,
    ),
    Market("MX", "usd", 0.02, _methods((CARD, 1.0)), US_BRANDS),
    Market("CA", "cad", 0.06, _methods((CARD, 0.95), ("acss_debit", 0.05)), US_BRANDS),
    Market(
        "DE", "eur", 0.08, _methods((CARD, 0.55), ("sepa_debit", 0.30), ("klarna", 0.15)), EU_BRANDS
    ),
    Market("FR", "eur", 0.05, _methods((CARD, 0.90), ("sepa_debit", 0.10)), EU_BRANDS),
    Market(
        "NL", "eur", 0.05, _methods(("ideal", 0.70), (CARD, 0.20), ("sepa_debit", 0.10)), EU_BRANDS
    ),
    Market("ES", "eur", 0.03, _methods((CARD, 1.0)), EU_BRANDS),
    Market("IT", "eur", 0.02, _methods((CARD, 1.0)), EU_BRANDS),
    Market("BE", "eur", 0.02, _methods(("bancontact", 0.50), (CARD, 0.50)), EU_BRANDS),
    Market("GB", "gbp", 0.12, _methods((CARD, 0.90), ("bacs_debit", 0.10)), EU_BRANDS),
    Market("JP", "jpy", 0.10, _methods((CARD, 0.75), ("konbini", 0.25)), JP_BRANDS),
    Market("KW", "kwd", 0.03, _methods((CARD, 1.0)), EU_BRANDS),
)

MARKET_PICKER = Picker([(m, m.weight) for m in MARKETS])
MARKET_INDEX = {m.country: i for i, m in enumerate(MARKETS)}

CARD_FAILURES = Picker(
    [
        ("card_declined", 0.55),
        ("insufficient_funds", 0.25),
        ("expired_card", 0.08),
        ("incorrect_cvc", 0.07),
        ("processing_error", 0.05),
    ]
)
DISPUTE_REASONS = Picker(
    [
        ("fraudulent", 0.45),
        ("product_not_received", 0.20),
        ("product_unacceptable", 0.10),
        ("subscription_canceled", 0.10),
        ("duplicate", 0.05),
        ("general", 0.10),
    ]
)
CHANNELS = Picker([("web", 0.60), ("ios", 0.25), ("android", 0.15)])


@dataclass(frozen=True)
class Profile:
    """Who pays and how: everything about a payment but its amount."""

    market: Market
    method: str
    brand: str  # empty unless method is card
    funding: str
    channel: str


def profiles(*, card_only: bool = False, refundable_only: bool = False) -> Picker[Profile]:
    """Every combination of market, method, card brand and funding, and channel, weighted
    by its probability: one draw gives a whole payment profile."""
    weighted = []
    for market in MARKETS:
        for method, w_method in zip(market.methods.values, market.methods.weights, strict=True):
            if (card_only and method != CARD) or (
                refundable_only and not METHODS[method].refundable
            ):
                continue
            cards = (
                [
                    (b, f, wb * wf)
                    for b, wb in zip(market.brands.values, market.brands.weights, strict=True)
                    for f, wf in zip(FUNDING.values, FUNDING.weights, strict=True)
                ]
                if method == CARD
                else [("", "", 1.0)]
            )
            for brand, funding, w_card in cards:
                for channel, w_channel in zip(CHANNELS.values, CHANNELS.weights, strict=True):
                    weight = market.weight * w_method * w_card * w_channel
                    weighted.append((Profile(market, method, brand, funding, channel), weight))
    return Picker(weighted)


def draw_amount(rnd: random.Random, currency: Currency, z: float | None = None) -> int:
    """A shop-like price in minor units: log-normal around the market's median.

    ``z`` is a standard normal draw (one is made from ``rnd`` when not given).
    """
    if z is None:
        z = rnd.gauss(0.0, 1.0)
    major = currency.median_price * math.exp(0.85 * z)
    if currency.exponent == 2:
        amount = int(major) * 100 + _ENDINGS(rnd)
    else:
        scale = 10**currency.exponent
        amount = int(major * scale) // currency.quantum * currency.quantum
    return max(amount, currency.minimum)


def partial_amount(rnd: random.Random, amount: int, currency: Currency) -> int:
    """Part of ``amount`` (a partial refund), on the currency's price grid, at least 1."""
    quantum = currency.quantum if exponent(currency.code) != 2 else 1
    part = int(amount * rnd.uniform(0.1, 0.9)) // quantum * quantum
    return max(part, quantum)


def processing_fee(amount: int, currency: str, method: str) -> int:
    """Stripe's fee on a charge: percentage (rounded half up) plus fixed, capped, <= amount."""
    m = METHODS[method]
    c = CURRENCIES[currency]
    bps, fixed = (
        (c.card_fee_bps, c.card_fee_fixed)
        if m.fee_bps == 0 and m.fee_fixed == 0
        else (
            m.fee_bps,
            m.fee_fixed,
        )
    )
    fee = (amount * bps + 5_000) // 10_000 + fixed
    if m.fee_cap is not None:
        fee = min(fee, m.fee_cap)
    return min(fee, amount)
