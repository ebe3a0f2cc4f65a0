"""Dead letters: messages a job could not process, kept whole for audit and replay.

On the wire a dead letter is the original message, value and key byte for byte, sent to
``<source topic>.dlq`` with its provenance and a machine-readable reason in headers (the
convention Kafka Connect's ``errors.deadletterqueue.context.headers.enable`` follows), so
``payrecon dlq replay`` can put it back on its topic unchanged. In Beam it travels as a
row of ``DEAD_LETTER_V1``.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    # payrecon gateway: a request id that is not a UUID (its idempotency key derives from
    # it), a gateway no consumer runs, a request the gateway refuses for good (a 4xx other
    # than 429 that is not a card decline: unknown payment method, idempotency conflict).
    BAD_UUID = "bad_uuid"
    UNKNOWN_GATEWAY = "unknown_gateway"
    GATEWAY_REJECTED = "gateway_rejected"
    # payrecon webhooks consume: a Stripe event it has no mapping for, or whose object does
    # not name its order (metadata.order_id).
    UNHANDLED_EVENT_TYPE = "unhandled_event_type"
    MISSING_ORDER_ID = "missing_order_id"


# The reasons the ledger decoder gives (the generator injects one malformed line of each).
DECODE_REASONS = frozenset(
    {
        Reason.PAYLOAD_TOO_LARGE,
        Reason.NOT_JSON,
        Reason.NOT_AN_OBJECT,
        Reason.MISSING_FIELD,
        Reason.WRONG_TYPE,
        Reason.EMPTY_FIELD,
        Reason.UNKNOWN_CURRENCY,
        Reason.NEGATIVE_AMOUNT,
        Reason.NON_INTEGER_AMOUNT,
        Reason.AMOUNT_OUT_OF_RANGE,
        Reason.BAD_TIMESTAMP,
        Reason.BAD_COUNTRY,
    }
)


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


def dead_letter_headers(
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    job: str,
    dead_lettered_at: datetime,
    timestamp_ms: int | None = None,
) -> list[tuple[str, bytes]]:
    """The Kafka headers of a dead letter, in the order every payrecon job writes them."""
    headers = [
        (HEADER_PREFIX + "reason", reason.encode()),
        (HEADER_PREFIX + "detail", detail.encode()),
        (HEADER_PREFIX + "topic", topic.encode()),
        (HEADER_PREFIX + "partition", str(partition).encode()),
        (HEADER_PREFIX + "offset", str(offset).encode()),
        (HEADER_PREFIX + "job", job.encode()),
        (HEADER_PREFIX + "dead_lettered_at", dead_lettered_at.astimezone(UTC).isoformat().encode()),
    ]
    if timestamp_ms is not None:
        headers.append((HEADER_PREFIX + "timestamp", str(timestamp_ms).encode()))
    return headers
