"""Fuzzing the Kafka message decoders of the reconcile and telemetry jobs: whatever the bytes,
every message of a batch is decoded or dead-lettered with a reason (in = out + dead letters),
the dead letter keeps the original bytes and coordinates and can be written to its ``.dlq``
topic, and no input stops the job.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.dead_letter import DECODE_REASONS, Reason
from schemas.kafka_message import KAFKA_MESSAGE
from schemas.payments import PAYMENT_RESULT_V1, PAYMENT_TELEMETRY_V1
from tests.faults.fuzz_inputs import count, fuzz_settings, message_values
from tests.kafka_helpers import DAY, ledger_event
from transforms.dead_letters import dead_letter_records
from transforms.decode import DecodedBatch, decode_ledger_batch
from transforms.ledger_mapping import LedgerFieldMap
from transforms.ledger_validation import check_event
from transforms.payment_decode import decode_payment_batch

TOPIC = "ledger.transactions"
FIRST_OFFSET = 1000

VALID_LEDGER = [
    ledger_event(1, DAY),
    ledger_event(
        2,
        DAY + timedelta(hours=23, seconds=59.999),
        event_type="refund.succeeded",
        stripe_object_id="re_2",
        amount=0,
        currency="jpy",
        customer_id="cus_2",
        payment_method_type="card",
        country="JP",
        metadata={"cart": "c2", "note": "é \u202e"},
    ),
    ledger_event(3, DAY, payment_intent_id=None, idempotency_key=None, currency="kwd"),
]
# Another shape, mapped onto v1 by configuration (``ledger_mapping`` in payrecon.yaml).
FIELD_MAP = LedgerFieldMap(
    fields={"id": "event_id", "ts": "occurred_at", "charge.amount_cents": "amount"},
    constants={"currency": "usd"},
)
VALID_MAPPED = [
    {
        "id": "evt_9",
        "ts": "2026-11-20T10:00:00Z",
        "event_type": "charge.succeeded",
        "order_id": "ord_9",
        "stripe_object_id": "ch_9",
        "payment_intent_id": "pi_9",
        "idempotency_key": None,
        "charge": {"amount_cents": 1299},
    }
]
VALID_RESULT = {
    "request_id": "0b6f5bd4-53a4-4d8e-a0f6-0c1b7a1e8a11",
    "order_id": "ord_1",
    "status": "succeeded",
    "payment_intent_id": "pi_1",
    "charge_id": "ch_1",
    "amount": 1099,
    "currency": "usd",
    "error_code": None,
    "gateway_status": "succeeded",
    "gateway": "stripe",
    "idempotency_key": "payrecon-pi-0b6f5bd4-53a4-4d8e-a0f6-0c1b7a1e8a11",
    "attempts": 1,
    "processed_at": "2026-11-20T10:00:01.250Z",
}
VALID_TELEMETRY = {f.name: None for f in PAYMENT_TELEMETRY_V1} | {
    "event_id": "tel_1",
    "kind": "attempt",
    "outcome": "retry",
    "at": "2026-11-20T10:00:00Z",
    "consumer_id": "gw-1",
    "request_id": VALID_RESULT["request_id"],
    "attempt": 1,
    "latency_ms": 812.5,
    "http_status": 429,
    "backoff_ms": 250.0,
    "concurrency": 4,
    "amount": 1099,
    "currency": "usd",
}

oversized = st.just(b'{"padding": "' + b"x" * 70_000 + b'"}')
tombstone = st.none()


def batches(valid: list, **kw) -> st.SearchStrategy[list[bytes | None]]:
    value = message_values(valid, **kw) | oversized | tombstone
    return st.lists(value, min_size=1, max_size=24)


def messages(values: list[bytes | None]) -> pa.Table:
    n = len(values)
    return pa.Table.from_pydict(
        {
            "topic": [TOPIC] * n,
            "partition": [2] * n,
            "offset": list(range(FIRST_OFFSET, FIRST_OFFSET + n)),
            "timestamp": [datetime(2026, 11, 20, 12, tzinfo=UTC)] * n,
            "key": [b"ord_1"] * n,
            "value": values,
        },
        schema=KAFKA_MESSAGE,
    )


def assert_every_message_accounted_for(
    values: list[bytes | None], decoded: DecodedBatch, reasons: frozenset[Reason]
) -> None:
    events, letters = decoded.events, decoded.dead_letters
    assert events.num_rows + letters.num_rows == len(values)
    decoded_at = events.column("kafka_offset").to_pylist()
    lettered_at = letters.column("offset").to_pylist()
    assert sorted(decoded_at + lettered_at) == list(range(FIRST_OFFSET, FIRST_OFFSET + len(values)))
    for letter in letters.to_pylist():
        assert Reason(letter["reason"]) in reasons, letter["reason"]
        assert letter["detail"]
        assert letter["value"] == values[letter["offset"] - FIRST_OFFSET]
        assert (letter["topic"], letter["partition"], letter["key"]) == (TOPIC, 2, b"ord_1")
    # What the job does next with a dead letter: produce it with its headers.
    for record in dead_letter_records(letters):
        assert record.topic == f"{TOPIC}.dlq"


@fuzz_settings(fast=400, faults=5000)
@given(batches(VALID_LEDGER))
def test_every_ledger_message_is_decoded_or_dead_lettered_with_a_reason(values):
    count("ledger decode", len(values))
    decoded = decode_ledger_batch(messages(values), job="fuzz")

    assert_every_message_accounted_for(values, decoded, DECODE_REASONS)
    for event in decoded.events.to_pylist():
        assert event["amount"] >= 0 and event["currency"] and event["event_id"]


@fuzz_settings(fast=150, faults=2000)
@given(batches(VALID_MAPPED))
def test_mapped_ledger_messages_are_decoded_or_dead_lettered_with_a_reason(values):
    count("ledger decode (field map)", len(values))
    decoded = decode_ledger_batch(messages(values), job="fuzz", field_map=FIELD_MAP)

    assert_every_message_accounted_for(values, decoded, DECODE_REASONS)


def test_the_valid_examples_decode():
    """The fuzzers mutate events that are valid to begin with."""
    assert all(isinstance(check_event(e), int) for e in VALID_LEDGER)
    decoded = decode_ledger_batch(
        messages([json.dumps(e).encode() for e in VALID_MAPPED]),
        job="fuzz",
        field_map=FIELD_MAP,
    )
    assert decoded.events.num_rows == len(VALID_MAPPED)
    for schema, valid in (
        (PAYMENT_RESULT_V1, VALID_RESULT),
        (PAYMENT_TELEMETRY_V1, VALID_TELEMETRY),
    ):
        decoded = decode_payment_batch(messages([json.dumps(valid).encode()]), schema, job="fuzz")
        assert decoded.events.num_rows == 1, decoded.dead_letters.to_pylist()


PAYMENT_REASONS = frozenset(Reason)
PAYMENT_SCHEMAS = {
    "results": (PAYMENT_RESULT_V1, VALID_RESULT),
    "telemetry": (PAYMENT_TELEMETRY_V1, VALID_TELEMETRY),
}


@fuzz_settings(fast=250, faults=3000)
@given(st.sampled_from(sorted(PAYMENT_SCHEMAS)), st.data())
def test_every_payment_result_or_telemetry_message_is_decoded_or_dead_lettered(topic, data):
    schema, valid = PAYMENT_SCHEMAS[topic]
    values = data.draw(batches([valid]))
    count("payments.results/telemetry decode", len(values))
    decoded = decode_payment_batch(messages(values), schema, job="fuzz")

    assert_every_message_accounted_for(values, decoded, PAYMENT_REASONS)


@pytest.mark.parametrize(
    ("topic", "field", "value", "reason"),
    [
        ("telemetry", "http_status", 2**31, Reason.WRONG_TYPE),
        ("telemetry", "concurrency", -(2**31) - 1, Reason.WRONG_TYPE),
        ("telemetry", "amount", 2**63, Reason.AMOUNT_OUT_OF_RANGE),
        ("telemetry", "latency_ms", 2**53 + 1, Reason.WRONG_TYPE),
        ("results", "attempts", 2**40, Reason.WRONG_TYPE),
        ("results", "amount", 2**64 - 1, Reason.AMOUNT_OUT_OF_RANGE),
    ],
)
def test_a_number_its_column_cannot_hold_is_dead_lettered_not_a_crash(topic, field, value, reason):
    """Found by the fuzzer: Arrow refused the whole batch (ArrowInvalid), stopping the job."""
    schema, valid = PAYMENT_SCHEMAS[topic]
    values = [json.dumps(valid).encode(), json.dumps(valid | {field: value}).encode()]

    decoded = decode_payment_batch(messages(values), schema, job="fuzz")

    assert decoded.events.num_rows == 1
    [letter] = decoded.dead_letters.to_pylist()
    assert (letter["reason"], letter["offset"]) == (reason.value, FIRST_OFFSET + 1)
