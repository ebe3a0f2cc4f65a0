"""The sink interface every warehouse implements, and URL dispatch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import NamedTuple, TypeAlias
from urllib.parse import urlparse

import pyarrow as pa

from schemas.tables import TableDef


class WarehouseError(RuntimeError):
    """The warehouse refused a load or could not be reached (exit code 3)."""


class IncompatibleSchema(WarehouseError):
    """An existing table cannot take the new schema without breaking it (exit code 2)."""


def refuse_breaking_changes(where: str, changed: list[str], dropped: list[str]) -> None:
    """Raise ``IncompatibleSchema`` when a table's columns changed type or were dropped:
    every warehouse migrates only additive changes (new nullable columns)."""
    if changed or dropped:
        raise IncompatibleSchema(
            f"{where} has an incompatible schema: changed types {changed}, columns no longer "
            f"in the schema {dropped}; payrecon only migrates additive changes (new nullable "
            "columns)"
        )


class ParquetFiles(NamedTuple):
    """Rows staged as Parquet files: warehouses load these natively (a DuckDB scan, a
    BigQuery load job, a Snowflake PUT + COPY) without passing through Python."""

    paths: tuple[str, ...]


Rows: TypeAlias = pa.Table | ParquetFiles


class Warehouse(ABC):
    """Loads Arrow tables into warehouse tables, atomically, by upsert on primary keys."""

    @abstractmethod
    def ensure(self, table: TableDef) -> None:
        """Create the table, or add the columns the schema gained; refuse breaking changes."""

    @abstractmethod
    def load(self, batches: Mapping[TableDef, Rows]) -> None:
        """Upsert every table's rows in one transaction: all are visible, or none."""

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """True when the table exists (a first run finds none)."""

    @abstractmethod
    def query_arrow(self, sql: str) -> pa.Table:
        """Run a read-only query (for reports and tests)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def redact(url: str) -> str:
    """The URL without credentials, for logs and messages."""
    parts = urlparse(url)
    if parts.password or parts.username:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return parts.geturl()


def open_warehouse(url: str) -> Warehouse:
    """The warehouse for ``url``; raises ValueError naming what is allowed."""
    scheme = urlparse(url).scheme
    if scheme == "duckdb":
        from transforms.warehouse.duckdb_sink import DuckDBWarehouse

        return DuckDBWarehouse.from_url(url)
    if scheme == "bigquery":
        from transforms.warehouse.bigquery_sink import BigQueryWarehouse

        return BigQueryWarehouse.from_url(url)
    if scheme == "snowflake":
        from transforms.warehouse.snowflake_sink import SnowflakeWarehouse

        return SnowflakeWarehouse.from_url(url)
    raise ValueError(
        f"--warehouse {redact(url)!r}: expected duckdb:///path.duckdb, "
        "bigquery://project/dataset or snowflake://account/db/schema"
    )
