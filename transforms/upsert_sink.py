"""A streaming warehouse sink: rows upserted into one table as they come, a load at a time.

Bounded jobs stage their rows and load them once, after the pipeline, in one transaction
(``transforms.staging``). A streaming job never ends, so its sinks write as they go: every
bundle's rows (or an interval's: ``every_s``) are upserted on the table's primary key
through the project's ``Warehouse`` (DuckDB, BigQuery, Snowflake), all of them in one load.
A bundle the runner retries writes the same keys again, so rows whose key is deterministic
(a window pane's counts) are effectively written once. A load that fails fails the bundle,
which the runner retries.
"""

from __future__ import annotations

from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.trigger import AccumulationMode, AfterProcessingTime, AfterWatermark
from apache_beam.transforms.window import GlobalWindows

from schemas.tables import TableDef
from transforms.arrow_coder import ArrowTableCoder  # noqa: F401 (registers the pa.Table coder)
from transforms.warehouse import open_warehouse

NAMESPACE = "payrecon.warehouse"


class _UpsertFn(beam.DoFn):
    def __init__(self, url: str, table: TableDef, loaded_at: str | None):
        self._url = url
        self._table = table
        self._loaded_at = loaded_at
        self._tables: list[pa.Table] = []
        self.rows = Metrics.counter(NAMESPACE, f"{table.name}_rows_upserted")

    def start_bundle(self):
        self._tables = []

    def process(self, table: pa.Table):
        if table.num_rows:
            self._tables.append(table.select(self._table.schema.names))

    def finish_bundle(self):
        if not self._tables:
            return
        rows = pa.concat_tables(self._tables).cast(self._table.schema)
        if self._loaded_at is not None:
            now = pa.array(
                [datetime.now(UTC)] * rows.num_rows, rows.schema.field(self._loaded_at).type
            )
            rows = rows.set_column(
                rows.schema.get_field_index(self._loaded_at), self._loaded_at, now
            )
        with open_warehouse(self._url) as warehouse:
            warehouse.load({self._table: rows})
        self.rows.inc(rows.num_rows)
        self._tables = []


class UpsertToWarehouse(beam.PTransform):
    """``pyarrow.Table`` elements with ``table``'s columns in; each bundle's rows upserted
    into ``table`` at the warehouse ``url`` in one load. ``loaded_at`` names a timestamp
    column set to the time of the load, so a later reader can find what changed since it
    last looked.

    With ``every_s`` (streaming), rows are first gathered for ``every_s`` seconds of
    processing time, and whatever is left when the input ends (a drained job), so the
    warehouse sees one load per interval instead of one per bundle (BigQuery and Snowflake
    run a MERGE or DELETE + INSERT per load)."""

    def __init__(
        self,
        url: str,
        table: TableDef,
        *,
        loaded_at: str | None = None,
        every_s: int | None = None,
    ):
        super().__init__()
        if loaded_at is not None and loaded_at not in table.schema.names:
            raise ValueError(f"{table.name} has no column {loaded_at}")
        self._fn = _UpsertFn(url, table, loaded_at)
        self._every_s = every_s
        self._key = table.name

    def expand(self, tables):
        if self._every_s is not None:
            tables = (
                tables
                | "KeyedByTable"
                >> beam.Map(lambda t, key: (key, t), self._key).with_output_types(
                    tuple[str, pa.Table]
                )
                | "EveryInterval"
                >> beam.WindowInto(
                    GlobalWindows(),
                    trigger=AfterWatermark(early=AfterProcessingTime(self._every_s)),
                    accumulation_mode=AccumulationMode.DISCARDING,
                )
                | "Gather" >> beam.GroupByKey()
                | "Tables" >> beam.FlatMap(lambda kv: kv[1]).with_output_types(pa.Table)
            )
        return tables | "UpsertBundle" >> beam.ParDo(self._fn).with_input_types(pa.Table)
