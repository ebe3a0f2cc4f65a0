"""Stripe events to order status updates and ledger events: one pure, deterministic mapping.

Input: a :class:`~transforms.stripe_event_parse.StripeEvent`. Output: :class:`Mapped` (at
most one ``schemas.order_status`` update and any number of ``schemas.ledger_event`` v1
events, as wire-ready dicts), or ``Invalid(reason, detail)`` for the dead-letter topic.

| Stripe event                    | order status                 | ledger event (object)         |
| ------------------------------- | ---------------------------- | ----------------------------- |
| payment_intent.processing       | processing                   | -                             |
| payment_intent.succeeded        | paid                         | charge.succeeded (latest ch_) |
| payment_intent.payment_failed   | failed                       | charge.failed (ch_, if any)   |
| payment_intent.canceled         | canceled                     | -                             |
| charge.succeeded                | paid, or authorized if not   | charge.succeeded (ch_) when   |
|                                 | captured                     | captured                      |
| charge.captured                 | paid                         | charge.succeeded (ch_)        |
| charge.failed                   | failed                       | charge.failed (ch_)           |
| charge.refunded                 | refunded/partially_refunded  | refund.succeeded or .failed   |
|                                 |                              | per listed refund (re_), else |
|                                 |                              | charge.refunded (ch_)         |
| charge.dispute.created          | disputed                     | dispute.created (dp_)         |
| charge.dispute.closed           | dispute_won/_lost/_closed    | dispute.closed (dp_)          |
| charge.dispute.funds_withdrawn  | -                            | dispute.funds_withdrawn (dp_) |
| charge.dispute.funds_reinstated | -                            | dispute.funds_reinstated      |

The order is the object's ``metadata.order_id`` (a PaymentIntent's, a charge's or a
dispute's). Stripe copies no metadata onto disputes, so for an object that names a charge,
the consumer looks the charge's order up through the Stripe API when it has a key
(``order_of_charge``). An event still without an order is dead-lettered
(``missing_order_id``, replayable with ``payrecon dlq`` once a key is configured), as is any
other event type (``unhandled_event_type``): subscribe the endpoint to :data:`HANDLED_TYPES`.

Determinism, which makes every sink idempotent: the same event always gives byte-identical
records. A status update's id is ``stripe:<event id>``. A ledger event's id is
``stripe:<ledger type>:<object id>``, derived from the money movement, not from the Stripe
event: ``payment_intent.succeeded`` and ``charge.succeeded`` describe the same charge, and
two ledger ids for one charge would be a ``duplicate_in_ledger`` in the reconciliation.
``occurred_at`` is the event's ``created`` and ``idempotency_key`` the key of the API request
that caused the event, except for refunds listed by ``charge.refunded`` (a later event lists
earlier refunds too): their own ``created``, and no key.
Every ledger event passes :func:`transforms.ledger_validation.check_event`, the check the
reconciliation's decoder applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.currencies import is_known
from schemas.dead_letter import Reason
from transforms.ledger_validation import Invalid, check_event
from transforms.stripe_event_parse import (
    StripeEvent,
    created_in_range,
    id_of,
    listed,
    metadata,
    rfc3339,
    text,
    whole,
)

SOURCE = "stripe_webhook"


@dataclass(frozen=True)
class Mapped:
    """What one Stripe event becomes."""

    status: dict[str, Any] | None
    ledger: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class _Facts:
    """The fields of ``data.object`` shared by the status update and the ledger events."""

    event: StripeEvent
    order_id: str
    object_id: str
    payment_intent_id: str | None
    currency: str | None

    def status(self, status: str, amount: int | None) -> dict[str, Any]:
        event = self.event
        return {
            "update_id": f"stripe:{event.id}",
            "order_id": self.order_id,
            "status": status,
            "occurred_at": event.occurred_at,
            "source": SOURCE,
            "source_event_id": event.id,
            "source_event_type": event.type,
            "stripe_object_id": self.object_id,
            "payment_intent_id": self.payment_intent_id,
            "amount": amount,
            "currency": self.currency,
            "livemode": event.livemode,
        }

    def ledger(
        self,
        event_type: str,
        object_id: str,
        amount: Any,
        *,
        occurred_at: str | None = None,
        id_suffix: str = "",
        from_this_request: bool = True,
        **optional: Any,
    ) -> dict[str, Any]:
        record = {
            "event_id": f"stripe:{event_type}:{object_id}{id_suffix}",
            "event_type": event_type,
            "occurred_at": occurred_at or self.event.occurred_at,
            "order_id": self.order_id,
            "stripe_object_id": object_id,
            "payment_intent_id": self.payment_intent_id,
            "amount": amount,
            "currency": self.currency,
            "idempotency_key": (self.event.request_idempotency_key if from_this_request else None),
        }
        record.update({k: v for k, v in optional.items() if v is not None and v != {}})
        return record


def map_event(
    event: StripeEvent, order_of_charge: Callable[[str], str | None] | None = None
) -> Mapped | Invalid:
    """The status update and ledger events of ``event``, or why it has none.

    ``order_of_charge`` finds the order of a charge id: a dispute names its charge, not its
    order (Stripe copies no metadata onto disputes), so without it dispute events are
    dead-lettered as ``missing_order_id`` (replayable once a lookup is configured)."""
    handler = _HANDLERS.get(event.type)
    if handler is None:
        return Invalid(
            Reason.UNHANDLED_EVENT_TYPE,
            f"{event.type} is not one of the {len(_HANDLERS)} handled event types",
        )
    kind, on_object = handler
    if event.object_kind != kind:
        return Invalid(
            Reason.WRONG_TYPE, f"{event.type}: data.object is {event.object_kind!r}, not {kind!r}"
        )
    facts = _facts(event, order_of_charge)
    if isinstance(facts, Invalid):
        return facts
    mapped = on_object(facts)
    if isinstance(mapped, Invalid):
        return mapped
    invalid = _check_money(mapped.status) if mapped.status else None
    if invalid:
        return invalid
    for record in mapped.ledger:
        checked = check_event(record)
        if isinstance(checked, Invalid):
            return Invalid(checked.reason, f"ledger event {record['event_id']}: {checked.detail}")
    return mapped


def _check_money(status: dict[str, Any]) -> Invalid | None:
    """The status update's amount and currency, held to the ledger's rules."""
    amount, currency = status["amount"], status["currency"]
    if amount is not None and amount < 0:
        return Invalid(Reason.NEGATIVE_AMOUNT, f"{status['source_event_type']}: amount {amount}")
    if currency is not None and not is_known(currency):
        return Invalid(
            Reason.UNKNOWN_CURRENCY,
            f"{status['source_event_type']}: currency {currency[:10]!r} is not ISO 4217",
        )
    return None


def _facts(
    event: StripeEvent, order_of_charge: Callable[[str], str | None] | None = None
) -> _Facts | Invalid:
    obj = event.obj
    object_id = text(obj, "id")
    if object_id is None:
        return Invalid(Reason.MISSING_FIELD, f"{event.type}: data.object.id is missing")
    order_id = metadata(obj).get("order_id")
    charge_id = id_of(obj.get("charge"))
    if not order_id and charge_id and order_of_charge is not None:
        order_id = order_of_charge(charge_id)
    if not order_id:
        return Invalid(
            Reason.MISSING_ORDER_ID,
            f"{event.type}: {object_id} has no metadata.order_id"
            + (f" (its charge is {id_of(obj.get('charge'))})" if obj.get("charge") else ""),
        )
    payment_intent_id = object_id if event.object_kind == "payment_intent" else None
    return _Facts(
        event=event,
        order_id=order_id,
        object_id=object_id,
        payment_intent_id=payment_intent_id or id_of(obj.get("payment_intent")),
        currency=text(obj, "currency"),
    )


def _extras(facts: _Facts) -> dict[str, Any]:
    """Optional ledger fields an object can fill in."""
    obj = facts.event.obj
    details = obj.get("payment_method_details")
    return {
        "customer_id": id_of(obj.get("customer")),
        "payment_method_type": text(details, "type") if isinstance(details, dict) else None,
        "metadata": metadata(obj),
    }


# -- payment intents ----------------------------------------------------------------------------


def _latest_charge(pi: dict[str, Any]) -> str | None:
    """The PaymentIntent's charge: ``latest_charge``, or (API versions before 2022-11-15)
    the last succeeded one of its ``charges`` list."""
    latest = id_of(pi.get("latest_charge"))
    if latest:
        return latest
    succeeded = [c for c in listed(pi, "charges") or [] if c.get("status") == "succeeded"]
    return id_of(succeeded[-1]) if succeeded else None


def _amount_received(pi: dict[str, Any]) -> int | None:
    """``amount_received``; without it (old API versions), the captured amount of the
    expanded latest charge."""
    received = whole(pi, "amount_received")
    charge = pi.get("latest_charge")
    if received is None and isinstance(charge, dict) and charge.get("captured") is True:
        received = whole(charge, "amount_captured") or whole(charge, "amount")
    return received


def _pi_succeeded(facts: _Facts) -> Mapped | Invalid:
    pi = facts.event.obj
    received = _amount_received(pi)
    charge = _latest_charge(pi)
    if charge is None:
        return Invalid(
            Reason.MISSING_FIELD, f"{facts.event.type}: {facts.object_id} names no charge"
        )
    ledger = facts.ledger(
        "charge.succeeded",
        charge,
        received,
        customer_id=id_of(pi.get("customer")),
        metadata=metadata(pi),
    )
    return Mapped(facts.status("paid", received), (ledger,))


def _pi_failed(facts: _Facts) -> Mapped:
    pi = facts.event.obj
    amount = whole(pi, "amount")
    error = pi.get("last_payment_error")
    charge = id_of(pi.get("latest_charge")) or (
        id_of(error.get("charge")) if isinstance(error, dict) else None
    )
    ledger: tuple[dict[str, Any], ...] = ()
    if charge is not None:
        ledger = (
            facts.ledger(
                "charge.failed",
                charge,
                amount,
                customer_id=id_of(pi.get("customer")),
                metadata=metadata(pi),
            ),
        )
    return Mapped(facts.status("failed", amount), ledger)


def _pi_status(status: str) -> Callable[[_Facts], Mapped]:
    def on_object(facts: _Facts) -> Mapped:
        return Mapped(facts.status(status, whole(facts.event.obj, "amount")))

    return on_object


# -- charges ------------------------------------------------------------------------------------


def _charge_captured(facts: _Facts) -> Mapped:
    charge = facts.event.obj
    if charge.get("captured") is not True:
        return Mapped(facts.status("authorized", whole(charge, "amount")))
    captured = whole(charge, "amount_captured") or whole(charge, "amount")
    ledger = facts.ledger("charge.succeeded", facts.object_id, captured, **_extras(facts))
    return Mapped(facts.status("paid", captured), (ledger,))


def _charge_failed(facts: _Facts) -> Mapped:
    amount = whole(facts.event.obj, "amount")
    ledger = facts.ledger("charge.failed", facts.object_id, amount, **_extras(facts))
    return Mapped(facts.status("failed", amount), (ledger,))


def _charge_refunded(facts: _Facts) -> Mapped | Invalid:
    charge = facts.event.obj
    refunded = whole(charge, "amount_refunded")
    status = "refunded" if charge.get("refunded") is True else "partially_refunded"
    refunds = listed(charge, "refunds")
    if not refunds:
        # Newer API versions do not list the refunds on the charge: record what is known
        # (informational for the reconciliation), one record per refunded total.
        ledger = facts.ledger(
            "charge.refunded",
            facts.object_id,
            refunded,
            id_suffix=f":{refunded}",
            **_extras(facts),
        )
        return Mapped(facts.status(status, refunded), (ledger,))
    events = _refund_events(facts, refunds)
    if isinstance(events, Invalid):
        return events
    return Mapped(facts.status(status, refunded), tuple(events))


def _refund_events(facts: _Facts, refunds: list[dict[str, Any]]) -> list[dict[str, Any]] | Invalid:
    """A ledger event per succeeded or failed refund (pending ones have not moved money)."""
    events = []
    for refund in refunds:
        kind = {"succeeded": "refund.succeeded", "failed": "refund.failed"}.get(
            str(refund.get("status"))
        )
        refund_id = id_of(refund)
        if kind is None or refund_id is None:
            continue
        created = whole(refund, "created")
        if created is not None and not created_in_range(created):
            return Invalid(
                Reason.BAD_TIMESTAMP, f"{facts.event.type}: refund {refund_id} created {created}"
            )
        events.append(
            facts.ledger(
                kind,
                refund_id,
                whole(refund, "amount"),
                occurred_at=rfc3339(created) if created is not None else None,
                # The event's request created one of the listed refunds, not saying which.
                from_this_request=False,
                metadata=metadata(facts.event.obj),
            )
        )
    return events


# -- disputes -----------------------------------------------------------------------------------

_DISPUTE_CLOSED = {"won": "dispute_won", "lost": "dispute_lost"}


def _dispute(
    ledger_type: str, status: Callable[[dict[str, Any]], str | None]
) -> Callable[[_Facts], Mapped]:
    def on_object(facts: _Facts) -> Mapped:
        dispute = facts.event.obj
        amount = whole(dispute, "amount")
        ledger = facts.ledger(ledger_type, facts.object_id, amount, metadata=metadata(dispute))
        new_status = status(dispute)
        return Mapped(facts.status(new_status, amount) if new_status else None, (ledger,))

    return on_object


def _no_status(dispute: dict[str, Any]) -> None:
    return None


_HANDLERS: dict[str, tuple[str, Callable[[_Facts], Mapped | Invalid]]] = {
    "payment_intent.processing": ("payment_intent", _pi_status("processing")),
    "payment_intent.succeeded": ("payment_intent", _pi_succeeded),
    "payment_intent.payment_failed": ("payment_intent", _pi_failed),
    "payment_intent.canceled": ("payment_intent", _pi_status("canceled")),
    "charge.succeeded": ("charge", _charge_captured),
    "charge.captured": ("charge", _charge_captured),
    "charge.failed": ("charge", _charge_failed),
    "charge.refunded": ("charge", _charge_refunded),
    "charge.dispute.created": ("dispute", _dispute("dispute.created", lambda _: "disputed")),
    "charge.dispute.closed": (
        "dispute",
        _dispute(
            "dispute.closed", lambda d: _DISPUTE_CLOSED.get(str(d.get("status")), "dispute_closed")
        ),
    ),
    "charge.dispute.funds_withdrawn": ("dispute", _dispute("dispute.funds_withdrawn", _no_status)),
    "charge.dispute.funds_reinstated": (
        "dispute",
        _dispute("dispute.funds_reinstated", _no_status),
    ),
}

HANDLED_TYPES = tuple(_HANDLERS)
