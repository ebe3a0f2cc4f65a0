"""JSON Schema for the wire formats, generated from the pyarrow schemas.

``python -m schemas.jsonschema ledger_event`` prints the ledger event v1 schema, for
producers that validate before they publish.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pyarrow as pa

from schemas.fields import constraints_of, doc_of, is_required, name_and_version


def _type_of(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_floating(t):
        return {"type": "number"}
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_timestamp(t):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_date(t):
        return {"type": "string", "format": "date"}
    if pa.types.is_decimal(t):
        # Exact decimal text: a JSON number would be read as a float by most consumers.
        return {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}
    if pa.types.is_map(t):
        return {"type": "object", "additionalProperties": _type_of(t.item_type)}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"type": "array", "items": _type_of(t.value_type)}
    if pa.types.is_struct(t):
        return {
            "type": "object",
            "properties": {t.field(i).name: _type_of(t.field(i).type) for i in range(t.num_fields)},
        }
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return {"type": "string"}
    if pa.types.is_binary(t):
        return {"type": "string", "contentEncoding": "base64"}
    raise TypeError(f"no JSON Schema mapping for {t}")


def json_schema(schema: pa.Schema) -> dict[str, Any]:
    """A draft 2020-12 JSON Schema for one JSON object per row of ``schema``."""
    name, version = name_and_version(schema)
    properties: dict[str, Any] = {}
    for f in schema:
        prop = _type_of(f.type) | constraints_of(f)
        prop.pop("examples", None)
        if f.nullable and is_required(f):
            prop["type"] = [prop["type"], "null"]
        prop["description"] = doc_of(f)
        properties[f.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://payrecon.dev/schemas/{name}/v{version}.json",
        "title": f"{name} v{version}",
        "description": (schema.metadata or {}).get(b"doc", b"").decode(),
        "type": "object",
        "properties": properties,
        "required": [f.name for f in schema if is_required(f)],
    }


def main(argv: list[str] | None = None) -> int:
    from schemas import REGISTRY

    args = sys.argv[1:] if argv is None else argv
    names = args or sorted(REGISTRY)
    for name in names:
        if name not in REGISTRY:
            print(f"unknown schema {name!r}; known: {', '.join(sorted(REGISTRY))}", file=sys.stderr)
            return 2
        print(json.dumps(json_schema(REGISTRY[name]), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
