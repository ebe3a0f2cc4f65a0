"""ISO 4217 currencies and the minor-unit exponent Stripe uses for each.

Money is integer minor units everywhere in payrecon. Converting to or from major units
(Stripe's report CSVs, analytics columns) must use the currency's own exponent: JPY has
none, KWD has three, most have two. The exponents here are Stripe's (its list of
zero-decimal and three-decimal currencies), which is what its amounts are expressed in.
"""

from __future__ import annotations

from decimal import Decimal

# Active ISO 4217 alphabetic codes (lowercase, as Stripe and the ledger contract write them).
ISO_4217: frozenset[str] = frozenset(
    """
    aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob bov brl
    bsd btn bwp byn bzd cad cdf che chf chw clf clp cny cop cou crc cuc cup cve czk djf
    dkk dop dzd egp ern etb eur fjd fkp gbp gel ghs gip gmd gnf gtq gyd hkd hnl htg huf
    idr ils inr iqd irr isk jmd jod jpy kes kgs khr kmf kpw krw kwd kyd kzt lak lbp lkr
    lrd lsl lyd mad mdl mga mkd mmk mnt mop mru mur mvr mwk mxn mxv myr mzn nad ngn nio
    nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sdg sek
    sgd shp sle sll sos srd ssp stn svc syp szl thb tjs tmt tnd top try ttd twd tzs uah
    ugx usd usn uyi uyu uyw uzs ved ves vnd vuv wst xaf xcd xcg xof xpf xsu xua yer zar
    zmw zwg zwl
    """.split()
)

# Stripe's zero-decimal currencies: an amount of 500 JPY is sent as 500.
ZERO_DECIMAL: frozenset[str] = frozenset(
    """
    bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf
    """.split()
)

# Stripe's three-decimal currencies: 5.124 KWD is sent as 5124.
THREE_DECIMAL: frozenset[str] = frozenset("bhd jod kwd omr tnd".split())


class UnknownCurrency(ValueError):
    """The code is not an active ISO 4217 currency."""


def is_known(currency: str) -> bool:
    """True for an active ISO 4217 code written in lowercase."""
    return currency in ISO_4217


def exponent(currency: str) -> int:
    """Number of minor-unit digits Stripe uses for ``currency`` (lowercase ISO 4217)."""
    if currency not in ISO_4217:
        raise UnknownCurrency(f"unknown ISO 4217 currency {currency!r}")
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def to_minor_units(amount: str | Decimal, currency: str) -> int:
    """Exact conversion of a major-unit decimal (``"12.34"``) to integer minor units.

    Raises ``ValueError`` when the amount has more digits than the currency allows,
    rather than rounding money silently.
    """
    scaled = Decimal(amount).scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency.upper()} has more than {exponent(currency)} decimals")
    return int(scaled)


def to_major_units(amount: int, currency: str) -> Decimal:
    """Exact conversion of integer minor units to a major-unit ``Decimal``."""
    return Decimal(amount).scaleb(-exponent(currency))
