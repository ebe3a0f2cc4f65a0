"""Staging a run's outputs as Parquet files before one atomic warehouse load.

The Beam pipeline writes every table it produces into ``<staging>/<table>/``; only after the
whole pipeline succeeded does the job load those files into the warehouse in one transaction
and then commit its Kafka offsets. Files are named by a hash of their content, so a bundle
that Beam retries rewrites the same file instead of adding a copy: aggregate rows (counts,
totals) are never counted twice, and keyed rows are deduplicated again by the upsert.
Works with any Beam filesystem (local paths, ``gs://``), so the same job runs on Dataflow.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems


class StagingUnwritable(RuntimeError):
    """A staged file could not be written (a full disk, a read-only or missing folder): the
    job ends as for any unavailable dependency (exit code 3), nothing loaded or committed."""


def content_name(table: pa.Table) -> str:
    """A file name derived from the rows themselves (Arrow IPC bytes), stable across runs."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:32] + ".parquet"


def table_dir(staging_root: str, table_name: str) -> str:
    return FileSystems.join(staging_root, table_name)


class _StageFn(beam.DoFn):
    def __init__(self, directory: str, schema: pa.Schema | None):
        self._directory = directory
        self._schema = schema

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        if self._schema is not None:
            table = table.select(self._schema.names).cast(self._schema)
        path = FileSystems.join(self._directory, content_name(table))
        try:
            with FileSystems.create(path) as out:
                pq.write_table(table, out)
        except OSError as exc:
            raise StagingUnwritable(f"cannot write the staging file {path}: {exc}") from exc
        yield path


class StageTables(beam.PTransform):
    """Writes ``pyarrow.Table`` elements to ``<staging_root>/<table_name>/`` as Parquet.

    With ``schema``, each batch is projected and cast to it first (the warehouse table's
    columns). Output: the paths written.
    """

    def __init__(self, staging_root: str, table_name: str, schema: pa.Schema | None = None):
        super().__init__()
        self._fn = _StageFn(table_dir(staging_root, table_name), schema)

    def expand(self, tables):
        return tables | "WriteParquet" >> beam.ParDo(self._fn)


def staged_files(staging_root: str, table_name: str) -> list[str]:
    """Every staged file of one table (empty when the pipeline produced no rows)."""
    pattern = FileSystems.join(table_dir(staging_root, table_name), "*.parquet")
    matches = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in matches)


def read_staged(staging_root: str, table_name: str, schema: pa.Schema) -> pa.Table:
    """One table's staged rows (for the small tables the launcher summarises)."""
    tables = []
    for path in staged_files(staging_root, table_name):
        with FileSystems.open(path) as f:
            tables.append(pq.read_table(f).cast(schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()
