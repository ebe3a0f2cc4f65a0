"""Stripe events to order status updates and ledger events (pure; Stripe's example objects)."""

from __future__ import annotations

import json

import pytest

from schemas.dead_letter import Reason
from tests.webhook_helpers import (
    charge_refunded,
    dispute_created,
    official,
    payment_intent_succeeded,
    stripe_event,
    with_order,
)
from transforms.ledger_validation import Invalid, check_event
from transforms.stripe_event_parse import StripeEvent, event_from_json, parse_event
from transforms.stripe_events import HANDLED_TYPES, Mapped, map_event


def mapped(raw: dict) -> Mapped:
    event = event_from_json(raw)
    assert isinstance(event, StripeEvent), event
    result = map_event(event)
    assert isinstance(result, Mapped), result
    return result


def invalid(raw: dict) -> Invalid:
    event = event_from_json(raw)
    assert isinstance(event, StripeEvent), event
    result = map_event(event)
    assert isinstance(result, Invalid), result
    return result


def test_payment_intent_succeeded_marks_the_order_paid_and_records_its_charge():
    raw = payment_intent_succeeded("ord_1001")
    result = mapped(raw)

    assert result.status == {
        "update_id": f"stripe:{raw['id']}",
        "order_id": "ord_1001",
        "status": "paid",
        "occurred_at": "2009-02-13T23:31:30Z",  # the event's created, 1234567890
        "source": "stripe_webhook",
        "source_event_id": raw["id"],
        "source_event_type": "payment_intent.succeeded",
        "stripe_object_id": "pi_1MoS6tLgUG5tbmjcQ62U6djv",
        "payment_intent_id": "pi_1MoS6tLgUG5tbmjcQ62U6djv",
        "amount": 1099,
        "currency": "usd",
        "livemode": False,
    }
    [ledger] = result.ledger
    assert ledger == {
        "event_id": "stripe:charge.succeeded:ch_1MoS6tLgUG5tbmjctfClmUOq",
        "event_type": "charge.succeeded",
        "occurred_at": "2009-02-13T23:31:30Z",
        "order_id": "ord_1001",
        "stripe_object_id": "ch_1MoS6tLgUG5tbmjctfClmUOq",
        "payment_intent_id": "pi_1MoS6tLgUG5tbmjcQ62U6djv",
        "amount": 1099,
        "currency": "usd",
        "idempotency_key": None,
        "metadata": {"order_id": "ord_1001"},
    }
    assert isinstance(check_event(ledger), int)


def test_charge_succeeded_names_the_same_ledger_event_as_its_payment_intent():
    pi_event = payment_intent_succeeded("ord_1001")
    charge = with_order(official("charge"), "ord_1001")
    charge.update(
        id="ch_1MoS6tLgUG5tbmjctfClmUOq",
        captured=True,
        amount=1099,
        amount_captured=1099,
        payment_intent="pi_1MoS6tLgUG5tbmjcQ62U6djv",
    )
    from_charge = mapped(stripe_event("charge.succeeded", charge))

    [a], [b] = mapped(pi_event).ledger, from_charge.ledger
    assert a["event_id"] == b["event_id"]  # one charge, one ledger id: no duplicate_in_ledger
    assert b["payment_method_type"] == "card"


def test_uncaptured_charge_is_authorized_and_moves_no_money():
    charge = with_order(official("charge"), "ord_1001")  # Stripe's example: captured false
    result = mapped(stripe_event("charge.succeeded", charge))
    assert result.status is not None and result.status["status"] == "authorized"
    assert result.ledger == ()


def test_refunded_charge_records_each_listed_refund():
    result = mapped(charge_refunded("ord_1001"))

    assert result.status is not None
    assert (result.status["status"], result.status["amount"]) == ("refunded", 100)
    [ledger] = result.ledger
    assert ledger["event_id"] == "stripe:refund.succeeded:re_1MoqxHLgUG5tbmjcYO7PFWn6"
    assert ledger["stripe_object_id"] == "re_1MoqxHLgUG5tbmjcYO7PFWn6"
    assert (ledger["event_type"], ledger["amount"]) == ("refund.succeeded", 100)
    assert isinstance(check_event(ledger), int)


