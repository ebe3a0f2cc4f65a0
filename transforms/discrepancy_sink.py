"""Discrepancies to Kafka: one message per finding on ``recon.discrepancies``.

Key = the deterministic ``discrepancy_id``, value = the DISCREPANCY_V1 row as a JSON object
(times in RFC 3339 UTC), so a rerun of the same window produces the same keys and a
compacted topic keeps one message per discrepancy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa

from transforms.kafka import KafkaRecord


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(value).__name__}")


def discrepancy_records(discrepancies: pa.Table) -> Iterator[KafkaRecord]:
    """One keyed record per DISCREPANCY_V1 row, timestamped with its detection time."""
    for row in discrepancies.to_pylist():
        value = json.dumps(row, default=_json_default, sort_keys=True).encode()
        yield KafkaRecord(
            value=value,
            key=row["discrepancy_id"].encode(),
            timestamp_ms=int(row["detected_at"].timestamp() * 1000),
        )
