"""Decoding one ``payments.requests`` message into a payment request v1, or saying why not.

A plain function over the message bytes, so the gateway consumer and the tests share one
definition of "valid". The checks mirror the JSON Schema generated from
``schemas.payments.PAYMENT_REQUEST_V1``; every failure names a stable
:class:`~schemas.dead_letter.Reason`, so a poison pill goes to the dead-letter topic at
once instead of reaching a gateway.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.currencies import ISO_4217
from schemas.dead_letter import Reason
from schemas.ledger_event import MAX_AMOUNT
from schemas.payments import REQUEST_REQUIRED_FIELDS
from transforms.ledger_validation import Invalid, parse_rfc3339_micros

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
IDEMPOTENCY_PREFIX = "payrecon-pi-"

_COUNTRY = re.compile(r"^[A-Z]{2}$")
_REQUIRED_KEYS = frozenset(REQUEST_REQUIRED_FIELDS)
_REQUIRED_STRINGS = ("request_id", "order_id", "currency", "payment_method_type", "created_at")
_OPTIONAL_STRINGS = ("payment_method", "customer_id", "country", "card_brand", "gateway")


@dataclass(frozen=True)
class PaymentRequest:
    """A valid payment request v1. ``request_id`` is the canonical lowercase UUID."""

    request_id: str
    order_id: str
    amount: int
    currency: str
    payment_method_type: str
    created_at_micros: int
    payment_method: str | None = None
    customer_id: str | None = None
    country: str | None = None
    card_brand: str | None = None
    gateway: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return idempotency_key(self.request_id)


def idempotency_key(request_id: str) -> str:
    """The gateway idempotency key of a request: the same for every delivery of it, and
    for every spelling of its UUID (upper case, braces, no dashes)."""
    return IDEMPOTENCY_PREFIX + str(uuid.UUID(request_id))


def parse_request(
    value: bytes | None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> PaymentRequest | Invalid:
    """The request a message value holds, or ``Invalid(reason, detail)``."""
    parsed = _parse_json(value, max_payload_bytes)
    if isinstance(parsed, Invalid):
        return parsed
    return check_request(parsed)


def check_request(obj: Any) -> PaymentRequest | Invalid:
    """Validate a parsed JSON value against payment request v1."""
    if not isinstance(obj, dict):
        return Invalid(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    if not obj.keys() >= _REQUIRED_KEYS:
        missing = next(name for name in REQUEST_REQUIRED_FIELDS if name not in obj)
        return Invalid(Reason.MISSING_FIELD, f"{missing} is missing")
    invalid = _check_strings(obj) or _check_amount(obj["amount"])
    if invalid:
        return invalid
    try:
        request_id = str(uuid.UUID(obj["request_id"]))
    except ValueError:
        return Invalid(Reason.BAD_UUID, f"request_id {obj['request_id'][:40]!r} is not a UUID")
    if obj["currency"] not in ISO_4217:
        shown = obj["currency"][:10]
        return Invalid(Reason.UNKNOWN_CURRENCY, f"currency {shown!r} is not lowercase ISO 4217")
    created = parse_rfc3339_micros(obj["created_at"])
    if created is None:
        shown = obj["created_at"][:40]
        return Invalid(Reason.BAD_TIMESTAMP, f"created_at {shown!r} is not RFC 3339")
    country = obj.get("country")
    if country is not None and not _COUNTRY.fullmatch(country):
        return Invalid(Reason.BAD_COUNTRY, f"country {country[:10]!r} is not ISO 3166 alpha-2")
    metadata = obj.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        return Invalid(Reason.WRONG_TYPE, "metadata must be an object of strings")
    return PaymentRequest(
        request_id=request_id,
        order_id=obj["order_id"],
        amount=obj["amount"],
        currency=obj["currency"],
        payment_method_type=obj["payment_method_type"],
        created_at_micros=created,
        metadata=dict(metadata or {}),
        **{name: obj.get(name) for name in _OPTIONAL_STRINGS},
    )


def _parse_json(value: bytes | None, max_payload_bytes: int) -> Any:
    if value is None:
        return Invalid(Reason.NOT_JSON, "the message has no value")
    if len(value) > max_payload_bytes:
        return Invalid(
            Reason.PAYLOAD_TOO_LARGE, f"{len(value)} bytes > limit of {max_payload_bytes}"
        )
    try:  # the standard parser: integers of any width stay exact
        parsed = json.loads(value)
        # It reads lone surrogates ("\ud800", escaped or as raw bytes), which no UTF-8
        # text holds: the Stripe gateway could not send such a request.
        json.dumps(parsed, ensure_ascii=False).encode()
    except (UnicodeError, ValueError, RecursionError) as exc:
        return Invalid(Reason.NOT_JSON, str(exc)[:200])
    return parsed


def _check_strings(obj: dict) -> Invalid | None:
    for name in _REQUIRED_STRINGS:
        value = obj[name]
        if not isinstance(value, str):
            return Invalid(Reason.WRONG_TYPE, f"{name} must be a string")
        if not value:
            return Invalid(Reason.EMPTY_FIELD, f"{name} is empty")
    for name in _OPTIONAL_STRINGS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            return Invalid(Reason.WRONG_TYPE, f"{name} must be a string or null")
    return None


def _check_amount(amount: Any) -> Invalid | None:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return Invalid(Reason.WRONG_TYPE, "amount must be an integer number of minor units")
    if isinstance(amount, float):
        return Invalid(Reason.NON_INTEGER_AMOUNT, f"amount {amount!r} is not an integer")
    if amount < 0:
        return Invalid(Reason.NEGATIVE_AMOUNT, f"amount {amount} is negative")
    if amount == 0:
        return Invalid(Reason.AMOUNT_OUT_OF_RANGE, "amount is 0; a payment is at least 1")
    if amount > MAX_AMOUNT:
        return Invalid(Reason.AMOUNT_OUT_OF_RANGE, "amount does not fit in 64 bits")
    return None
