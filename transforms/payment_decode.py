"""Decoding ``payments.telemetry``, ``payments.results`` (and ``stripe.events``) messages.

``decode_payment_batch`` turns one Arrow batch of raw messages of one topic into an Arrow
batch of payment telemetry v1 or payment result v1 rows (with Kafka provenance) and an Arrow
batch of ``DEAD_LETTER_V1`` rows. Every input message ends in exactly one of the two, so
in = decoded + dead letters. The checks follow the fields of ``schemas.payments`` (their
types, nullability and JSON-Schema constraints), so the contract is stated once.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas.currencies import ISO_4217
from schemas.dead_letter import Reason
from schemas.fields import constraints_of, is_required
from schemas.kafka_message import with_provenance
from schemas.payments import PAYMENT_RESULT_V1, PAYMENT_TELEMETRY_V1
from transforms.decode import (
    DEAD_LETTERS,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DecodedBatch,
    dead_letter_table,
    parse_json_payload,
)
from transforms.ledger_validation import Invalid, parse_rfc3339_micros
from transforms.stripe_event_decode import decode_stripe_event_batch

NAMESPACE = "payrecon.telemetry.decode"
DECODED_TELEMETRY = with_provenance(PAYMENT_TELEMETRY_V1)
DECODED_RESULT = with_provenance(PAYMENT_RESULT_V1)


class _FieldRule(NamedTuple):
    """What a field of a payment contract accepts, read once from its pyarrow field (its
    metadata is parsed on every access, which made the checks the decoder's main cost)."""

    name: str
    type: pa.DataType
    kind: str  # string, integer, floating, timestamp or other
    nullable: bool
    required: bool
    low: int  # integers: the range the column can hold, [low, high)
    high: int
    rules: dict[str, Any]


def _kind(t: pa.DataType) -> str:
    for kind in ("string", "integer", "floating", "timestamp"):
        if getattr(pa.types, f"is_{kind}")(t):
            return kind
    return "other"  # no other types in the payment contracts


def _rule(f: pa.Field) -> _FieldRule:
    low = high = 0
    if pa.types.is_integer(f.type):
        signed = pa.types.is_signed_integer(f.type)
        width = f.type.bit_width - 1 if signed else f.type.bit_width
        low, high = (-(2**width) if signed else 0), 2**width
    return _FieldRule(
        f.name, f.type, _kind(f.type), f.nullable, is_required(f), low, high, constraints_of(f)
    )


@functools.cache
def _rules(schema: pa.Schema) -> tuple[_FieldRule, ...]:
    return tuple(_rule(f) for f in schema)


def _check_value(f: _FieldRule, value: Any) -> Invalid | None:
    if f.kind == "string":
        ok = isinstance(value, str)
    elif f.kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif f.kind == "floating":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif f.kind == "timestamp":
        if not isinstance(value, str) or parse_rfc3339_micros(value) is None:
            return Invalid(Reason.BAD_TIMESTAMP, f"{f.name} {value!r} is not RFC 3339")
        return None
    else:
        ok = True
    if not ok:
        return Invalid(
            Reason.WRONG_TYPE, f"{f.name} should be {f.type}, got {type(value).__name__}"
        )
    return _check_range(f, value) or _check_constraints(f, value)


def _check_range(f: _FieldRule, value: Any) -> Invalid | None:
    """An integer the column cannot hold (Arrow would refuse the whole batch)."""
    if f.kind == "integer":
        if f.low <= value < f.high:
            return None
        reason = Reason.AMOUNT_OUT_OF_RANGE if f.name == "amount" else Reason.WRONG_TYPE
        return Invalid(reason, f"{f.name} {value} does not fit in {f.type}")
    if f.kind == "floating" and isinstance(value, int) and abs(value) > 2**53:
        return Invalid(Reason.WRONG_TYPE, f"{f.name} {value} is not exactly a {f.type}")
    return None


def _check_constraints(f: _FieldRule, value: Any) -> Invalid | None:
    if f.name == "currency" and value not in ISO_4217:
        return Invalid(Reason.UNKNOWN_CURRENCY, f"currency {value!r} is not ISO 4217 lowercase")
    rules = f.rules
    if not rules:
        return None
    if "enum" in rules and value not in rules["enum"]:
        return Invalid(Reason.WRONG_TYPE, f"{f.name} {value!r} is not one of {rules['enum']}")
    if "minimum" in rules and value < rules["minimum"]:
        reason = Reason.NEGATIVE_AMOUNT if f.name == "amount" else Reason.WRONG_TYPE
        return Invalid(reason, f"{f.name} {value} is below {rules['minimum']}")
    if "maximum" in rules and value > rules["maximum"]:
        return Invalid(Reason.AMOUNT_OUT_OF_RANGE, f"{f.name} {value} is above the maximum")
    return None


def check_record(schema: pa.Schema, obj: Any) -> Invalid | None:
    """None when ``obj`` is a valid record of ``schema`` (payment telemetry or result v1)."""
    return _check_record(_rules(schema), obj)


def _check_record(fields: tuple[_FieldRule, ...], obj: Any) -> Invalid | None:
    if not isinstance(obj, dict):
        return Invalid(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    for f in fields:
        if f.name not in obj:
            if f.required:
                return Invalid(Reason.MISSING_FIELD, f"{f.name} is missing")
            continue
        value = obj[f.name]
        if value is None:
            if not f.nullable:
                return Invalid(Reason.WRONG_TYPE, f"{f.name} must not be null")
            continue
        invalid = _check_value(f, value)
        if invalid is not None:
            return invalid
    return None


def _rows_table(schema: pa.Schema, messages: pa.Table, rows: list[int], objects: list[dict]):
    times = [f for f in schema if pa.types.is_timestamp(f.type)]
    wire = pa.struct([f for f in schema if f not in times])
    fields = pa.Table.from_struct_array(pa.array(objects, type=wire))
    columns = {name: fields.column(name) for name in fields.column_names}
    for f in times:
        micros = [
            None if o.get(f.name) is None else parse_rfc3339_micros(o[f.name]) for o in objects
        ]
        columns[f.name] = pa.array(micros, pa.int64()).cast(f.type)
    indices = pa.array(rows, pa.int64())
    columns["kafka_topic"] = messages.column("topic").take(indices)
    columns["kafka_partition"] = messages.column("partition").take(indices)
    columns["kafka_offset"] = messages.column("offset").take(indices)
    decoded = with_provenance(schema)
    return pa.Table.from_arrays([columns[f.name] for f in decoded], schema=decoded)


def decode_payment_batch(
    messages: pa.Table,
    schema: pa.Schema,
    *,
    job: str,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> DecodedBatch:
    """Split ``KAFKA_MESSAGE`` rows into ``schema`` rows (with provenance) and dead letters."""
    fields = _rules(schema)
    good: list[int] = []
    objects: list[dict] = []
    bad: list[int] = []
    problems: list[Invalid] = []
    for i, value in enumerate(messages.column("value").to_pylist()):
        parsed = parse_json_payload(value, max_payload_bytes)
        invalid = parsed if isinstance(parsed, Invalid) else _check_record(fields, parsed)
        if invalid is None:
            good.append(i)
            objects.append(parsed)  # type: ignore[arg-type]
        else:
            bad.append(i)
            problems.append(invalid)
    return DecodedBatch(
        _rows_table(schema, messages, good, objects),
        dead_letter_table(messages, bad, problems, job),
    )


TELEMETRY = "telemetry"
RESULTS = "results"
STRIPE_EVENTS = "stripe_events"
COUNTS = "counts"
MESSAGE_COUNTS = pa.schema(
    [
        ("topic", pa.string()),
        # The batch's coordinates keep its row distinct from another batch's equal counts
        # (staged files are named by content).
        ("partition", pa.int32()),
        ("first_offset", pa.int64()),
        ("messages", pa.int64()),
        ("decoded", pa.int64()),
        ("dead_letters", pa.int64()),
    ]
)


class _DecodePaymentsFn(beam.DoFn):
    def __init__(self, topics: dict[str, str], job: str, max_payload_bytes: int):
        self._topics = topics  # topic -> TELEMETRY or RESULTS
        self._job = job
        self._max_payload = max_payload_bytes
        self.messages_in = Metrics.counter(NAMESPACE, "messages_in")
        self.decoded = Metrics.counter(NAMESPACE, "records_out")
        self.dead_lettered = Metrics.counter(NAMESPACE, "dead_letters")

    def process(self, messages: pa.Table):
        if messages.num_rows == 0:
            return
        topic = messages.column("topic")[0].as_py()
        kind = self._topics[topic]
        if kind == STRIPE_EVENTS:
            decoded = decode_stripe_event_batch(
                messages, job=self._job, max_payload_bytes=self._max_payload
            )
        else:
            schema = PAYMENT_TELEMETRY_V1 if kind == TELEMETRY else PAYMENT_RESULT_V1
            decoded = decode_payment_batch(
                messages, schema, job=self._job, max_payload_bytes=self._max_payload
            )
        self.messages_in.inc(messages.num_rows)
        self.decoded.inc(decoded.events.num_rows)
        self.dead_lettered.inc(decoded.dead_letters.num_rows)
        yield beam.pvalue.TaggedOutput(
            COUNTS,
            pa.Table.from_pylist(
                [
                    {
                        "topic": topic,
                        "partition": messages.column("partition")[0].as_py(),
                        "first_offset": messages.column("offset")[0].as_py(),
                        "messages": messages.num_rows,
                        "decoded": decoded.events.num_rows,
                        "dead_letters": decoded.dead_letters.num_rows,
                    }
                ],
                schema=MESSAGE_COUNTS,
            ),
        )
        if decoded.dead_letters.num_rows:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, decoded.dead_letters)
        if decoded.events.num_rows:
            yield beam.pvalue.TaggedOutput(kind, decoded.events)


class DecodePaymentMessages(beam.PTransform):
    """``KAFKA_MESSAGE`` batches of the telemetry, results and Stripe events topics in;
    five outputs:

    ``telemetry`` (``DECODED_TELEMETRY`` tables), ``results`` (``DECODED_RESULT`` tables),
    ``stripe_events`` (``DECODED_STRIPE_EVENT`` tables; empty without a
    ``stripe_events_topic``), ``dead_letters`` (``DEAD_LETTER_V1`` tables: original bytes,
    coordinates, reason) and ``counts`` (``MESSAGE_COUNTS`` rows per input batch, so a run
    proves messages = decoded + dead letters per topic). Every message lands in exactly one
    of the first four.
    """

    def __init__(
        self,
        *,
        telemetry_topic: str,
        results_topic: str,
        job: str,
        stripe_events_topic: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ):
        super().__init__()
        topics = {telemetry_topic: TELEMETRY, results_topic: RESULTS}
        if stripe_events_topic is not None:
            topics[stripe_events_topic] = STRIPE_EVENTS
        self._fn = _DecodePaymentsFn(topics, job, max_payload_bytes)

    def expand(self, messages):
        decode = beam.ParDo(self._fn).with_output_types(pa.Table)
        return messages | "ValidateAndDecode" >> decode.with_outputs(
            TELEMETRY, RESULTS, STRIPE_EVENTS, DEAD_LETTERS, COUNTS
        )
