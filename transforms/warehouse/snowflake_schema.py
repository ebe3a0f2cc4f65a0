"""Snowflake columns and tables derived from the pyarrow schemas in ``schemas/``, and the
Arrow types of query results brought back to what the DuckDB sink returns.

Identifiers are written unquoted, so Snowflake stores them upper-case and the analysts' (and
the job's) plain SQL, ``SELECT amount FROM fact_balance_transactions``, finds them.

Timestamps with a time zone are ``TIMESTAMP_TZ`` written in UTC (the sink's sessions run with
``TIMEZONE = 'UTC'``). Each value keeps its ``+00:00`` offset, so it is the same instant for an
analyst whose session runs in another zone, and ``CAST(created AS DATE)`` is the UTC day in
every session. ``TIMESTAMP_NTZ`` would drop the offset, and comparing it with
``CURRENT_TIMESTAMP()`` or an ``LTZ`` value silently shifts it by the session's zone;
``TIMESTAMP_LTZ`` would make the day of a row depend on who asks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import pyarrow as pa

from schemas.fields import doc_of
from schemas.tables import TableDef

_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# Snowflake's reserved words: a column named like one would need quoting everywhere.
_RESERVED = frozenset(
    """ACCOUNT ALL ALTER AND ANY AS BETWEEN BY CASE CAST CHECK COLUMN CONNECT CONNECTION
    CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER
    DATABASE DELETE DISTINCT DROP ELSE EXISTS FALSE FOLLOWING FOR FROM FULL GRANT GROUP
    GSCLUSTER HAVING ILIKE IN INCREMENT INNER INSERT INTERSECT INTO IS ISSUE JOIN LATERAL LEFT
    LIKE LOCALTIME LOCALTIMESTAMP MINUS NATURAL NOT NULL OF ON OR ORDER ORGANIZATION QUALIFY
    REGEXP REVOKE RIGHT RLIKE ROW ROWS SAMPLE SCHEMA SELECT SET SOME START TABLE TABLESAMPLE
    THEN TO TRIGGER TRUE TRY_CAST UNION UNIQUE UPDATE USING VALUES VIEW WHEN WHENEVER WHERE
    WITH""".split()
)
SEMI_STRUCTURED = ("OBJECT", "ARRAY", "VARIANT")


def identifier(name: str) -> str:
    """``name`` as an unquoted identifier; raises ValueError if it would need quotes."""
    if not _UNQUOTED.fullmatch(name) or name.upper() in _RESERVED:
        raise ValueError(
            f"{name!r} is not a plain Snowflake identifier (letters, digits, _ and $, not a "
            "reserved word); rename it in schemas/"
        )
    return name


def literal(text: str) -> str:
    """A Snowflake string literal (backslash is an escape character there, as is '')."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def is_nested(t: pa.DataType) -> bool:
    return pa.types.is_map(t) or pa.types.is_struct(t) or _is_list(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def snowflake_type(t: pa.DataType) -> str:
    """The column type for an Arrow type; every integer is ``NUMBER(38,0)``."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_integer(t):
        return "NUMBER(38,0)"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_floating(t):
        return "FLOAT"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP_TZ" if t.tz else "TIMESTAMP_NTZ"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"NUMBER({t.precision},{t.scale})"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BINARY"
    if pa.types.is_map(t) or pa.types.is_struct(t):
        return "OBJECT"
    if _is_list(t):
        return "ARRAY"
    raise TypeError(f"no Snowflake type for {t}")


def column_sql(f: pa.Field, *, not_null: bool = False) -> str:
    sql = f"{identifier(f.name)} {snowflake_type(f.type)}"
    if not_null:
        sql += " NOT NULL"
    if doc_of(f):
        sql += f" COMMENT {literal(doc_of(f))}"
    return sql


def create_table_sql(table: TableDef) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with types, column comments, key and clustering.

    As in the DuckDB sink, only the primary-key columns are NOT NULL: the schemas' other
    non-null promises are checked by the data-quality suites, not by a load that would fail
    a whole run over one row. Snowflake records the primary key but does not enforce it;
    the load's upsert keeps one row per key.
    """
    keys = table.primary_key
    lines = [column_sql(f, not_null=f.name in keys) for f in table.schema]
    lines.append(f"PRIMARY KEY ({', '.join(map(identifier, keys))})")
    sql = f"CREATE TABLE IF NOT EXISTS {identifier(table.name)} (\n  " + ",\n  ".join(lines)
    sql += "\n)"
    if table.cluster_by:
        sql += f"\nCLUSTER BY ({', '.join(map(identifier, table.cluster_by))})"
    doc = (table.schema.metadata or {}).get(b"doc", b"").decode()
    if doc:
        sql += f"\nCOMMENT = {literal(doc)}"
    return sql


def add_column_sql(table: TableDef, f: pa.Field) -> list[str]:
    """A new column, always nullable (the rows already there have no value for it), then
    its comment: the form ALTER TABLE documents for column comments."""
    name = identifier(table.name)
    statements = [f"ALTER TABLE {name} ADD COLUMN {identifier(f.name)} {snowflake_type(f.type)}"]
    if doc_of(f):
        statements.append(f"ALTER TABLE {name} ALTER COLUMN {f.name} COMMENT {literal(doc_of(f))}")
    return statements


class ExistingColumn(NamedTuple):
    """A column as ``INFORMATION_SCHEMA.COLUMNS`` describes it."""

    name: str
    data_type: str
    precision: int | None
    scale: int | None

    def same_type(self, wanted: str) -> bool:
        """True when the column already has the type ``snowflake_type`` asks for.

        OBJECT, ARRAY and VARIANT count as one kind: they hold the same values, and a
        change among them is not one the sink can detect everywhere.
        """
        have = self.data_type.upper()
        if have in ("TEXT", "STRING", "VARCHAR"):
            have = "VARCHAR"
        elif have == "NUMBER":
            have = f"NUMBER({self.precision},{self.scale})"
        elif have in ("REAL", "DOUBLE", "DOUBLE PRECISION", "FLOAT4", "FLOAT8"):
            have = "FLOAT"
        if have in SEMI_STRUCTURED and wanted in SEMI_STRUCTURED:
            return True
        return have == wanted


def normalize_result(table: pa.Table, snowflake_types: Sequence[str]) -> pa.Table:
    """Query results typed as the DuckDB sink returns them: lower-case names, int64 for
    every integer (Snowflake sends the narrowest width that fits each batch), microsecond
    timestamps (in UTC for TIMESTAMP_TZ and _LTZ, even in an empty result, which the
    connector types without a zone), ``date32`` dates. Semi-structured values stay JSON
    text. ``snowflake_types``: each column's type name from the cursor's description."""
    fields, columns = [], []
    for f, column, kind in zip(table.schema, table.columns, snowflake_types, strict=True):
        column = _normalized(column, kind)
        fields.append(pa.field(f.name.lower(), column.type))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _normalized(column: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    t = column.type
    if pa.types.is_integer(t):
        return column.cast(pa.int64())
    if pa.types.is_decimal(t) and t.scale == 0:
        try:
            return column.cast(pa.int64())
        except pa.ArrowInvalid:  # beyond int64: keep the exact decimal
            return column
    if kind in ("TIMESTAMP_TZ", "TIMESTAMP_LTZ") or (pa.types.is_timestamp(t) and t.tz):
        # Sub-microsecond digits are dropped, as DuckDB's TIMESTAMPTZ would.
        return column.cast(pa.timestamp("us", tz="UTC"), safe=False)
    if pa.types.is_timestamp(t):
        return column.cast(pa.timestamp("us"), safe=False)
    if pa.types.is_date64(t):
        return column.cast(pa.date32())
    if pa.types.is_large_string(t):
        return column.cast(pa.string())
    if pa.types.is_large_binary(t):
        return column.cast(pa.binary())
    return column