def test_refunded_charge_without_its_refunds_listed_is_recorded_as_charge_refunded():
    raw = charge_refunded("ord_1001")
    del raw["data"]["object"]["refunds"]  # API versions since 2022-11-15 omit the list
    raw["data"]["object"].update(refunded=False, amount_refunded=40)

    result = mapped(raw)

    assert result.status is not None and result.status["status"] == "partially_refunded"
    [ledger] = result.ledger
    assert ledger["event_type"] == "charge.refunded"  # informational for the reconciliation
    assert ledger["event_id"] == "stripe:charge.refunded:ch_1MoS30LgUG5tbmjcjfsQqpHI:40"


def test_dispute_created_marks_the_order_disputed_and_records_the_dispute():
    result = mapped(dispute_created("ord_1001"))
    assert result.status is not None and result.status["status"] == "disputed"
    [ledger] = result.ledger
    assert (ledger["event_type"], ledger["stripe_object_id"], ledger["amount"]) == (
        "dispute.created",
        "dp_1MoqxHLgUG5tbmjcom3Mmh0p",
        1000,
    )


def test_object_without_an_order_id_is_a_dead_letter_naming_what_is_missing():
    problem = invalid(dispute_created(order_id=None))
    assert problem.reason == Reason.MISSING_ORDER_ID
    assert "dp_1MoqxHLgUG5tbmjcom3Mmh0p" in problem.detail
    assert "ch_1MoS30LgUG5tbmjcjfsQqpHI" in problem.detail


def test_a_dispute_without_order_takes_the_order_of_its_charge_when_a_lookup_is_given():
    raw = dispute_created(order_id=None)
    asked: list[str] = []

    def order_of_charge(charge_id: str) -> str | None:
        asked.append(charge_id)
        return "ord_from_charge"

    event = event_from_json(raw)
    assert isinstance(event, StripeEvent), event
    result = map_event(event, order_of_charge)
    assert isinstance(result, Mapped)
    assert asked == ["ch_1MoS30LgUG5tbmjcjfsQqpHI"]
    assert [e["order_id"] for e in result.ledger] == ["ord_from_charge"]


def test_unhandled_event_type_is_a_dead_letter():
    problem = invalid(stripe_event("customer.created", official("customer")))
    assert problem.reason == Reason.UNHANDLED_EVENT_TYPE
    assert "customer.created" not in HANDLED_TYPES


def test_event_about_the_wrong_kind_of_object_is_a_dead_letter():
    problem = invalid(stripe_event("charge.refunded", with_order(official("refund"), "o")))
    assert problem.reason == Reason.WRONG_TYPE


def test_succeeded_payment_intent_without_a_charge_is_a_dead_letter():
    raw = payment_intent_succeeded("ord_1001")
    raw["data"]["object"]["latest_charge"] = None
    assert invalid(raw).reason == Reason.MISSING_FIELD


def test_unknown_currency_is_a_dead_letter():
    raw = payment_intent_succeeded("ord_1001")
    raw["data"]["object"]["currency"] = "USD"
    assert invalid(raw).reason == Reason.UNKNOWN_CURRENCY


def test_same_event_maps_to_identical_records():
    raw = charge_refunded("ord_1001")
    assert mapped(raw) == mapped(json.loads(json.dumps(raw)))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", Reason.NOT_JSON),
        (b"{not json", Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'{"object": "event", "type": "x"}', Reason.MISSING_FIELD),
        (b'{"object": "event", "id": "ch_1", "type": "x", "created": 1}', Reason.WRONG_TYPE),
    ],
)
def test_message_that_is_not_a_stripe_event_is_refused_with_its_reason(value, reason):
    problem = parse_event(value)
    assert isinstance(problem, Invalid) and problem.reason == reason


def test_ledger_event_carries_the_idempotency_key_of_the_request_behind_the_event():
    raw = payment_intent_succeeded("ord_1001")
    raw["request"] = {"id": "req_123", "idempotency_key": "checkout-1001-attempt-1"}
    [ledger] = mapped(raw).ledger
    assert ledger["idempotency_key"] == "checkout-1001-attempt-1"


def test_payment_intent_without_amount_received_takes_its_captured_charges_amount():
    raw = payment_intent_succeeded("ord_1001")  # old API versions have no amount_received
    pi = raw["data"]["object"]
    del pi["amount_received"]
    charge = official("charge")
    charge.update(id=pi["latest_charge"], captured=True, amount=1099, amount_captured=1099)
    pi["latest_charge"] = charge
    result = mapped(raw)
    assert result.status is not None and result.status["amount"] == 1099
    assert [(e["stripe_object_id"], e["amount"]) for e in result.ledger] == [(charge["id"], 1099)]
