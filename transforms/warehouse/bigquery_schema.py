"""BigQuery columns and tables derived from the pyarrow schemas in ``schemas/``.

One definition per table (``schemas.tables``): the column types, modes and descriptions, the
day partitioning and the clustering all come from the ``TableDef``. The mapping follows what a
Parquet load job produces with list inference and ``ARRAY_OF_STRUCT`` maps, so staged Parquet
files load into these tables without a rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from google.cloud import bigquery

from schemas.fields import doc_of
from schemas.tables import TableDef

# BigQuery has legacy and standard spellings of the same types; compare standard ones.
_STANDARD = {
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "STRUCT": "RECORD",
    "DECIMAL": "NUMERIC",
    "BIGDECIMAL": "BIGNUMERIC",
}


def _scalar_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "STRING"
    if pa.types.is_signed_integer(t) or t in (pa.uint8(), pa.uint16(), pa.uint32()):
        return "INT64"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_float32(t) or pa.types.is_float64(t):
        return "FLOAT64"
    if pa.types.is_timestamp(t):
        # BigQuery TIMESTAMP is an instant (UTC); a zone-less timestamp is a DATETIME.
        return "TIMESTAMP" if t.tz else "DATETIME"
    if pa.types.is_date32(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES"
    raise TypeError(f"no BigQuery type for {t}")


def _decimal(name: str, t: pa.Decimal128Type | pa.Decimal256Type) -> dict[str, Any]:
    """NUMERIC holds 29 integer and 9 fraction digits, BIGNUMERIC 38 and 38; keep the
    declared precision and scale so BigQuery stores exactly what DuckDB does."""
    p, s = t.precision, t.scale
    if s <= 9 and p - s <= 29:
        return {"field_type": "NUMERIC", "precision": p, "scale": s}
    if s <= 38 and p - s <= 38:
        return {"field_type": "BIGNUMERIC", "precision": p, "scale": s}
    raise TypeError(f"column {name}: no BigQuery type holds {t}")


def bigquery_field(f: pa.Field, description: str | None = None) -> bigquery.SchemaField:
    """The BigQuery column for a pyarrow field: REQUIRED unless the field is nullable.

    Lists are REPEATED columns (BigQuery stores a null list as an empty one); maps are
    REPEATED RECORDs of ``key`` and ``value``, BigQuery's usual map encoding.
    """
    t = f.type
    mode = "NULLABLE" if f.nullable else "REQUIRED"
    if pa.types.is_map(t):
        entry = pa.struct([pa.field("key", t.key_type, nullable=False), t.item_field])
        t, mode = entry, "REPEATED"
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        if pa.types.is_list(t.value_type) or pa.types.is_large_list(t.value_type):
            raise TypeError(f"column {f.name}: BigQuery has no list of lists ({t})")
        t, mode = t.value_type, "REPEATED"
    kwargs: dict[str, Any] = {"mode": mode}
    if description:
        kwargs["description"] = description
    if pa.types.is_struct(t):
        inner = [bigquery_field(t.field(i)) for i in range(t.num_fields)]
        return bigquery.SchemaField(f.name, "RECORD", fields=inner, **kwargs)
    if pa.types.is_decimal(t):
        return bigquery.SchemaField(f.name, **_decimal(f.name, t), **kwargs)
    if pa.types.is_map(t):
        raise TypeError(f"column {f.name}: BigQuery has no list of maps ({f.type})")
    return bigquery.SchemaField(f.name, _scalar_type(t), **kwargs)


def bigquery_schema(schema: pa.Schema) -> list[bigquery.SchemaField]:
    """Every column of ``schema``, described with its field doc."""
    return [bigquery_field(f, doc_of(f)) for f in schema]


def relaxed(fields: Sequence[bigquery.SchemaField]) -> list[bigquery.SchemaField]:
    """The same columns with every REQUIRED one NULLABLE (staging tables and added columns:
    BigQuery only adds NULLABLE columns, and staged files may mark any column optional)."""
    return [bigquery.SchemaField.from_api_repr(_relax(f.to_api_repr())) for f in fields]


def _relax(api: dict[str, Any]) -> dict[str, Any]:
    out = dict(api)
    if out.get("mode") == "REQUIRED":
        out["mode"] = "NULLABLE"
    if out.get("fields"):
        out["fields"] = [_relax(x) for x in out["fields"]]
    return out


def signature(f: bigquery.SchemaField) -> tuple[Any, ...]:
    """What must not change for existing data to stay readable: type, repetition, decimal
    precision and scale, and (for records) the names and signatures of the fields inside.
    Descriptions and REQUIRED/NULLABLE are not part of it."""
    type_ = _STANDARD.get(f.field_type, f.field_type)
    inner = tuple((x.name, signature(x)) for x in f.fields)
    return (type_, f.mode == "REPEATED", f.precision, f.scale, inner)


def new_table(ref: bigquery.TableReference, table: TableDef) -> bigquery.Table:
    """The table to create: columns from the schema, DAY partitions on ``partition_by``
    (a TIMESTAMP or DATE column), clustered by ``cluster_by``."""
    created = bigquery.Table(ref, schema=bigquery_schema(table.schema))
    doc = (table.schema.metadata or {}).get(b"doc")
    if doc:
        created.description = doc.decode()
    if table.partition_by:
        created.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=table.partition_by
        )
    if table.cluster_by:
        created.clustering_fields = list(table.cluster_by)
    return created
