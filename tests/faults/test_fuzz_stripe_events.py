"""Fuzzing ``payrecon webhooks consume``: Stripe's official example events, mutated, never stop
the consumer. Each message is mapped (its records can be produced, and every ledger event it
writes decodes in the reconciliation) or dead-lettered with a reason. The same messages read
by ``payrecon telemetry`` are counted or dead-lettered with a reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.stripe_events import Topics, output_records
from schemas.dead_letter import Reason, dead_letter_headers
from schemas.kafka_message import KAFKA_MESSAGE
from tests.faults.fuzz_inputs import count, fuzz_settings, message_values
from tests.webhook_helpers import (
    charge_refunded,
    dispute_created,
    official,
    payment_intent_succeeded,
    stripe_event,
    with_order,
)
from transforms.decode import decode_ledger_batch
from transforms.ledger_validation import Invalid
from transforms.stripe_event_decode import decode_stripe_event_batch
from transforms.stripe_event_parse import parse_event
from transforms.stripe_events import HANDLED_TYPES, Mapped, map_event
from transforms.telemetry_counts import minute_counts

TOPICS = Topics()
MAX_TIMESTAMP_MS = 2**63 - 1


def _captured_charge() -> dict:
    charge = with_order(official("charge"), "ord_1")
    charge.update(captured=True, amount_captured=100)
    return charge


def _valid_events() -> list[dict]:
    pi = payment_intent_succeeded()["data"]["object"]
    events = [
        payment_intent_succeeded(event_id="evt_fuzz_pi"),
        charge_refunded(event_id="evt_fuzz_refund"),
        dispute_created(event_id="evt_fuzz_dispute"),
    ]
    for event_type in HANDLED_TYPES:
        kind = event_type.split(".")[0]
        if event_type.startswith("charge.dispute"):
            obj = with_order(official("dispute"), "ord_1")
        elif kind == "charge":
            obj = _captured_charge()
        else:
            obj = dict(pi)
        events.append(stripe_event(event_type, obj, event_id=f"evt_fuzz_{len(events)}"))
    return events


VALID = _valid_events()


def check_outcome(value: bytes) -> Mapped | Invalid:
    """What the consumer does with one message, short of producing it."""
    event = parse_event(value)
    if isinstance(event, Invalid):
        return event
    assert 0 <= event.created * 1000 <= MAX_TIMESTAMP_MS  # the receiver's Kafka timestamp
    mapped = map_event(event)
    if isinstance(mapped, Invalid):
        return mapped
    records = output_records(event, mapped, TOPICS)
    ledger = [r.value for r in records if r.topic == TOPICS.ledger]
    assert len(ledger) == len(mapped.ledger)
    if ledger:
        decoded = decode_ledger_batch(_messages(ledger), job="fuzz")
        assert decoded.dead_letters.num_rows == 0, decoded.dead_letters.to_pylist()
    return mapped


def _messages(values: list[bytes]) -> pa.Table:
    n = len(values)
    return pa.Table.from_pydict(
        {
            "topic": [TOPICS.ledger] * n,
            "partition": [0] * n,
            "offset": list(range(n)),
            "timestamp": [None] * n,
            "key": [None] * n,
            "value": values,
        },
        schema=KAFKA_MESSAGE,
    )


def test_every_official_example_event_maps():
    outcomes = [check_outcome(stripe_body(e)) for e in VALID]
    assert all(isinstance(o, Mapped) for o in outcomes), outcomes


def stripe_body(event: dict) -> bytes:
    return json.dumps(event, indent=2).encode()


@fuzz_settings(fast=1000, faults=10000)
@given(message_values(VALID))
def test_every_stripe_event_message_is_mapped_or_dead_lettered_with_a_reason(value):
    count("stripe event mapping")
    outcome = check_outcome(value)

    if isinstance(outcome, Invalid):
        assert Reason(outcome.reason) and outcome.detail
        dead_letter_headers(
            reason=outcome.reason.value,
            detail=outcome.detail,
            topic="stripe.events",
            partition=0,
            offset=0,
            job="webhooks",
            dead_lettered_at=datetime.now(UTC),
        )


@pytest.mark.parametrize("created", [253402300800, 2**63 - 1, 2**64 - 1])
def test_an_event_created_after_the_year_9999_is_dead_lettered_not_a_crash(created):
    """Found by the fuzzer: ``created`` was only checked to be a non-negative integer; the
    consumer then failed to write the year 10000 (ValueError) and the receiver to give
    Kafka a timestamp beyond 64 bits (OverflowError, a 500)."""
    outcome = check_outcome(stripe_body(payment_intent_succeeded(created=created)))

    assert isinstance(outcome, Invalid) and outcome.reason is Reason.BAD_TIMESTAMP


def test_a_refund_created_after_the_year_9999_is_dead_lettered_not_a_crash():
    """Found by the fuzzer: a listed refund's own ``created`` became its occurred_at."""
    event = charge_refunded()
    event["data"]["object"]["refunds"]["data"][0]["created"] = 10**12

    outcome = check_outcome(stripe_body(event))

    assert isinstance(outcome, Invalid) and outcome.reason is Reason.BAD_TIMESTAMP


@fuzz_settings(fast=300, faults=3000)
@given(st.lists(message_values(VALID), min_size=1, max_size=8))
def test_every_stripe_event_the_telemetry_job_reads_is_counted_or_dead_lettered(values):
    count("stripe event telemetry decode")
    decoded = decode_stripe_event_batch(_messages(values), job="fuzz", max_payload_bytes=2**20)

    assert decoded.events.num_rows + decoded.dead_letters.num_rows == len(values)
    assert all(Reason(r) for r in decoded.dead_letters.column("reason").to_pylist())
    assert decoded.events.column("event_id").null_count == 0
    minute_counts(decoded.events, "created")  # what the job counts them with
