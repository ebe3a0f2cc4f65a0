"""Dead letters to Kafka: each bad message goes, byte for byte, to ``<topic>.dlq``.

The value and key are the original bytes; the reason and coordinates travel in headers,
so ``payrecon dlq`` can list them by reason and replay one to its source topic unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa

from schemas.dead_letter import dead_letter_headers, dlq_topic
from transforms.kafka import KafkaRecord, WriteToKafka


def dead_letter_records(dead_letters: pa.Table) -> Iterator[KafkaRecord]:
    """One ``KafkaRecord`` per ``DEAD_LETTER_V1`` row, for the row's ``.dlq`` topic."""
    for row in dead_letters.to_pylist():
        stamp = row["timestamp"]
        timestamp_ms = None if stamp is None else int(stamp.timestamp() * 1000)
        headers = dead_letter_headers(
            reason=row["reason"],
            detail=row["detail"],
            topic=row["topic"],
            partition=row["partition"],
            offset=row["offset"],
            job=row["job"],
            dead_lettered_at=row["dead_lettered_at"],
            timestamp_ms=timestamp_ms,
        )
        yield KafkaRecord(
            value=row["value"],
            key=row["key"],
            topic=dlq_topic(row["topic"]),
            headers=headers,
            timestamp_ms=timestamp_ms,
        )


class WriteDeadLetters(beam.PTransform):
    """``DEAD_LETTER_V1`` tables in; each row produced to its source topic's ``.dlq``."""

    def __init__(self, bootstrap_servers: str, **producer_options):
        super().__init__()
        self._bootstrap = bootstrap_servers
        self._options = producer_options

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToDeadLetterRecords" >> beam.FlatMap(dead_letter_records)
            | "ProduceDeadLetters" >> WriteToKafka(self._bootstrap, **self._options)
        )
