"""The unbounded Kafka read of streaming jobs, and its records as the bounded read's batches.

On Dataflow and Flink the standard Kafka source is Beam's cross-language KafkaIO
(``apache_beam.io.kafka.ReadFromKafka``). With ``with_metadata=True`` it emits one schema'd
row per message (Java's ``KafkaIO.ByteArrayKafkaRecord``): topic, partition, offset, the
message timestamp in epoch milliseconds with its type, key and value bytes, and headers.
:class:`KafkaRowsToMessages` turns those rows into exactly what ``ReadKafkaRanges`` emits in
the bounded jobs, ``KAFKA_MESSAGE`` Arrow tables of one topic partition each, so everything
after the read is shared by both modes. Headers are dropped, as the bounded read drops them:
no payrecon decoder reads them.

:func:`read_from_kafka` is the only place that expands KafkaIO: the expansion needs a Java
expansion service (a jar from Maven Central, started by Beam), which a machine without that
access cannot run; everything after it is tested with rows of the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas.kafka_message import KAFKA_MESSAGE
from transforms.arrow_coder import ArrowTableCoder  # noqa: F401 (registers the pa.Table coder)

NAMESPACE = "payrecon.kafka"
NO_TIMESTAMP_TYPE = -1  # Kafka's TimestampType.NO_TIMESTAMP_TYPE id: no timestamp


class KafkaReadRow(NamedTuple):
    """One message as ``ReadFromKafka(with_metadata=True)`` emits it (field names are
    Java's; the read's elements are rows with these attributes)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch milliseconds; meaningless when timestampTypeId is -1
    key: bytes | None
    value: bytes | None
    headers: list | None = None
    timestampTypeId: int = 0  # -1 none, 0 CreateTime, 1 LogAppendTime
    timestampTypeName: str = "CreateTime"


def messages_table(rows: Sequence[Any]) -> pa.Table:
    """A ``KAFKA_MESSAGE`` table of rows of one topic partition, in offset order."""
    rows = sorted(rows, key=lambda r: r.offset)
    stamps = [None if r.timestampTypeId == NO_TIMESTAMP_TYPE else r.timestamp for r in rows]
    return pa.Table.from_arrays(
        [
            pa.array([r.topic for r in rows], pa.string()),
            pa.array([r.partition for r in rows], pa.int32()),
            pa.array([r.offset for r in rows], pa.int64()),
            pa.array(stamps, pa.int64()).cast(KAFKA_MESSAGE.field("timestamp").type),
            pa.array([r.key for r in rows], pa.binary()),
            pa.array([r.value for r in rows], pa.binary()),
        ],
        schema=KAFKA_MESSAGE,
    )


class _BatchRowsFn(beam.DoFn):
    """Collects a bundle's rows per topic partition; emits a table per partition when it
    holds ``max_rows`` and at the end of the bundle, stamped with the earliest element
    timestamp it holds (never later than the elements it came from)."""

    def __init__(self, max_rows: int):
        self._max_rows = max_rows
        self._buffers: dict[tuple[str, int], list] = {}
        self._earliest: dict[tuple[str, int], Timestamp] = {}
        self.read = Metrics.counter(NAMESPACE, "messages_read")

    def start_bundle(self):
        self._buffers, self._earliest = {}, {}

    def process(self, row, timestamp=beam.DoFn.TimestampParam) -> Iterator:
        where = (row.topic, row.partition)
        self._buffers.setdefault(where, []).append(row)
        self._earliest[where] = min(self._earliest.get(where, timestamp), timestamp)
        if len(self._buffers[where]) >= self._max_rows:
            yield TimestampedValue(*self._flush(where))

    def finish_bundle(self) -> Iterable[WindowedValue]:
        for where in list(self._buffers):
            table, stamp = self._flush(where)
            yield WindowedValue(table, stamp, (GlobalWindow(),))

    def _flush(self, where: tuple[str, int]) -> tuple[pa.Table, Timestamp]:
        rows = self._buffers.pop(where)
        self.read.inc(len(rows))
        return messages_table(rows), self._earliest.pop(where)


class KafkaRowsToMessages(beam.PTransform):
    """``ReadFromKafka`` rows with metadata in (global window); ``KAFKA_MESSAGE`` tables out,
    one per topic partition per bundle (at most ``max_rows`` messages each), as the bounded
    read emits them. Every row is in exactly one table."""

    def __init__(self, max_rows: int = 10_000):
        super().__init__()
        self._max_rows = max_rows

    def expand(self, rows):
        return rows | "BatchPerPartition" >> beam.ParDo(
            _BatchRowsFn(self._max_rows)
        ).with_output_types(pa.Table)


def read_from_kafka(
    pbegin,
    *,
    bootstrap_servers: str,
    topics: Sequence[str],
    group_id: str,
    consumer_overrides: dict[str, Any] | None = None,
):
    """``ReadFromKafka`` of ``topics`` with metadata, unbounded, from ``group_id``'s committed
    offsets (the earliest where it has none), offsets committed back as the runner finalizes
    its checkpoints; event time and watermark from the messages' CreateTime."""
    from apache_beam.io.kafka import ReadFromKafka

    config = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        **{k: str(v) for k, v in (consumer_overrides or {}).items()},
    }
    return pbegin | "ReadFromKafka" >> ReadFromKafka(
        consumer_config=config,
        topics=list(topics),
        with_metadata=True,
        commit_offset_in_finalize=True,
        timestamp_policy=ReadFromKafka.create_time_policy,
    )
