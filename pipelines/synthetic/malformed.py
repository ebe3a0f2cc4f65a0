"""Malformed ledger lines, each wrong in exactly one way the decoder dead-letters.

Every line starts from a well-formed ``charge.failed`` event of a fresh order and breaks one
thing, so its dead-letter reason is unambiguous whatever order a decoder checks in. A failed
charge moves no money: even a decoder that accepted one of these lines would find no
discrepancy in it. The oversized line is valid JSON apart from its size, which exceeds
``max_payload`` (64 KiB by default, the decoder's default limit).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from schemas.dead_letter import DECODE_REASONS, Reason
from schemas.ledger_event import REQUIRED_FIELDS

Breaker = Callable[[dict, random.Random], tuple[str, str]]
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _with(event: dict, **changes: object) -> str:
    return _dumps({**event, **changes})


def too_large(event: dict, rnd: random.Random, max_payload: int) -> tuple[str, str]:
    frame = "at com.shop.checkout.PaymentService.charge(PaymentService.java:214) "
    base = len(_dumps(event))
    trace = (frame * (max_payload // len(frame) + 20))[: max_payload - base + 1024]
    line = _dumps({**event, "metadata": {**event["metadata"], "debug_trace": trace}})
    return line, f"{len(line.encode())} bytes, over the {max_payload}-byte limit"


def not_json(event: dict, rnd: random.Random) -> tuple[str, str]:
    text = _dumps(event)
    return rnd.choice(
        [
            (text[: len(text) * 3 // 5], "truncated JSON"),
            (repr(event), "a Python dict repr (single quotes)"),
            (
                f"{event['occurred_at']} ERROR checkout-svc stripe webhook timeout "
                f"order={event['order_id']}",
                "a log line",
            ),
        ]
    )


def not_an_object(event: dict, rnd: random.Random) -> tuple[str, str]:
    return rnd.choice(
        [
            (_dumps([event]), "an array holding the event"),
            (_dumps(event["event_type"]), "a JSON string"),
            ("null", "JSON null"),
        ]
    )


def missing_field(event: dict, rnd: random.Random) -> tuple[str, str]:
    name = rnd.choice(REQUIRED_FIELDS)
    return _dumps({k: v for k, v in event.items() if k != name}), f"{name} is missing"


def wrong_type(event: dict, rnd: random.Random) -> tuple[str, str]:
    amount = event["amount"]
    return rnd.choice(
        [
            (_with(event, order_id=rnd.randrange(10**5, 10**6)), "order_id is a number"),
            (
                _with(event, stripe_object_id=[event["stripe_object_id"]]),
                "stripe_object_id is an array",
            ),
            (_with(event, amount=str(amount)), "amount is a string"),
            (_with(event, metadata={"attempt": 2}), "metadata value is a number"),
        ]
    )


def empty_field(event: dict, rnd: random.Random) -> tuple[str, str]:
    name = rnd.choice(("event_id", "event_type", "order_id", "stripe_object_id"))
    return _with(event, **{name: ""}), f"{name} is empty"


def unknown_currency(event: dict, rnd: random.Random) -> tuple[str, str]:
    code = rnd.choice((event["currency"].upper(), "zzz", "usdd", "eu"))
    return _with(event, currency=code), f"currency {code!r}"


def negative_amount(event: dict, rnd: random.Random) -> tuple[str, str]:
    return _with(event, amount=-event["amount"]), "amount is negative"


def non_integer_amount(event: dict, rnd: random.Random) -> tuple[str, str]:
    amount = event["amount"]
    return rnd.choice(
        [
            (_with(event, amount=amount + 0.5), "amount has a fraction"),
            (_with(event, amount=amount / 100), "amount in major units as a float"),
        ]
    )


def amount_out_of_range(event: dict, rnd: random.Random) -> tuple[str, str]:
    value = rnd.choice((2**63, 10**20))
    return _with(event, amount=value), "amount does not fit in a signed 64-bit integer"


def bad_timestamp(event: dict, rnd: random.Random) -> tuple[str, str]:
    at = event["occurred_at"]  # 2026-11-20T13:45:01.123Z
    day, clock = at[:10], at[11:19]
    value: object = rnd.choice(
        (
            f"{day}T{clock}",  # no offset
            f"{day[8:10]}/{day[5:7]}/{day[:4]} {clock}",
            f"{day}T25:{clock[3:]}Z",
            1_795_132_800,
        )
    )
    return _with(event, occurred_at=value), f"occurred_at {value!r}"


def bad_country(event: dict, rnd: random.Random) -> tuple[str, str]:
    value = rnd.choice(("usa", "United States", "DEU", "g1"))
    return _with(event, country=value), f"country {value!r}"


BREAKERS: dict[Reason, Breaker] = {
    Reason.NOT_JSON: not_json,
    Reason.NOT_AN_OBJECT: not_an_object,
    Reason.MISSING_FIELD: missing_field,
    Reason.WRONG_TYPE: wrong_type,
    Reason.EMPTY_FIELD: empty_field,
    Reason.UNKNOWN_CURRENCY: unknown_currency,
    Reason.NEGATIVE_AMOUNT: negative_amount,
    Reason.NON_INTEGER_AMOUNT: non_integer_amount,
    Reason.AMOUNT_OUT_OF_RANGE: amount_out_of_range,
    Reason.BAD_TIMESTAMP: bad_timestamp,
    Reason.BAD_COUNTRY: bad_country,
}
assert set(BREAKERS) | {Reason.PAYLOAD_TOO_LARGE} == DECODE_REASONS


def plan_reasons(count: int, rnd: random.Random) -> list[Reason]:
    """``count`` reasons: one oversized line, then every other reason in turn."""
    if count <= 0:
        return []
    others = list(BREAKERS)
    rnd.shuffle(others)
    reasons = [Reason.PAYLOAD_TOO_LARGE] + [others[i % len(others)] for i in range(count - 1)]
    rnd.shuffle(reasons)
    return reasons


def break_event(
    reason: Reason, event: dict, rnd: random.Random, max_payload: int
) -> tuple[str, str]:
    """The malformed line for ``reason`` and a short human description of the defect."""
    if reason is Reason.PAYLOAD_TOO_LARGE:
        return too_large(event, rnd, max_payload)
    return BREAKERS[reason](event, rnd)
