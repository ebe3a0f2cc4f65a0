"""Stripe events on ``stripe.events``: the envelope payrecon relies on, and the message layout.

The receiver (``payrecon webhooks serve``) publishes each verified webhook delivery as the
request body, byte for byte, so a consumer can verify Stripe's signature again or replay
the event exactly. Key = the event id (``evt_...``); timestamp = the event's ``created``;
headers below. Only the envelope fields are a payrecon contract; ``data.object`` is the
Stripe object exactly as the endpoint's API version renders it.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

STRIPE_EVENT_ENVELOPE_V1 = versioned(
    "stripe_event",
    1,
    [
        field(
            "id",
            pa.string(),
            "Stripe's event id; the message key and the dedupe key.",
            pattern="^evt_",
        ),
        field("object", pa.string(), "Always 'event'.", enum=["event"]),
        field("type", pa.string(), "e.g. payment_intent.succeeded.", minLength=1),
        field("created", pa.int64(), "When Stripe created the event, Unix seconds.", minimum=0),
        field("livemode", pa.bool_(), "False for test-mode events."),
        field(
            "api_version",
            pa.string(),
            "The API version data.object is rendered in.",
            required=False,
        ),
        field(
            "data",
            pa.struct([pa.field("object", pa.struct([]))]),
            "data.object: the Stripe object the event is about, as Stripe sent it.",
        ),
    ],
    doc="A Stripe event as delivered to a webhook endpoint (only the envelope is checked).",
)

# Kafka headers the receiver adds to each message on stripe.events.
HEADER_SIGNATURE = "stripe-signature"  # the delivery's Stripe-Signature, to verify it again
HEADER_EVENT_TYPE = "stripe-event-type"
HEADER_RECEIVED_AT = "payrecon-received-at"  # RFC 3339 UTC, when the receiver accepted it

# What ``payrecon telemetry`` keeps of each event on stripe.events (with Kafka provenance):
# enough to count webhooks per minute and type.
STRIPE_EVENT_SEEN_V1 = versioned(
    "stripe_event_seen",
    1,
    [
        field("event_id", pa.string(), "Stripe's event id (evt_...)."),
        field("type", pa.string(), "The event type, e.g. payment_intent.succeeded."),
        field("created", UTC_MICROS, "When Stripe created the event (its event time)."),
    ],
    doc="A Stripe event as the telemetry job counts it.",
)
