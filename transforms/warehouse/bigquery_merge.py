"""The one BigQuery script that upserts every staged table into its target, atomically.

``BEGIN TRANSACTION; MERGE ...; MERGE ...; COMMIT TRANSACTION;`` in one query job: BigQuery
commits every MERGE together, and when any statement fails the script fails and BigQuery
rolls the whole transaction back (no exception handler, so nothing is half-committed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from schemas.tables import TableDef

_ERROR_LINE = re.compile(r"at \[(\d+):\d+\]")


class Merge(NamedTuple):
    table: TableDef
    target: str  # project.dataset.table
    stage: str  # project.dataset.staging_table


class Script(NamedTuple):
    sql: str
    first_lines: tuple[tuple[int, str], ...]  # (first line of a MERGE, its table name)

    def table_at(self, error: str) -> str | None:
        """The table whose MERGE failed, from BigQuery's ``at [line:column]`` in ``error``."""
        found = _ERROR_LINE.search(error)
        if not found:
            return None
        line = int(found.group(1))
        names = [name for first, name in self.first_lines if first <= line]
        return names[-1] if names else None


def quote(name: str) -> str:
    """A backtick-quoted identifier (project ids may contain dashes)."""
    if "`" in name or "\\" in name:
        raise ValueError(f"unusable BigQuery name {name!r}")
    return f"`{name}`"


def merge_statement(merge: Merge) -> str:
    """Upsert the staged rows on the primary key: update every other column of a matched row,
    insert the rest. Staged rows may repeat a key (at-least-once input); one per key is kept,
    since a MERGE refuses two source rows for one target row."""
    table = merge.table
    columns = [quote(c) for c in table.schema.names]
    keys = [quote(k) for k in table.primary_key]
    others = [quote(c) for c in table.schema.names if c not in table.primary_key]
    lines = [
        f"MERGE INTO {quote(merge.target)} AS target",
        f"USING (SELECT {', '.join(columns)} FROM {quote(merge.stage)} WHERE TRUE",
        f"  QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(keys)}) = 1) AS source",
        "ON " + " AND ".join(f"target.{k} = source.{k}" for k in keys),
    ]
    if others:
        lines.append(
            "WHEN MATCHED THEN UPDATE SET " + ", ".join(f"{c} = source.{c}" for c in others)
        )
    lines.append(
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) "
        f"VALUES ({', '.join('source.' + c for c in columns)});"
    )
    return "\n".join(lines)


def merge_script(merges: Sequence[Merge]) -> Script:
    """Every MERGE inside one transaction, with the line each starts on (to name the table
    in an error)."""
    lines = ["BEGIN TRANSACTION;"]
    first_lines = []
    for merge in merges:
        first_lines.append((len(lines) + 1, merge.table.name))
        lines.extend(merge_statement(merge).split("\n"))
    lines.append("COMMIT TRANSACTION;")
    return Script("\n".join(lines), tuple(first_lines))
