"""Decoding ledger events: every bad message is dead-lettered with the right reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pyarrow as pa
import pytest

from schemas import LEDGER_EVENT_V1
from schemas.dead_letter import Reason
from schemas.jsonschema import json_schema
from schemas.kafka_message import KAFKA_MESSAGE
from tests.kafka_helpers import DAY, ledger_event
from transforms.decode import decode_ledger_batch
from transforms.ledger_validation import Invalid, check_event

GOOD = ledger_event(1, DAY)

MALFORMED = [
    (b"\xff\xfe not utf-8", Reason.NOT_JSON),
    (b'{"event_id": ', Reason.NOT_JSON),
    (b"[1, 2, 3]", Reason.NOT_AN_OBJECT),
    (json.dumps({k: v for k, v in GOOD.items() if k != "order_id"}).encode(), Reason.MISSING_FIELD),
    (json.dumps(GOOD | {"amount": "1000"}).encode(), Reason.WRONG_TYPE),
    (json.dumps(GOOD | {"amount": True}).encode(), Reason.WRONG_TYPE),
    (json.dumps(GOOD | {"order_id": 42}).encode(), Reason.WRONG_TYPE),
    (json.dumps(GOOD | {"event_id": ""}).encode(), Reason.EMPTY_FIELD),
    (json.dumps(GOOD | {"currency": "usdd"}).encode(), Reason.UNKNOWN_CURRENCY),
    (json.dumps(GOOD | {"currency": "USD"}).encode(), Reason.UNKNOWN_CURRENCY),
    (json.dumps(GOOD | {"currency": "abc"}).encode(), Reason.UNKNOWN_CURRENCY),
    (json.dumps(GOOD | {"amount": -5}).encode(), Reason.NEGATIVE_AMOUNT),
    (json.dumps(GOOD | {"amount": 10.5}).encode(), Reason.NON_INTEGER_AMOUNT),
    (json.dumps(GOOD | {"amount": 2**64}).encode(), Reason.AMOUNT_OUT_OF_RANGE),
    (json.dumps(GOOD | {"occurred_at": "2026-11-20 25:00"}).encode(), Reason.BAD_TIMESTAMP),
    (json.dumps(GOOD | {"occurred_at": "2026-11-20T10:00:00"}).encode(), Reason.BAD_TIMESTAMP),
    (json.dumps(GOOD | {"occurred_at": 1795132800}).encode(), Reason.BAD_TIMESTAMP),
    (json.dumps(GOOD | {"country": "usa"}).encode(), Reason.BAD_COUNTRY),
    (json.dumps(GOOD | {"metadata": {"a": 1}}).encode(), Reason.WRONG_TYPE),
    (json.dumps(GOOD | {"padding": "x" * 70_000}).encode(), Reason.PAYLOAD_TOO_LARGE),
]
# Python's $ also matches before a final newline; the decoder must not. (JSON Schema's
# patterns are ECMA-262, where it does not, but the Python jsonschema library evaluates them
# with re.search: these stay out of the JSON Schema comparison below.)
NEWLINE_TAILED = [
    (json.dumps(GOOD | {"country": "US\n"}).encode(), Reason.BAD_COUNTRY),
    (json.dumps(GOOD | {"occurred_at": "2026-11-20T10:00:00Z\n"}).encode(), Reason.BAD_TIMESTAMP),
]
# Valid RFC 3339 (so valid JSON Schema date-times) whose instant no payment has, and which
# Python cannot hold as a UTC datetime (found by `make faults`: the decoded row crashed a
# reader); the decoder takes 1970-01-01 to 9999-12-31 UTC, as for Stripe's exports.
OUT_OF_RANGE = [
    (json.dumps(GOOD | {"occurred_at": t}).encode(), Reason.BAD_TIMESTAMP)
    for t in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "1969-12-31T23:59:59Z")
]


def messages(values: list[bytes]) -> pa.Table:
    n = len(values)
    return pa.Table.from_pydict(
        {
            "topic": ["ledger.transactions"] * n,
            "partition": [3] * n,
            "offset": list(range(100, 100 + n)),
            "timestamp": [DAY] * n,
            "key": [b"k"] * n,
            "value": values,
        },
        schema=KAFKA_MESSAGE,
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    MALFORMED + NEWLINE_TAILED + OUT_OF_RANGE,
    ids=[r.value for _, r in MALFORMED + NEWLINE_TAILED + OUT_OF_RANGE],
)
def test_malformed_message_is_dead_lettered_with_its_reason(value, reason):
    decoded = decode_ledger_batch(messages([value]), job="test")
    assert decoded.events.num_rows == 0
    [letter] = decoded.dead_letters.to_pylist()
    assert letter["reason"] == reason.value
    assert (letter["value"], letter["topic"], letter["partition"], letter["offset"]) == (
        value,
        "ledger.transactions",
        3,
        100,
    )


def test_every_message_is_either_decoded_or_dead_lettered():
    values = [json.dumps(ledger_event(i, DAY)).encode() for i in range(50)]
    values += [v for v, _ in MALFORMED]
    decoded = decode_ledger_batch(messages(values), job="test")
    assert decoded.events.num_rows == 50
    assert decoded.dead_letters.num_rows == len(MALFORMED)
    offsets = (
        decoded.events.column("kafka_offset").to_pylist()
        + decoded.dead_letters.column("offset").to_pylist()
    )
    assert sorted(offsets) == list(range(100, 100 + len(values)))


def test_decoded_event_keeps_exact_values_and_converts_time_to_utc():
    event = GOOD | {
        "occurred_at": "2026-11-20T09:30:00.250+09:00",
        "currency": "jpy",
        "amount": 12_345,
        "country": "JP",
        "metadata": {"cart": "c1"},
    }
    [row] = decode_ledger_batch(messages([json.dumps(event).encode()]), job="t").events.to_pylist()
    assert row["occurred_at"] == datetime(2026, 11, 20, 0, 30, 0, 250_000, tzinfo=UTC)
    assert (row["amount"], row["currency"], row["country"]) == (12_345, "jpy", "JP")
    assert row["metadata"] == [("cart", "c1")]
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        "ledger.transactions",
        3,
        100,
    )
    assert (
        decode_ledger_batch(messages([]), job="t").events.schema.field("amount").type == pa.int64()
    )


def test_nullable_contract_fields_may_be_null_but_not_absent():
    dispute = GOOD | {"event_type": "dispute.created", "idempotency_key": None}
    assert not isinstance(check_event(dispute), Invalid)
    absent = {k: v for k, v in GOOD.items() if k != "idempotency_key"}
    assert check_event(absent).reason == Reason.MISSING_FIELD


@pytest.mark.parametrize(
    ("value", "reason"),
    [m for m in MALFORMED if m[1] not in (Reason.NOT_JSON, Reason.PAYLOAD_TOO_LARGE)],
)
def test_json_schema_rejects_what_the_decoder_dead_letters(value, reason):
    schema = json_schema(LEDGER_EVENT_V1)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert not validator.is_valid(json.loads(value))
    assert validator.is_valid(GOOD)
