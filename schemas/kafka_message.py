"""Raw Kafka messages as Arrow: what the bounded Kafka read emits, before decoding.

Keeping topic/partition/offset beside each message lets provenance survive to the
decoded row and to the dead letter.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MILLIS, field, versioned

KAFKA_MESSAGE = versioned(
    "kafka_message",
    1,
    [
        field("topic", pa.string(), "Topic the message was read from."),
        field("partition", pa.int32(), "Partition."),
        field("offset", pa.int64(), "Offset within the partition."),
        field(
            "timestamp",
            UTC_MILLIS,
            "The message timestamp (CreateTime or LogAppendTime).",
            nullable=True,
        ),
        field("key", pa.binary(), "Key bytes.", nullable=True),
        field("value", pa.binary(), "Value bytes.", nullable=True),
    ],
    doc="A Kafka message with its coordinates.",
)

# Provenance columns appended to every decoded row.
PROVENANCE = pa.schema(
    [
        field("kafka_topic", pa.string(), "Topic the row was read from."),
        field("kafka_partition", pa.int32(), "Partition the row was read from."),
        field("kafka_offset", pa.int64(), "Offset the row was read from."),
    ]
)


def with_provenance(schema: pa.Schema) -> pa.Schema:
    """``schema`` plus the Kafka provenance columns, keeping the schema's metadata."""
    return pa.schema(list(schema) + list(PROVENANCE), metadata=schema.metadata)
