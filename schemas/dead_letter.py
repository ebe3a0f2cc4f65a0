"""Dead letters: messages a job could not process, kept whole for audit and replay.

On the wire a dead letter is the original message, value and key byte for byte, sent to
``<source topic>.dlq`` with its provenance and a machine-readable reason in headers (the
convention Kafka Connect's ``errors.deadletterqueue.context.headers.enable`` follows), so
``payrecon dlq replay`` can put it back on its topic unchanged. In Beam it travels as a
row of ``DEAD_LETTER_V1``.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

from schemas.fields import UTC_MICROS, UTC_MILLIS, field, versioned


class Reason(StrEnum):
    """Why a message was dead-lettered. Values are stable: scripts and tables use them."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_FIELD = "empty_field"
    UNKNOWN_CURRENCY = "unknown_currency"
    NEGATIVE_AMOUNT = "negative_amount"
    NON_INTEGER_AMOUNT = "non_integer_amount"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_COUNTRY = "bad_country"


DEAD_LETTER_V1 = versioned(
    "dead_letter",
    1,
    [
        field("reason", pa.string(), "Machine-readable reason.", enum=[r.value for r in Reason]),
        field("detail", pa.string(), "Human-readable detail: the field and what was wrong."),
        field("topic", pa.string(), "Source topic."),
        field("partition", pa.int32(), "Source partition."),
        field("offset", pa.int64(), "Source offset."),
        field("timestamp", UTC_MILLIS, "Source message timestamp.", nullable=True),
        field("key", pa.binary(), "Original key bytes.", nullable=True),
        field("value", pa.binary(), "Original value bytes.", nullable=True),
        field("job", pa.string(), "The job that dead-lettered it."),
        field("dead_lettered_at", UTC_MICROS, "When it was dead-lettered (UTC)."),
    ],
    doc="A message that could not be processed, with its original bytes and coordinates.",
)

# Kafka headers carried by a message on a .dlq topic.
HEADER_PREFIX = "payrecon.dlq."
HEADERS = (
    "reason",
    "detail",
    "topic",
    "partition",
    "offset",
    "timestamp",
    "job",
    "dead_lettered_at",
)


def dlq_topic(source_topic: str) -> str:
    """The dead-letter topic of ``source_topic``."""
    return f"{source_topic}.dlq"
