"""Decoding Kafka messages into ledger events, with every bad message dead-lettered.

``decode_ledger_batch`` turns one Arrow batch of raw messages into an Arrow batch of
``LEDGER_EVENT_V1`` rows (with Kafka provenance) and an Arrow batch of ``DEAD_LETTER_V1``
rows. Every input message ends in exactly one of the two, so in = out + dead letters.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import apache_beam as beam
import orjson
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas.dead_letter import DEAD_LETTER_V1, Reason
from schemas.kafka_message import with_provenance
from schemas.ledger_event import LEDGER_EVENT_V1
from transforms.ledger_mapping import LedgerFieldMap, map_ledger_event
from transforms.ledger_validation import Invalid, check_event

DECODED_LEDGER_EVENT = with_provenance(LEDGER_EVENT_V1)
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
DEAD_LETTERS = "dead_letters"
NAMESPACE = "payrecon.decode"

_OCCURRED_AT = LEDGER_EVENT_V1.field("occurred_at")
# The wire fields converted as they are; occurred_at is parsed by the validation.
_WIRE_FIELDS = pa.struct([f for f in LEDGER_EVENT_V1 if f.name != _OCCURRED_AT.name])


class DecodedBatch(NamedTuple):
    events: pa.Table
    dead_letters: pa.Table


_NO_MAPPING = LedgerFieldMap()


def parse_json_payload(value: bytes | None, max_payload: int) -> Invalid | dict:
    """A message value parsed as JSON, or why it cannot be (no value, too large, not JSON)."""
    if value is None:
        return Invalid(Reason.NOT_JSON, "the message has no value")
    if len(value) > max_payload:
        return Invalid(Reason.PAYLOAD_TOO_LARGE, f"{len(value)} bytes > limit of {max_payload}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return _parse_slowly(value)


def _parse_slowly(value: bytes) -> Invalid | dict:
    """The standard library's parser, for valid JSON that orjson refuses (integers wider
    than 64 bits), so such a message gets its precise reason rather than ``not_json``."""
    try:
        parsed = json.loads(value)
        json.dumps(parsed, ensure_ascii=False).encode()  # lone surrogates cannot be stored
    except (UnicodeError, ValueError, RecursionError) as exc:
        return Invalid(Reason.NOT_JSON, str(exc)[:200])
    return parsed


def decode_ledger_batch(
    messages: pa.Table,
    *,
    job: str,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    field_map: LedgerFieldMap = _NO_MAPPING,
) -> DecodedBatch:
    """Split a batch of ``KAFKA_MESSAGE`` rows into decoded events and dead letters
    (``field_map`` first reshapes each parsed object into ledger event v1)."""
    values = messages.column("value").to_pylist()
    good: list[int] = []
    objects: list[dict] = []
    micros: list[int] = []
    bad: list[int] = []
    problems: list[Invalid] = []
    for i, value in enumerate(values):
        parsed = _mapped(parse_json_payload(value, max_payload_bytes), field_map)
        checked = parsed if isinstance(parsed, Invalid) else check_event(parsed)
        if isinstance(checked, Invalid) and checked.reason is Reason.NON_INTEGER_AMOUNT:
            # orjson reads integers wider than 64 bits as floats; the standard parser is
            # exact, so such an amount is reported as out of range, not as a fraction.
            parsed = _mapped(_parse_slowly(value), field_map)
            checked = parsed if isinstance(parsed, Invalid) else check_event(parsed)
        if isinstance(checked, Invalid):
            bad.append(i)
            problems.append(checked)
        else:
            good.append(i)
            objects.append(parsed)  # type: ignore[arg-type]
            micros.append(checked)
    return DecodedBatch(
        _events_table(messages, good, objects, micros),
        dead_letter_table(messages, bad, problems, job),
    )


def _mapped(parsed: Invalid | dict, field_map: LedgerFieldMap) -> Invalid | dict:
    return parsed if isinstance(parsed, Invalid) else map_ledger_event(parsed, field_map)


def _events_table(
    messages: pa.Table, rows: list[int], objects: list[dict], micros: list[int]
) -> pa.Table:
    # One C++ conversion of the validated objects; keys outside the contract are ignored.
    fields = pa.Table.from_struct_array(pa.array(objects, type=_WIRE_FIELDS))
    indices = pa.array(rows, pa.int64())
    columns = {name: fields.column(name) for name in fields.column_names}
    columns["occurred_at"] = pa.array(micros, pa.int64()).cast(_OCCURRED_AT.type)
    columns["kafka_topic"] = messages.column("topic").take(indices)
    columns["kafka_partition"] = messages.column("partition").take(indices)
    columns["kafka_offset"] = messages.column("offset").take(indices)
    return pa.Table.from_arrays(
        [columns[f.name] for f in DECODED_LEDGER_EVENT], schema=DECODED_LEDGER_EVENT
    )


def dead_letter_table(
    messages: pa.Table, rows: list[int], problems: list[Invalid], job: str
) -> pa.Table:
    """``DEAD_LETTER_V1`` rows for the messages at ``rows``, each with its problem."""
    n = len(rows)
    indices = pa.array(rows, pa.int64())
    now = int(time.time() * 1_000_000)
    return pa.Table.from_arrays(
        [
            pa.array([p.reason.value for p in problems], pa.string()),
            pa.array([p.detail for p in problems], pa.string()),
            messages.column("topic").take(indices),
            messages.column("partition").take(indices),
            messages.column("offset").take(indices),
            messages.column("timestamp").take(indices),
            messages.column("key").take(indices),
            messages.column("value").take(indices),
            pa.array([job] * n, pa.string()),
            pa.array([now] * n, pa.int64()).cast(DEAD_LETTER_V1.field("dead_lettered_at").type),
        ],
        schema=DEAD_LETTER_V1,
    )


class _DecodeLedgerFn(beam.DoFn):
    def __init__(self, job: str, max_payload_bytes: int, field_map: LedgerFieldMap):
        self._job = job
        self._max_payload = max_payload_bytes
        self._field_map = field_map
        self.messages_in = Metrics.counter(NAMESPACE, "messages_in")
        self.events_out = Metrics.counter(NAMESPACE, "events_out")
        self.dead_lettered = Metrics.counter(NAMESPACE, "dead_letters")
        self._by_reason = {r: Metrics.counter(NAMESPACE, f"dead_letters.{r.value}") for r in Reason}

    def process(self, messages: pa.Table):
        decoded = decode_ledger_batch(
            messages, job=self._job, max_payload_bytes=self._max_payload, field_map=self._field_map
        )
        self.messages_in.inc(messages.num_rows)
        self.events_out.inc(decoded.events.num_rows)
        self.dead_lettered.inc(decoded.dead_letters.num_rows)
        if decoded.dead_letters.num_rows:
            for reason in decoded.dead_letters.column("reason").to_pylist():
                self._by_reason[Reason(reason)].inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, decoded.dead_letters)
        if decoded.events.num_rows:
            yield decoded.events


class DecodeLedgerEvents(beam.PTransform):
    """``KAFKA_MESSAGE`` batches in; ``DecodedBatch(events, dead_letters)`` PCollections out.

    ``events`` are ``DECODED_LEDGER_EVENT`` tables (ledger event v1 plus provenance);
    ``dead_letters`` are ``DEAD_LETTER_V1`` tables carrying the original bytes, coordinates
    and reason. Every message lands in exactly one of the two. ``field_map`` maps events of
    another shape onto v1 first (:mod:`transforms.ledger_mapping`).
    """

    def __init__(
        self,
        *,
        job: str,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        field_map: LedgerFieldMap = _NO_MAPPING,
    ):
        super().__init__()
        self._fn = _DecodeLedgerFn(job, max_payload_bytes, field_map)

    def expand(self, messages):
        outputs = messages | "ValidateAndDecode" >> beam.ParDo(self._fn).with_outputs(
            DEAD_LETTERS, main="events"
        )
        return DecodedBatch(outputs.events, outputs[DEAD_LETTERS])
