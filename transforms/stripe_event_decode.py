"""Decoding ``stripe.events`` messages for the telemetry job, bad ones dead-lettered.

The webhook receiver publishes only verified deliveries, so a bad message here is rare (a
producer other than payrecon, a replay gone wrong); it is dead-lettered with the reason the
``stripe.events`` consumer would give (``transforms.stripe_event_parse``), so that
in = decoded + dead letters holds for this topic too.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.dead_letter import Reason
from schemas.kafka_message import with_provenance
from schemas.stripe_event import STRIPE_EVENT_SEEN_V1
from transforms.decode import DecodedBatch, dead_letter_table, parse_json_payload
from transforms.ledger_validation import Invalid
from transforms.stripe_event_parse import StripeEvent, event_from_json

DECODED_STRIPE_EVENT = with_provenance(STRIPE_EVENT_SEEN_V1)


def _event_of(value: bytes | None, max_payload_bytes: int) -> StripeEvent | Invalid:
    parsed = parse_json_payload(value, max_payload_bytes)
    if isinstance(parsed, Invalid):
        return parsed
    if not isinstance(parsed, dict):
        return Invalid(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(parsed).__name__}")
    return event_from_json(parsed)


def decode_stripe_event_batch(
    messages: pa.Table, *, job: str, max_payload_bytes: int
) -> DecodedBatch:
    """Split ``KAFKA_MESSAGE`` rows into ``DECODED_STRIPE_EVENT`` rows and dead letters."""
    good: list[int] = []
    events: list[StripeEvent] = []
    bad: list[int] = []
    problems: list[Invalid] = []
    for i, value in enumerate(messages.column("value").to_pylist()):
        event = _event_of(value, max_payload_bytes)
        if isinstance(event, Invalid):
            bad.append(i)
            problems.append(event)
        else:
            good.append(i)
            events.append(event)
    indices = pa.array(good, pa.int64())
    decoded = pa.Table.from_arrays(
        [
            pa.array([e.id for e in events], pa.string()),
            pa.array([e.type for e in events], pa.string()),
            pa.array([e.created * 1_000_000 for e in events], pa.int64()).cast(
                DECODED_STRIPE_EVENT.field("created").type
            ),
            messages.column("topic").take(indices),
            messages.column("partition").take(indices),
            messages.column("offset").take(indices),
        ],
        schema=DECODED_STRIPE_EVENT,
    )
    return DecodedBatch(decoded, dead_letter_table(messages, bad, problems, job))
