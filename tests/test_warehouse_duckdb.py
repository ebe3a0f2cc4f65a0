"""The DuckDB warehouse: upserts that never duplicate, atomic loads, safe migrations."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.fields import field, versioned
from schemas.tables import TableDef
from transforms.warehouse import WarehouseError, open_warehouse
from transforms.warehouse.base import IncompatibleSchema, redact

ITEMS = TableDef(
    "items",
    versioned(
        "item",
        1,
        [field("id", pa.string(), "Key."), field("amount", pa.int64(), "Minor.")],
        doc="test",
    ),
    ("id",),
)


def rows(*pairs):
    return pa.table(
        {"id": [p[0] for p in pairs], "amount": [p[1] for p in pairs]}, schema=ITEMS.schema
    )


def content(wh, name="items"):
    return sorted(wh.query_arrow(f"SELECT * FROM {name}").to_pylist(), key=lambda r: r["id"])


def test_loading_the_same_rows_twice_leaves_one_row_per_key(tmp_path):
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as wh:
        wh.load({ITEMS: rows(("a", 1), ("b", 2))})
        wh.load({ITEMS: rows(("a", 1), ("b", 2))})
        assert content(wh) == [{"id": "a", "amount": 1}, {"id": "b", "amount": 2}]


def test_a_key_repeated_within_one_load_is_stored_once(tmp_path):
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as wh:
        wh.load({ITEMS: rows(("a", 1), ("a", 1))})
        assert content(wh) == [{"id": "a", "amount": 1}]


def test_a_failed_load_leaves_no_table_half_written(tmp_path):
    other = TableDef("others", ITEMS.schema, ("id",))
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as wh:
        wh.load({ITEMS: rows(("a", 1)), other: rows(("x", 1))})
        broken = pa.table({"id": [None], "amount": [5]})  # a null key
        with pytest.raises(WarehouseError, match="nothing written"):
            wh.load({other: rows(("y", 2)), ITEMS: broken})
        assert content(wh, "others") == [{"id": "x", "amount": 1}]


def test_an_added_column_migrates_and_a_changed_type_is_refused(tmp_path):
    url = f"duckdb:///{tmp_path}/w.duckdb"
    with open_warehouse(url) as wh:
        wh.load({ITEMS: rows(("a", 1))})
    wider = TableDef(
        "items",
        versioned(
            "item",
            2,
            [*ITEMS.schema, field("note", pa.string(), "New.", nullable=True)],
            doc="test",
        ),
        ("id",),
    )
    with open_warehouse(url) as wh:
        wh.load(
            {wider: pa.table({"id": ["b"], "amount": [2], "note": ["hi"]}, schema=wider.schema)}
        )
        assert wh.query_arrow("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 2}]
    changed = TableDef(
        "items",
        versioned(
            "item",
            3,
            [field("id", pa.string(), "Key."), field("amount", pa.string(), "Now text.")],
            doc="test",
        ),
        ("id",),
    )
    with open_warehouse(url) as wh, pytest.raises(IncompatibleSchema, match="amount"):
        wh.ensure(changed)


def test_an_unwritable_file_is_a_clear_error(tmp_path):
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(WarehouseError, match="cannot open"):
        open_warehouse(f"duckdb:///{target}")


def test_unknown_warehouse_url_names_what_is_allowed_without_credentials():
    with pytest.raises(ValueError, match="duckdb:///") as err:
        open_warehouse("postgres://user:hunter2@db/x")
    assert "hunter2" not in str(err.value)
    assert redact("snowflake://me:secret@acct/db/s") == "snowflake://acct/db/s"


def test_staged_parquet_files_load_as_an_upsert(tmp_path):
    import pyarrow.parquet as pq

    from transforms.warehouse import ParquetFiles

    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(rows(("a", 1), ("b", 2)), first)
    pq.write_table(rows(("b", 2), ("c", 3)), second)
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as wh:
        wh.load({ITEMS: ParquetFiles((str(first), str(second)))})
        wh.load({ITEMS: ParquetFiles((str(second),))})
        assert [r["id"] for r in content(wh)] == ["a", "b", "c"]


def test_reopening_a_table_of_every_column_type_is_not_a_schema_change(tmp_path):
    from schemas.tables import TABLES

    url = f"duckdb:///{tmp_path}/w.duckdb"
    for _ in range(2):
        with open_warehouse(url) as wh:
            for table in TABLES.values():
                wh.ensure(table)


def test_the_url_caps_duckdb_memory_and_refuses_unknown_options(tmp_path):
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb?memory_limit=512MB") as wh:
        (limit,) = wh.query_arrow("SELECT current_setting('memory_limit') AS m").column("m")
        assert limit.as_py() in ("512.0 MiB", "488.2 MiB")
    with pytest.raises(ValueError, match=r"unknown option.*memlimit.*allowed: memory_limit"):
        open_warehouse(f"duckdb:///{tmp_path}/w.duckdb?memlimit=1GB")
    with pytest.raises(ValueError, match="memory_limit='lots'"):
        open_warehouse(f"duckdb:///{tmp_path}/w.duckdb?memory_limit=lots")
