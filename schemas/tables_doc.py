"""The generated parts of ``docs/tables.md``: each warehouse table's columns, keys and layout.

The prose of ``docs/tables.md`` is written by hand; the column tables between
``<!-- columns:NAME -->`` and ``<!-- /columns:NAME -->`` are rendered from
``schemas.tables.TABLES`` (names, types, nullability and field docs), so the documentation
analysts read cannot drift from what the sinks create.

    python -m schemas.tables_doc           # rewrite the generated sections
    python -m schemas.tables_doc --check   # exit 1 when docs/tables.md is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from schemas.fields import doc_of
from schemas.tables import TABLES, TableDef

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "tables.md"
_SECTION = re.compile(r"(<!-- columns:(\w+) -->\n)(.*?)(<!-- /columns:\2 -->)", re.DOTALL)


def analyst_type(f: pa.Field) -> str:
    """The column's type as an analyst reads it, the same in every warehouse."""
    t, doc = f.type, doc_of(f)
    if pa.types.is_string(t):
        return "text (JSON)" if doc.startswith("JSON") else "text"
    if pa.types.is_integer(t):
        return "integer (minor units)" if "minor units" in doc else "integer"
    if pa.types.is_decimal(t):
        unit = ", major units" if f.name.endswith("_major") else ""
        return f"decimal({t.precision},{t.scale}){unit}"
    if pa.types.is_timestamp(t):
        return "timestamp (UTC)" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_map(t):
        return f"map ({_scalar(t.key_type)} to {_scalar(t.item_type)})"
    if pa.types.is_list(t) and pa.types.is_struct(t.value_type):
        return f"list of records ({', '.join(field.name for field in t.value_type)})"
    if pa.types.is_list(t):
        return f"list of {_scalar(t.value_type)}"
    return str(t)


def _scalar(t: pa.DataType) -> str:
    return analyst_type(pa.field("value", t))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _names(columns: tuple[str, ...]) -> str:
    return ", ".join(f"`{c}`" for c in columns)


def render(table: TableDef) -> str:
    """The generated section of one table: its columns, then its key and layout."""
    meta = table.schema.metadata or {}
    lines = ["| column | type | nullable | description |", "| --- | --- | --- | --- |"]
    for f in table.schema:
        nullable = "yes" if f.nullable else "no"
        lines.append(f"| `{f.name}` | {analyst_type(f)} | {nullable} | {_cell(doc_of(f))} |")
    lines += [
        "",
        f"- Primary key: {_names(table.primary_key)} (every load upserts on it)",
        f"- Partitioned by day on (BigQuery): {_names((table.partition_by,))}"
        if table.partition_by
        else "- Not partitioned",
        f"- Clustered by (BigQuery, Snowflake): {_names(table.cluster_by)}"
        if table.cluster_by
        else "- Not clustered",
        f"- Contract: `{meta[b'name'].decode()}` v{meta[b'version'].decode()}",
    ]
    return "\n" + "\n".join(lines) + "\n\n"


def update(text: str, tables: Mapping[str, TableDef] = TABLES) -> str:
    """``text`` with every generated section rendered anew.

    Raises ValueError when a table has no section, or a section names no table.
    """
    missing = [n for n in tables if f"<!-- columns:{n} -->" not in text]
    if missing:
        raise ValueError(
            f"no section for table(s) {', '.join(missing)}: add '<!-- columns:NAME -->' and "
            "'<!-- /columns:NAME -->' lines where each table's columns belong"
        )

    def replace(match: re.Match[str]) -> str:
        opening, name, _, closing = match.groups()
        if name not in tables:
            raise ValueError(f"section '<!-- columns:{name} -->' names no table in TABLES")
        return opening + render(tables[name]) + closing

    return _SECTION.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.tables_doc",
        description="Rewrite the generated column sections of docs/tables.md from schemas/.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="Change nothing; exit 1 when the file is out of date.",
    )
    parser.add_argument("--path", type=Path, default=DOC_PATH, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = args.path.read_text()
    try:
        new = update(text)
    except ValueError as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    if new == text:
        return 0
    if args.check:
        print(
            f"{args.path} is out of date with schemas/: run python -m schemas.tables_doc",
            file=sys.stderr,
        )
        return 1
    args.path.write_text(new)
    print(f"rewrote the column sections of {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
