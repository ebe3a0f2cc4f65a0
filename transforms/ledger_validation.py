"""Validation of one ledger event v1 against its contract, with a machine-readable reason.

A plain function over the parsed JSON object, so the Beam decode, the benchmark's plain
loop and the fuzz tests share one definition of "valid". The checks mirror the JSON Schema
generated from ``schemas.ledger_event`` (a test keeps the two in agreement).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schemas.currencies import ISO_4217
from schemas.dead_letter import Reason
from schemas.ledger_event import MAX_AMOUNT, REQUIRED_FIELDS

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The times a payment record may carry: after the Unix epoch, and up to the last instant a
# four-digit year names. Outside it, a valid RFC 3339 text (year 0001 at +01:00, say) is an
# instant Python has no UTC datetime for, and would crash whoever reads the decoded row.
EARLIEST = _EPOCH
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

_REQUIRED_KEYS = frozenset(REQUIRED_FIELDS)
REQUIRED_STRINGS = ("event_id", "event_type", "order_id", "stripe_object_id")
NULLABLE_STRINGS = ("payment_intent_id", "idempotency_key")
OPTIONAL_STRINGS = ("customer_id", "payment_method_type")


class Invalid(NamedTuple):
    reason: Reason
    detail: str


def parse_rfc3339_micros(text: str) -> int | None:
    """Epoch microseconds (UTC) of an RFC 3339 date-time, or None if it is not one or is
    outside ``EARLIEST``..``LATEST``."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    date, clock, fraction, zone = m.groups()
    fraction = (fraction or "")[:7]  # datetime keeps microseconds; RFC 3339 allows more
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{fraction}{zone}")
    except ValueError:
        return None
    if not EARLIEST <= moment <= LATEST:
        return None
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def check_event(obj: Any) -> Invalid | int:
    """``Invalid(reason, detail)``, or the event's ``occurred_at`` in epoch microseconds."""
    if not isinstance(obj, dict):
        return Invalid(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    if not obj.keys() >= _REQUIRED_KEYS:
        missing = next(name for name in REQUIRED_FIELDS if name not in obj)
        return Invalid(Reason.MISSING_FIELD, f"{missing} is missing")
    for name in REQUIRED_STRINGS:
        value = obj[name]
        if not isinstance(value, str):
            return Invalid(Reason.WRONG_TYPE, f"{name} must be a string")
        if not value:
            return Invalid(Reason.EMPTY_FIELD, f"{name} is empty")
    for name in NULLABLE_STRINGS + OPTIONAL_STRINGS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(Reason.WRONG_TYPE, f"{name} must be a string or null")
    invalid = _check_amount(obj["amount"]) or _check_currency(obj["currency"])
    if invalid:
        return invalid
    occurred = obj["occurred_at"]
    micros = parse_rfc3339_micros(occurred) if isinstance(occurred, str) else None
    if micros is None:
        return Invalid(
            Reason.BAD_TIMESTAMP,
            f"occurred_at {str(occurred)[:40]!r} is not an RFC 3339 time in 1970..9999 UTC",
        )
    return _check_optional(obj) or micros


def _check_amount(amount: Any) -> Invalid | None:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return Invalid(Reason.WRONG_TYPE, "amount must be an integer number of minor units")
    if isinstance(amount, float):
        return Invalid(Reason.NON_INTEGER_AMOUNT, f"amount {amount!r} is not an integer")
    if amount < 0:
        return Invalid(Reason.NEGATIVE_AMOUNT, f"amount {amount} is negative")
    if amount > MAX_AMOUNT:
        return Invalid(Reason.AMOUNT_OUT_OF_RANGE, "amount does not fit in 64 bits")
    return None


def _check_currency(currency: Any) -> Invalid | None:
    if not isinstance(currency, str):
        return Invalid(Reason.WRONG_TYPE, "currency must be a string")
    if currency not in ISO_4217:
        return Invalid(
            Reason.UNKNOWN_CURRENCY, f"currency {currency[:10]!r} is not a lowercase ISO 4217 code"
        )
    return None


def _check_optional(obj: dict) -> Invalid | None:
    country = obj.get("country")
    if country is not None and not (isinstance(country, str) and _COUNTRY.fullmatch(country)):
        return Invalid(Reason.BAD_COUNTRY, f"country {str(country)[:10]!r} is not ISO 3166 alpha-2")
    metadata = obj.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        return Invalid(Reason.WRONG_TYPE, "metadata must be an object of strings")
    return None
