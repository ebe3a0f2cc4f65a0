"""Order status v1: what ``orders.status`` carries, one status change of one order per message.

JSON object per Kafka message, key = ``order_id``, so one order's updates stay in one
partition. ``update_id`` is the dedupe key and is deterministic: an update derived from a
Stripe event is ``stripe:<event id>``, so an event Stripe delivers twice, or a consumer
processes again after a restart, yields the same update.

Stripe does not deliver events in order (a ``charge.refunded`` can arrive before the
``payment_intent.succeeded`` of the same order): a reader applies an update only when its
``occurred_at`` is newer than the order's current status.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

STATUSES = (
    "processing",
    "authorized",
    "paid",
    "failed",
    "canceled",
    "partially_refunded",
    "refunded",
    "disputed",
    "dispute_won",
    "dispute_lost",
    "dispute_closed",
)

SOURCES = ("stripe_webhook",)

ORDER_STATUS_V1 = versioned(
    "order_status",
    1,
    [
        field(
            "update_id",
            pa.string(),
            "Unique id of this update; the dedupe key (stripe:<event id> for Stripe events).",
            minLength=1,
        ),
        field("order_id", pa.string(), "The order; also the Kafka message key.", minLength=1),
        field("status", pa.string(), "The order's new status.", enum=list(STATUSES)),
        field(
            "occurred_at",
            UTC_MICROS,
            "When the status changed (the Stripe event's created time), RFC 3339, UTC. "
            "Apply an update only if it is newer than the order's current one.",
            format="date-time",
        ),
        field("source", pa.string(), "Who reported the change.", enum=list(SOURCES)),
        field("source_event_id", pa.string(), "The event it comes from (evt_...).", minLength=1),
        field(
            "source_event_type",
            pa.string(),
            "The event's type, e.g. payment_intent.succeeded, charge.refunded.",
            minLength=1,
        ),
        field(
            "stripe_object_id",
            pa.string(),
            "The Stripe object the event is about (pi_, ch_, dp_ ...).",
            minLength=1,
        ),
        field(
            "payment_intent_id",
            pa.string(),
            "The Stripe PaymentIntent (pi_...); null where none is named.",
            nullable=True,
        ),
        field(
            "amount",
            pa.int64(),
            "The money the status is about, in minor units: received, refunded so far, or "
            "disputed; null where none applies.",
            nullable=True,
            minimum=0,
        ),
        field(
            "currency",
            pa.string(),
            "ISO 4217 code, lowercase; null with amount.",
            nullable=True,
            pattern="^[a-z]{3}$",
        ),
        field("livemode", pa.bool_(), "False for Stripe test-mode events."),
    ],
    doc="A status change of an order, as reported by its payment provider.",
)
