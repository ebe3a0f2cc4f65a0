"""The embedded DuckDB warehouse (``duckdb:///path.duckdb``), the local default."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import duckdb
import pyarrow as pa

from schemas.fields import doc_of
from schemas.tables import TableDef
from transforms.warehouse.base import (
    IncompatibleSchema,
    ParquetFiles,
    Rows,
    Warehouse,
    WarehouseError,
    refuse_breaking_changes,
)
from transforms.warehouse.ddl import duckdb_type


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# DuckDB's own default is 80% of the machine's memory. Loads are scans of staged Parquet
# and hash joins on keys, which spill to disk beyond the limit: a 1M-event day loads in about
# the same time under 1 GiB and the job's peak memory stays bounded (bench/reconcile.py).
DEFAULT_MEMORY_LIMIT = "1GB"


class DuckDBWarehouse(Warehouse):
    """One DuckDB file. Loads run in one transaction and upsert on primary keys.

    ``memory_limit`` caps DuckDB's memory (``duckdb:///w.duckdb?memory_limit=4GB``);
    intermediate results beyond it spill to a temporary directory next to the file.
    """

    def __init__(self, path: Path | str, *, memory_limit: str = DEFAULT_MEMORY_LIMIT):
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(self.path)
        except (OSError, duckdb.Error) as exc:
            raise WarehouseError(f"cannot open DuckDB file {self.path}: {exc}") from exc
        self._con.execute("SET TimeZone = 'UTC'")
        try:
            self._con.execute("SET memory_limit = ?", [memory_limit])
        except duckdb.Error as exc:
            raise ValueError(f"--warehouse option memory_limit={memory_limit!r}: {exc}") from None
        # Upserts need no row order, and keeping it costs memory on large inserts.
        self._con.execute("SET preserve_insertion_order = false")

    @classmethod
    def from_url(cls, url: str) -> DuckDBWarehouse:
        parts = urlparse(url)
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ValueError(f"--warehouse {url!r}: expected duckdb:///path/to/file.duckdb")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - {"memory_limit"})
        if unknown:
            raise ValueError(
                f"--warehouse {url!r}: unknown option(s) {', '.join(unknown)}; "
                "allowed: memory_limit (e.g. ?memory_limit=4GB)"
            )
        return cls(path, memory_limit=options.get("memory_limit", DEFAULT_MEMORY_LIMIT))

    def _columns(self, name: str) -> dict[str, str]:
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [name],
        ).fetchall()
        return {c: t for c, t in rows}

    def ensure(self, table: TableDef) -> None:
        existing = self._columns(table.name)
        wanted = {f.name: duckdb_type(f.type) for f in table.schema}
        if not existing:
            # The key is kept by the loads (one row per key, existing keys replaced), not by a
            # PRIMARY KEY: DuckDB backs one with an index that must fit in memory, and a
            # 10M-event day's keys did not fit the 1 GiB limit (bench/load.py); without it
            # the same load spills and runs 3x faster. Key columns stay NOT NULL.
            keys = set(table.primary_key)
            cols = [f"{_quote(n)} {t}{' NOT NULL' if n in keys else ''}" for n, t in wanted.items()]
            self._con.execute(f"CREATE TABLE {_quote(table.name)} ({', '.join(cols)})")
            for f in table.schema:
                if doc_of(f):
                    self._con.execute(
                        f"COMMENT ON COLUMN {_quote(table.name)}.{_quote(f.name)} IS "
                        + "'"
                        + doc_of(f).replace("'", "''")
                        + "'"
                    )
            return
        changed = [
            n for n, t in wanted.items() if n in existing and existing[n] != self._canonical(t)
        ]
        dropped = [n for n in existing if n not in wanted]
        refuse_breaking_changes(f"table {table.name} in {self.path}", changed, dropped)
        for name, type_ in wanted.items():
            if name not in existing:
                self._con.execute(
                    f"ALTER TABLE {_quote(table.name)} ADD COLUMN {_quote(name)} {type_}"
                )

    def _canonical(self, type_: str) -> str:
        """DuckDB's own spelling of a type (TIMESTAMPTZ is TIMESTAMP WITH TIME ZONE ...)."""
        rows = self._con.execute(f"SELECT typeof(CAST(NULL AS {type_}))").fetchall()
        return str(rows[0][0]) if rows else type_

    def load(self, batches: Mapping[TableDef, Rows]) -> None:
        self._con.execute("BEGIN TRANSACTION")
        try:
            # Tables are created (or widened) inside the transaction too: a crash mid-load
            # leaves neither rows nor half the tables.
            for table in batches:
                self.ensure(table)
            for table, rows in batches.items():
                self._upsert(table, rows)
            self._con.execute("COMMIT")
        except IncompatibleSchema:
            self._rollback()
            raise
        except (duckdb.Error, pa.ArrowException, ValueError) as exc:
            self._rollback()
            raise WarehouseError(
                f"loading into {self.path} failed, nothing written: {exc}"
            ) from exc

    def _rollback(self) -> None:
        # A COMMIT that failed (a full disk) has ended the transaction already, and a
        # ROLLBACK would then raise, hiding the load's own error.
        with contextlib.suppress(duckdb.TransactionException):
            self._con.execute("ROLLBACK")

    def _upsert(self, table: TableDef, rows: Rows) -> None:
        if isinstance(rows, ParquetFiles):
            if not rows.paths:
                return
            files = ", ".join("'" + p.replace("'", "''") + "'" for p in rows.paths)
            self._insert_or_replace(table, f"read_parquet([{files}], union_by_name = true)")
            return
        if rows.num_rows == 0:
            return
        rows = rows.select(table.schema.names).cast(table.schema)
        view = f"stage_{uuid.uuid4().hex}"
        self._con.register(view, rows)
        try:
            self._insert_or_replace(table, view)
        finally:
            self._con.unregister(view)

    def _insert_or_replace(self, table: TableDef, source: str) -> None:
        cols = ", ".join(map(_quote, table.schema.names))
        # Within one load a key may repeat (at-least-once input): keep one row per key.
        keys = ", ".join(map(_quote, table.primary_key))
        stage = f"stage_{uuid.uuid4().hex}"
        target = _quote(table.name)
        same_key = " AND ".join(
            f"{target}.{_quote(k)} = {stage}.{_quote(k)}" for k in table.primary_key
        )
        # DELETE + INSERT rather than INSERT OR REPLACE: replacing existing keys one by one
        # took 107 s for 1M rows that DELETE + INSERT load in 16 s (a rerun of a window).
        self._con.execute(
            f"CREATE TEMP TABLE {stage} AS SELECT {cols} FROM {source} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys}) = 1"
        )
        try:
            self._con.execute(f"DELETE FROM {target} USING {stage} WHERE {same_key}")
            self._con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")
        finally:
            self._con.execute(f"DROP TABLE {stage}")

    def has_table(self, name: str) -> bool:
        return bool(self._columns(name))

    def query_arrow(self, sql: str) -> pa.Table:
        return self._con.sql(sql).to_arrow_table()

    def close(self) -> None:
        self._con.close()
