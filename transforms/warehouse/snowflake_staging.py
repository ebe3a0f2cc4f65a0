"""How rows reach Snowflake: Parquet files PUT on a stage, COPY'd into a raw table, then
upserted into the target inside the load's transaction.

The raw table has the target's columns, all nullable, with nested values as JSON text: the
sink writes those itself (``PARSE_JSON`` on the way in), so the result does not depend on how
Snowflake's Parquet reader maps a Parquet MAP or LIST. Money never passes through pandas or a
float: Arrow int64 goes to Parquet INT64 and is cast to ``NUMBER(38,0)`` by the COPY.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TableDef
from transforms.warehouse.base import ParquetFiles, Rows
from transforms.warehouse.snowflake_schema import identifier, is_nested, snowflake_type

# Parquet is compressed already; USE_LOGICAL_TYPE reads timestamps and decimals by their
# logical types rather than their physical ones.
FILE_FORMAT = "FILE_FORMAT = (TYPE = PARQUET USE_LOGICAL_TYPE = TRUE)"


def raw_schema(schema: pa.Schema) -> pa.Schema:
    """The staged columns: nested types as JSON text, every column nullable."""
    return pa.schema(
        pa.field(f.name, pa.string() if is_nested(f.type) else f.type, nullable=True)
        for f in schema
    )


def to_raw(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` as staged: the schema's columns in order, cast, nested values as JSON.

    A column missing from ``rows`` (a file staged before the column was added) is null.
    """
    columns = []
    for f in schema:
        if f.name in rows.column_names:
            column = rows.column(f.name).cast(f.type)
        else:
            column = pa.chunked_array([pa.nulls(rows.num_rows, f.type)])
        columns.append(_json_text(column, f.type) if is_nested(f.type) else column)
    return pa.Table.from_arrays(columns, schema=raw_schema(schema))


def _json_text(column: pa.ChunkedArray, t: pa.DataType) -> pa.Array:
    return pa.array(
        [
            None if v is None else json.dumps(_plain(v, t), separators=(",", ":"), default=str)
            for v in column.to_pylist()
        ],
        pa.string(),
    )


def _plain(value: Any, t: pa.DataType) -> Any:
    """A JSON-ready value: Arrow maps come out of ``to_pylist`` as lists of pairs."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return {k: _plain(v, t.item_type) for k, v in value}
    if pa.types.is_struct(t):
        return {f.name: _plain(value[f.name], f.type) for f in t}
    if is_nested(t):
        return [_plain(v, t.value_type) for v in value]
    return value


def write_stage_files(rows: Rows, table: TableDef, directory: Path) -> int:
    """Puts the table's rows as Parquet files in ``directory``; returns how many.

    Staged files without nested columns are linked, not copied; the others are rewritten
    batch by batch, so memory stays bounded by a row group.
    """
    if isinstance(rows, pa.Table):
        if rows.num_rows == 0:
            return 0
        pq.write_table(to_raw(rows, table.schema), directory / "part-00000.parquet")
        return 1
    for i, path in enumerate(_local_paths(rows)):
        target = directory / f"part-{i:05d}.parquet"
        if any(is_nested(f.type) for f in table.schema):
            _rewrite(path, target, table.schema)
        else:
            _link(path, target)
    return len(rows.paths)


def _local_paths(rows: ParquetFiles) -> list[Path]:
    paths = []
    for path in rows.paths:
        local = path.removeprefix("file://")
        if "://" in local:
            raise ValueError(f"{path}: the Snowflake sink PUTs local files only")
        paths.append(Path(local).resolve())
    return paths


def _rewrite(source: Path, target: Path, schema: pa.Schema) -> None:
    with pq.ParquetWriter(target, raw_schema(schema)) as writer:
        for batch in pq.ParquetFile(source).iter_batches():
            writer.write_table(to_raw(pa.Table.from_batches([batch]), schema))


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source, target)
    except OSError:  # no symlinks here (Windows without the privilege)
        shutil.copyfile(source, target)


def create_raw_sql(raw: str, schema: pa.Schema) -> str:
    columns = ", ".join(
        f"{identifier(f.name)} {snowflake_type(f.type)}" for f in raw_schema(schema)
    )
    return f"CREATE TEMPORARY TABLE {raw} ({columns})"


def put_sql(directory: Path, location: str) -> str:
    """PUT every Parquet file of ``directory`` (a folder the sink made) to ``location``."""
    return f"PUT 'file://{directory.as_posix()}/*.parquet' {location} AUTO_COMPRESS = FALSE"


def copy_sql(raw: str, schema: pa.Schema, location: str) -> str:
    """COPY the staged files into ``raw`` by column name; a column a file lacks is NULL.

    ``PURGE`` removes the files once loaded (the stage is temporary anyway).
    """
    fields = list(raw_schema(schema))
    columns = ", ".join(identifier(f.name) for f in fields)
    values = ", ".join(f'$1:"{f.name}"::{snowflake_type(f.type)}' for f in fields)
    return (
        f"COPY INTO {raw} ({columns}) FROM (SELECT {values} FROM {location}) "
        f"{FILE_FORMAT} PURGE = TRUE"
    )


def delete_sql(table: TableDef, raw: str) -> str:
    """Removes the target rows whose keys the load brings again."""
    target = identifier(table.name)
    same_key = " AND ".join(
        f"{target}.{identifier(k)} = {raw}.{identifier(k)}" for k in table.primary_key
    )
    return f"DELETE FROM {target} USING {raw} WHERE {same_key}"


def insert_sql(table: TableDef, raw: str) -> str:
    """Inserts one row per key from ``raw``, nested columns parsed back from JSON.

    A key repeated within one load (at-least-once input) keeps one row; ordering by every
    column makes the choice independent of file order, so a rerun stores the same row.
    """
    names = [identifier(f.name) for f in table.schema]
    values = [_value(f) for f in table.schema]
    keys = ", ".join(map(identifier, table.primary_key))
    return (
        f"INSERT INTO {identifier(table.name)} ({', '.join(names)}) "
        f"SELECT {', '.join(values)} FROM {raw} "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {', '.join(names)}) = 1"
    )


def _value(f: pa.Field) -> str:
    name = identifier(f.name)
    if not is_nested(f.type):
        return name
    kind = snowflake_type(f.type)
    return f"PARSE_JSON({name})" + ("" if kind == "VARIANT" else f"::{kind}")
