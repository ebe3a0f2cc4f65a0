"""The storage and SQL side of the BigQuery fake (``tests/bigquery_fake.py``): DuckDB.

Tables are DuckDB tables (one schema per dataset) typed from the BigQuery table resource.
Load jobs read the uploaded Parquet with pyarrow and append it by column name, the way a
BigQuery Parquet load does with list inference and ``ARRAY_OF_STRUCT`` maps. Query jobs run
on DuckDB after translating the only BigQuery syntax payrecon emits: backtick-quoted
``project.dataset.table`` paths and columns. A script is split into statements; when one
fails the open transaction is rolled back, as BigQuery does without an exception handler.
"""

from __future__ import annotations

import base64
import io
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

LEGACY = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}
_DUCK = {
    "STRING": "VARCHAR",
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATETIME": "TIMESTAMP",
    "DATE": "DATE",
    "BYTES": "BLOB",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")


class JobFailed(Exception):
    """A job's errorResult: ``reason`` as BigQuery spells it and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duck_type(field: dict[str, Any]) -> str:
    """The DuckDB type of a BigQuery field resource (REPEATED becomes a list)."""
    t = LEGACY.get(field["type"].upper(), field["type"].upper())
    if t == "RECORD":
        base = (
            "STRUCT(" + ", ".join(f"{q(f['name'])} {duck_type(f)}" for f in field["fields"]) + ")"
        )
    elif t in ("NUMERIC", "BIGNUMERIC"):
        precision = int(field.get("precision", 38))
        scale = int(field.get("scale", 9))
        if precision > 38 or ("precision" not in field and t == "BIGNUMERIC"):
            raise JobFailed("invalid", f"the fake stores no {t} wider than 38 digits")
        base = f"DECIMAL({precision}, {scale})"
    else:
        base = _DUCK[t]
    return base + "[]" if field.get("mode") == "REPEATED" else base


@dataclass
class Result:
    table: pa.Table | None  # rows of the last SELECT, if any
    statement_type: str


class Engine:
    """One in-memory DuckDB; every call holds the lock (the HTTP server is threaded)."""

    def __init__(self, project: str):
        self.project = project
        self.lock = threading.RLock()
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")  # BigQuery casts TIMESTAMP to DATE in UTC

    def create_dataset(self, dataset: str) -> None:
        with self.lock:
            self.con.execute(f"CREATE SCHEMA {q(dataset)}")

    def create_table(self, dataset: str, table: str, fields: list[dict[str, Any]]) -> None:
        cols = []
        for f in fields:
            not_null = " NOT NULL" if f.get("mode") == "REQUIRED" else ""
            cols.append(f"{q(f['name'])} {duck_type(f)}{not_null}")
        with self.lock:
            self.con.execute(f"CREATE TABLE {q(dataset)}.{q(table)} ({', '.join(cols)})")

    def add_column(self, dataset: str, table: str, field: dict[str, Any]) -> None:
        with self.lock:
            self.con.execute(
                f"ALTER TABLE {q(dataset)}.{q(table)} ADD COLUMN {q(field['name'])} "
                f"{duck_type(field)}"
            )

    def drop_not_null(self, dataset: str, table: str, column: str) -> None:
        with self.lock:
            self.con.execute(
                f"ALTER TABLE {q(dataset)}.{q(table)} ALTER COLUMN {q(column)} DROP NOT NULL"
            )

    def drop_table(self, dataset: str, table: str) -> None:
        with self.lock:
            self.con.execute(f"DROP TABLE {q(dataset)}.{q(table)}")

    def rows(self, dataset: str, table: str) -> pa.Table:
        with self.lock:
            return self.con.sql(f"SELECT * FROM {q(dataset)}.{q(table)}").to_arrow_table()

    def load_parquet(
        self, dataset: str, table: str, fields: list[dict[str, Any]], payload: bytes, config: dict
    ) -> int:
        """Append a Parquet payload by column name; returns the rows loaded."""
        try:
            data = pq.read_table(io.BytesIO(payload))
        except pa.ArrowInvalid as exc:
            raise JobFailed("invalid", f"Error while reading data: {exc}") from exc
        data = _as_bigquery_reads(data, config)
        known = {f["name"] for f in fields}
        unknown = [n for n in data.schema.names if n not in known]
        if unknown:
            raise JobFailed("invalid", f"Provided Schema does not match Table: no field {unknown}")
        required = [f["name"] for f in fields if f.get("mode") == "REQUIRED"]
        missing = [n for n in required if n not in data.schema.names]
        if missing:
            raise JobFailed("invalid", f"Required fields {missing} missing from the file")
        view = "upload_" + threading.current_thread().name.replace("-", "_")
        with self.lock:
            self.con.register(view, data)
            try:
                self.con.execute(
                    f"INSERT INTO {q(dataset)}.{q(table)} BY NAME SELECT * FROM {q(view)}"
                )
            except duckdb.Error as exc:
                raise JobFailed("invalid", f"Error while reading data: {exc}") from exc
            finally:
                self.con.unregister(view)
        return data.num_rows

    def run(self, sql: str, default_dataset: str | None) -> Result:
        """Run a query or a script. A failed statement ends the script: its transaction is
        rolled back and the error names the statement's line as ``at [line:1]``."""
        statements = _split(sql)
        kind = "SCRIPT" if len(statements) > 1 else statements[0][1].split()[0].upper()
        result = None
        with self.lock:
            self.con.execute(f"SET schema = {_literal(default_dataset or 'main')}")
            in_transaction = False
            try:
                for line, statement in statements:
                    verb = statement.split()[0].upper()
                    try:
                        relation = self.con.sql(self._translate(statement))
                    except duckdb.Error as exc:
                        raise JobFailed(
                            "invalidQuery", f"Query error: {exc} at [{line}:1]"
                        ) from exc
                    if verb == "BEGIN":
                        in_transaction = True
                    elif verb in ("COMMIT", "ROLLBACK"):
                        in_transaction = False
                    if verb in ("SELECT", "WITH") and relation is not None:
                        result = relation.to_arrow_table()
            finally:
                if in_transaction:  # a failure, or a script that ended without COMMIT
                    self.con.execute("ROLLBACK")
                self.con.execute("SET schema = 'main'")
        return Result(result, kind)

    def _translate(self, statement: str) -> str:
        def name(match: re.Match[str]) -> str:
            parts = match.group(1).split(".")
            if len(parts) == 3 and parts[0] == self.project:
                parts = parts[1:]
            return ".".join(q(p) for p in parts)

        return re.sub(r"`([^`]*)`", name, statement)


def _split(sql: str) -> list[tuple[int, str]]:
    """Statements with the line each starts on; payrecon ends each with ``;`` at a line end."""
    out, start = [], 0
    for match in [*_STATEMENT_END.finditer(sql), None]:
        end = match.start() if match else len(sql)
        text = sql[start:end]
        if text.strip():
            leading = len(text) - len(text.lstrip())
            line = sql.count("\n", 0, start + leading) + 1
            out.append((line, text.strip()))
        if match:
            start = match.end()
    return out


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _as_bigquery_reads(data: pa.Table, config: dict) -> pa.Table:
    """The columns as BigQuery reads them under this load configuration: a MAP needs
    ``mapTargetType: ARRAY_OF_STRUCT`` to become a repeated key/value record, a LIST needs
    ``enableListInference``, a decimal wider than NUMERIC needs BIGNUMERIC allowed."""
    parquet = config.get("parquetOptions", {})
    decimals = config.get("decimalTargetTypes", ["NUMERIC"])
    columns = []
    for name, column in zip(data.schema.names, data.columns, strict=True):
        t = column.type
        if pa.types.is_map(t):
            if parquet.get("mapTargetType") != "ARRAY_OF_STRUCT":
                raise JobFailed("invalid", f"{name}: the fake loads maps only as ARRAY_OF_STRUCT")
            entry = pa.list_(pa.struct([pa.field("key", t.key_type), t.item_field]))
            column = pa.chunked_array(
                [
                    pa.ListArray.from_arrays(c.offsets, _entries(c), mask=c.is_null())
                    for c in column.chunks
                ],
                entry,
            )
        elif pa.types.is_list(t) and not parquet.get("enableListInference"):
            raise JobFailed("invalid", f"{name}: lists load as REPEATED only with list inference")
        elif pa.types.is_decimal(t) and _wider_than_numeric(t) and "BIGNUMERIC" not in decimals:
            raise JobFailed("invalid", f"{name}: {t} does not fit NUMERIC ({decimals})")
        columns.append(column)
    return pa.table(columns, names=data.schema.names)


def _wider_than_numeric(t: pa.Decimal128Type) -> bool:
    return bool(t.scale > 9 or t.precision - t.scale > 29)


def _entries(chunk: pa.MapArray) -> pa.StructArray:
    return pa.StructArray.from_arrays([chunk.keys, chunk.items], names=["key", "value"])


# -- query results in the REST shape (getQueryResults) ----------------------------------


def result_schema(schema: pa.Schema) -> list[dict[str, Any]]:
    return [_result_field(f.name, f.type) for f in schema]


def _result_field(name: str, t: pa.DataType) -> dict[str, Any]:
    mode = "NULLABLE"
    if pa.types.is_list(t):
        t, mode = t.value_type, "REPEATED"
    if pa.types.is_struct(t):
        inner = [_result_field(t.field(i).name, t.field(i).type) for i in range(t.num_fields)]
        return {"name": name, "type": "RECORD", "mode": mode, "fields": inner}
    if pa.types.is_decimal(t):
        wide = _wider_than_numeric(t)
        return {"name": name, "type": "BIGNUMERIC" if wide else "NUMERIC", "mode": mode}
    for test, type_ in (
        (pa.types.is_string, "STRING"),
        (pa.types.is_integer, "INTEGER"),
        (pa.types.is_floating, "FLOAT"),
        (pa.types.is_boolean, "BOOLEAN"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_binary, "BYTES"),
    ):
        if test(t):
            return {"name": name, "type": type_, "mode": mode}
    if pa.types.is_timestamp(t):
        return {"name": name, "type": "TIMESTAMP" if t.tz else "DATETIME", "mode": mode}
    raise JobFailed("invalid", f"the fake cannot return {t}")


def encode_row(row: dict[str, Any], fields: list[dict[str, Any]], int64_ts: bool) -> dict:
    return {"f": [{"v": _cell(row[f["name"]], f, int64_ts)} for f in fields]}


def _cell(value: Any, field: dict[str, Any], int64_ts: bool) -> Any:
    if field["mode"] == "REPEATED":  # BigQuery has no NULL arrays: a null list reads as []
        one = {**field, "mode": "NULLABLE"}
        return [{"v": _cell(v, one, int64_ts)} for v in value or []]
    if value is None:
        return None
    t = field["type"]
    if t == "RECORD":
        return encode_row(value, field["fields"], int64_ts)
    if t == "BOOLEAN":
        return "true" if value else "false"
    if t == "BYTES":
        return base64.b64encode(value).decode()
    if t == "TIMESTAMP":
        micros = (value - _EPOCH) // timedelta(microseconds=1)
        return str(micros) if int64_ts else f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
    if t in ("DATE", "DATETIME"):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)
