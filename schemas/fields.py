"""Helpers to declare documented, constrained pyarrow fields.

Each field carries its documentation and its wire constraints in the field metadata, so the
JSON Schema (``schemas.jsonschema``) and the warehouse DDL are generated from one definition.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")
UTC_MILLIS = pa.timestamp("ms", tz="UTC")


def field(
    name: str,
    type_: pa.DataType,
    doc: str,
    *,
    required: bool = True,
    nullable: bool = False,
    **constraints: Any,
) -> pa.Field:
    """A pyarrow field with ``doc`` and JSON-Schema ``constraints`` in its metadata.

    ``required``: the key must be present on the wire. ``nullable``: its value may be null.
    An optional key is always nullable.
    """
    metadata = {"doc": doc, "required": "true" if required else "false"}
    if constraints:
        metadata["constraints"] = json.dumps(constraints, sort_keys=True)
    return pa.field(name, type_, nullable=nullable or not required, metadata=metadata)


def is_required(f: pa.Field) -> bool:
    """True when the key must be present on the wire (its value may still be nullable)."""
    return (f.metadata or {}).get(b"required", b"true") == b"true"


def doc_of(f: pa.Field) -> str:
    """The documentation of a field declared with :func:`field`."""
    return (f.metadata or {}).get(b"doc", b"").decode()


def constraints_of(f: pa.Field) -> dict[str, Any]:
    """The JSON-Schema constraints of a field declared with :func:`field`."""
    raw = (f.metadata or {}).get(b"constraints")
    return json.loads(raw) if raw else {}


def versioned(name: str, version: int, fields: list[pa.Field], doc: str) -> pa.Schema:
    """A schema that names itself and its contract version in its metadata."""
    return pa.schema(fields, metadata={"name": name, "version": str(version), "doc": doc})


def name_and_version(schema: pa.Schema) -> tuple[str, int]:
    meta = schema.metadata or {}
    return meta[b"name"].decode(), int(meta[b"version"])
