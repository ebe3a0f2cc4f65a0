"""The Snowflake warehouse (``snowflake://account/database/schema``).

A load stages each table's rows first, outside any transaction: its Parquet files are PUT on
a temporary stage and COPY'd into a temporary raw table (``snowflake_staging``). Then, in one
``BEGIN ... COMMIT``, every table gets a DELETE of the keys the load brings and an INSERT of
one row per key: all tables' rows become visible together, or (ROLLBACK) none do.

DELETE + INSERT rather than MERGE: inside one transaction both are the same upsert (dbt's
``delete+insert`` strategy on Snowflake), but fakesnow 0.12, the test double, runs a MERGE
through a temporary table of its own: inside BEGIN that fails, and with autocommit off it
commits the tables merged so far, so a MERGE-based load could not be tested for atomicity.
Tables are created or widened before the transaction, because Snowflake commits around every
DDL statement; empty tables and new nullable columns change no row.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import snowflake.connector
from snowflake.connector import SnowflakeConnection
from snowflake.connector.constants import FIELD_ID_TO_NAME
from snowflake.connector.errors import Error as ConnectorError

from schemas.tables import TableDef
from transforms.warehouse.base import (
    IncompatibleSchema,
    Rows,
    Warehouse,
    WarehouseError,
    redact,
    refuse_breaking_changes,
)
from transforms.warehouse.snowflake_config import scrub, settings_from_url
from transforms.warehouse.snowflake_schema import (
    ExistingColumn,
    add_column_sql,
    create_table_sql,
    normalize_result,
    snowflake_type,
)
from transforms.warehouse.snowflake_staging import (
    copy_sql,
    create_raw_sql,
    delete_sql,
    insert_sql,
    put_sql,
    write_stage_files,
)

STAGE = "PAYRECON_LOAD"
# TIMESTAMP_TZ values are written in UTC (see snowflake_schema); QUERY_TAG finds our queries.
SESSION_PARAMETERS = {"TIMEZONE": "UTC", "QUERY_TAG": "payrecon"}


class SnowflakeWarehouse(Warehouse):
    """One Snowflake schema. Loads upsert on primary keys, all tables in one transaction.

    ``connection``'s session must use ``TIMEZONE = 'UTC'`` (``connect`` and ``from_url`` set
    it); the sink closes the connection only when it opened it.
    """

    def __init__(
        self, connection: SnowflakeConnection, *, label: str = "Snowflake", owns: bool = False
    ):
        self._con = connection
        self.label = label
        self._owns = owns
        self._stage_ready = False

    @classmethod
    def connect(cls, *, label: str | None = None, **connect_kwargs: Any) -> SnowflakeWarehouse:
        """Opens a connection with ``snowflake.connector.connect(**connect_kwargs)``."""
        if label is None:
            place = (connect_kwargs.get(k) for k in ("account", "database", "schema"))
            label = "snowflake://" + "/".join(p or "?" for p in place)
        session = {**connect_kwargs.pop("session_parameters", {}), **SESSION_PARAMETERS}
        try:
            con = snowflake.connector.connect(**connect_kwargs, session_parameters=session)
        except ConnectorError as exc:
            # from None: the connector's own error could carry what we were given.
            message = scrub(str(exc), connect_kwargs)
            raise WarehouseError(f"cannot connect to {label}: {message}") from None
        return cls(con, label=label, owns=True)

    @classmethod
    def from_url(cls, url: str) -> SnowflakeWarehouse:
        """Settings from the URL and the environment (see ``snowflake_config``)."""
        settings = settings_from_url(url, os.environ)
        return cls.connect(label=redact(url), **settings.connect_kwargs())

    def _run(self, sql: str, what: str, params: tuple[Any, ...] | None = None) -> list[tuple]:
        """Executes one statement; a connector error becomes a WarehouseError saying ``what``."""
        try:
            with self._con.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
        except ConnectorError as exc:
            raise WarehouseError(f"{what} failed: {exc}") from exc

    def _columns(self, name: str) -> dict[str, ExistingColumn]:
        rows = self._run(
            "SELECT column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns "
            "WHERE table_schema = CURRENT_SCHEMA() AND table_name = %s "
            "ORDER BY ordinal_position",
            f"reading the columns of {name} in {self.label}",
            (name.upper(),),
        )
        return {row[0].upper(): ExistingColumn(*row) for row in rows}

    def ensure(self, table: TableDef) -> None:
        existing = self._columns(table.name)
        where = f"table {table.name} in {self.label}"
        if not existing:
            self._run(create_table_sql(table), f"creating {where}")
            return
        wanted = {f.name.upper(): f for f in table.schema}
        changed = [
            f.name
            for key, f in wanted.items()
            if key in existing and not existing[key].same_type(snowflake_type(f.type))
        ]
        dropped = [name.lower() for name in existing if name not in wanted]
        refuse_breaking_changes(where, changed, dropped)
        for key, f in wanted.items():
            if key not in existing:
                for sql in add_column_sql(table, f):
                    self._run(sql, f"adding column {f.name} to {where}")

    def load(self, batches: Mapping[TableDef, Rows]) -> None:
        try:
            for table in batches:
                self.ensure(table)
            with self._staged(batches) as raws:
                self._upsert(raws)
        except IncompatibleSchema:
            raise
        except WarehouseError as exc:
            raise WarehouseError(
                f"loading into {self.label} failed, nothing written: {exc}"
            ) from exc

    @contextlib.contextmanager
    def _staged(self, batches: Mapping[TableDef, Rows]) -> Iterator[dict[TableDef, str]]:
        """Each table's rows in a temporary raw table (tables without rows are left out)."""
        load_id = uuid.uuid4().hex[:16]
        raws: dict[TableDef, str] = {}
        try:
            with tempfile.TemporaryDirectory(prefix="payrecon-snowflake-") as tmp:
                for table, rows in batches.items():
                    directory = Path(tmp) / table.name
                    directory.mkdir()
                    if self._write_files(table, rows, directory):
                        raws[table] = f"PAYRECON_RAW_{table.name}_{load_id}".upper()
                        self._stage(table, directory, raws[table], load_id)
            yield raws
        finally:
            for raw in raws.values():
                with contextlib.suppress(WarehouseError):  # temporary: gone with the session
                    self._run(f"DROP TABLE IF EXISTS {raw}", f"dropping {raw}")

    def _write_files(self, table: TableDef, rows: Rows, directory: Path) -> int:
        try:
            return write_stage_files(rows, table, directory)
        except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
            raise WarehouseError(f"staging the rows of {table.name} failed: {exc}") from exc

    def _stage(self, table: TableDef, directory: Path, raw: str, load_id: str) -> None:
        if not self._stage_ready:
            self._run(f"CREATE TEMPORARY STAGE IF NOT EXISTS {STAGE}", "creating the stage")
            self._stage_ready = True
        location = f"@{STAGE}/{load_id}/{table.name}"
        what = f"staging the rows of {table.name}"
        self._run(create_raw_sql(raw, table.schema), what)
        self._run(put_sql(directory, location), f"{what} (PUT)")
        self._run(copy_sql(raw, table.schema, location + "/"), f"{what} (COPY)")

    def _upsert(self, raws: Mapping[TableDef, str]) -> None:
        if not raws:
            return
        self._run("BEGIN", "starting the load's transaction")
        try:
            for table, raw in raws.items():
                self._run(delete_sql(table, raw), f"replacing the rows of {table.name}")
                self._run(insert_sql(table, raw), f"inserting the rows of {table.name}")
            self._run("COMMIT", "committing the load")
        except BaseException:
            with contextlib.suppress(WarehouseError):  # a lost session rolls back by itself
                self._run("ROLLBACK", "rolling back the load")
            raise

    def has_table(self, name: str) -> bool:
        rows = self._run(
            "SELECT COUNT(*) FROM information_schema.tables "
            "WHERE table_schema = CURRENT_SCHEMA() AND table_name = %s",
            f"looking for table {name} in {self.label}",
            (name.upper(),),
        )
        return bool(rows and rows[0][0])

    def query_arrow(self, sql: str) -> pa.Table:
        """Runs ``sql``; results as the DuckDB sink types them (``normalize_result``)."""
        try:
            with self._con.cursor() as cursor:
                cursor.execute(sql)
                table = cursor.fetch_arrow_all(
                    force_return_table=True, force_microsecond_precision=True
                )
                kinds = [FIELD_ID_TO_NAME[c.type_code] for c in cursor.description]
        except ConnectorError as exc:
            raise WarehouseError(f"query on {self.label} failed: {exc}") from exc
        return normalize_result(table, kinds)

    def close(self) -> None:
        if self._owns:
            with contextlib.suppress(ConnectorError):
                self._con.close()
