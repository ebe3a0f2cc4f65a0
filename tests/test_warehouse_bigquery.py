"""The BigQuery warehouse, tested at the HTTP boundary.

The real ``google.cloud.bigquery.Client`` talks to ``tests/bigquery_fake.py``, a local fake of
the REST endpoints the sink uses that records each request and keeps real state (rows in
DuckDB, uploaded Parquet read with pyarrow, MERGE scripts run in a transaction). Tests build
the sink with ``BigQueryWarehouse(project, dataset, client=fake.client())``; the
``open_warehouse`` test reaches the fake through ``BIGQUERY_EMULATOR_HOST`` instead.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.oauth2.credentials import Credentials

from schemas.fields import field, versioned
from schemas.tables import TABLES, TableDef
from tests.bigquery_fake import BigQueryFake
from transforms.warehouse import ParquetFiles, WarehouseError, open_warehouse
from transforms.warehouse.base import IncompatibleSchema
from transforms.warehouse.bigquery_sink import BigQueryWarehouse

ITEMS = TableDef(
    "items",
    versioned(
        "item",
        1,
        [
            field("id", pa.string(), "Key."),
            field("amount", pa.int64(), "Minor units."),
            field("at", pa.timestamp("us", tz="UTC"), "When."),
            field("note", pa.string(), "Free text.", nullable=True),
        ],
        doc="Items for tests.",
    ),
    ("id",),
    partition_by="at",
    cluster_by=("note",),
)
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def rows(*pairs: tuple[str, int]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": i, "amount": a, "at": AT, "note": None} for i, a in pairs], schema=ITEMS.schema
    )


def content(fake: BigQueryFake, table: str = "items") -> list[tuple[str, int]]:
    return sorted((r["id"], r["amount"]) for r in fake.rows("ds", table))


@pytest.fixture
def fake():
    with BigQueryFake(project="proj") as server:
        yield server
    assert server.errors == [], "the fake crashed"
    unknown = [(r.method, r.path) for r in server.requests if not server.knows(r)]
    assert unknown == [], "the sink used endpoints the fake does not implement"


@pytest.fixture
def warehouse(fake):
    with BigQueryWarehouse("proj", "ds", client=fake.client()) as wh:
        yield wh


def null_amount_file(tmp_path) -> ParquetFiles:
    """A staged file whose ``amount`` is null: it loads into the (all-nullable) staging
    table, and the MERGE into ``items``, where ``amount`` is REQUIRED, fails."""
    path = tmp_path / "null-amount.parquet"
    loose = pa.schema([f.with_nullable(True) for f in ITEMS.schema])
    pq.write_table(pa.Table.from_pylist([{"id": "b", "at": AT}], loose), path)
    return ParquetFiles((str(path),))


def stage_tables(fake: BigQueryFake) -> list[str]:
    return [t for t in fake.table_names("ds") if t.startswith("payrecon_stage_")]


def test_a_table_is_created_day_partitioned_clustered_and_documented(fake, warehouse):
    warehouse.ensure(ITEMS)
    (created,) = fake.requests_to("POST", r"/datasets/ds/tables$")
    body = created.body
    assert body["timePartitioning"] == {"type": "DAY", "field": "at"}
    assert body["clustering"] == {"fields": ["note"]}
    assert body["description"] == "Items for tests."
    columns = {f["name"]: f for f in body["schema"]["fields"]}
    assert columns["id"] == {
        "name": "id",
        "type": "STRING",
        "mode": "REQUIRED",
        "description": "Key.",
    }
    assert columns["at"]["type"] == "TIMESTAMP"
    assert columns["note"]["mode"] == "NULLABLE"


def test_a_date_column_partitions_by_day_too(fake, warehouse):
    warehouse.ensure(TABLES["daily_revenue"])
    (created,) = fake.requests_to("POST", r"/datasets/ds/tables$")
    assert created.body["timePartitioning"] == {"type": "DAY", "field": "day"}
    columns = {f["name"]: f for f in created.body["schema"]["fields"]}
    assert columns["day"]["type"] == "DATE"
    assert (columns["gross_major"]["type"], columns["gross_major"]["scale"]) == ("BIGNUMERIC", 3)


def test_reopening_every_payrecon_table_is_not_a_schema_change(fake):
    for _ in range(2):
        with BigQueryWarehouse("proj", "ds", client=fake.client()) as wh:
            for table in TABLES.values():
                wh.ensure(table)
    assert fake.requests_to("PATCH", r"/tables/") == []
    assert fake.table_names("ds") == sorted(TABLES)


def test_staged_parquet_files_go_to_a_staging_table_as_parquet_load_jobs(fake, warehouse, tmp_path):
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(rows(("a", 1), ("b", 2)), first)
    pq.write_table(rows(("c", 3)), second)
    warehouse.load({ITEMS: ParquetFiles((str(first), str(second)))})

    uploads = fake.requests_to("POST", r"^/upload/bigquery/v2/projects/proj/jobs$")
    assert len(uploads) == 2
    for upload, path in zip(uploads, (first, second), strict=True):
        load = upload.body["configuration"]["load"]
        assert load["sourceFormat"] == "PARQUET"
        assert load["destinationTable"]["tableId"].startswith("payrecon_stage_items_")
        sent = pq.read_table(pa.BufferReader(upload.payload))
        assert sent.equals(pq.read_table(path))
    assert content(fake) == [("a", 1), ("b", 2), ("c", 3)]


def test_an_arrow_table_is_uploaded_as_parquet_with_the_same_rows(fake, warehouse):
    warehouse.load({ITEMS: rows(("a", 1))})
    (upload,) = fake.requests_to("POST", r"^/upload/")
    assert pq.read_table(pa.BufferReader(upload.payload)).to_pylist() == rows(("a", 1)).to_pylist()


def test_a_second_load_updates_changed_rows_and_inserts_new_ones(fake, warehouse):
    warehouse.load({ITEMS: rows(("a", 1), ("b", 2))})
    warehouse.load({ITEMS: rows(("b", 20), ("c", 3))})
    assert content(fake) == [("a", 1), ("b", 20), ("c", 3)]


def test_rerunning_the_same_load_leaves_the_table_unchanged(fake, warehouse):
    warehouse.load({ITEMS: rows(("a", 1), ("b", 2))})
    before = fake.rows("ds", "items")
    warehouse.load({ITEMS: rows(("a", 1), ("b", 2))})
    assert sorted(fake.rows("ds", "items"), key=lambda r: r["id"]) == sorted(
        before, key=lambda r: r["id"]
    )


def test_a_key_repeated_within_one_load_is_stored_once(fake, warehouse):
    warehouse.load({ITEMS: rows(("a", 1), ("a", 1), ("b", 2))})
    assert content(fake) == [("a", 1), ("b", 2)]


def test_every_table_merges_in_one_transaction_script(fake, warehouse):
    other = TableDef("others", ITEMS.schema, ("id",))
    warehouse.load({ITEMS: rows(("a", 1)), other: rows(("x", 9))})
    scripts = [
        r.body["configuration"]["query"]["query"]
        for r in fake.requests_to("POST", r"^/bigquery/v2/projects/proj/jobs$")
    ]
    assert len(scripts) == 1
    script = scripts[0]
    assert script.startswith("BEGIN TRANSACTION;")
    assert script.endswith("COMMIT TRANSACTION;")
    assert script.count("MERGE INTO") == 2
    assert (content(fake), content(fake, "others")) == ([("a", 1)], [("x", 9)])


def test_a_failing_merge_writes_nothing_and_drops_the_staging_tables(fake, warehouse, tmp_path):
    other = TableDef("others", ITEMS.schema, ("id",))
    warehouse.load({ITEMS: rows(("a", 1)), other: rows(("x", 1))})
    deletes_before = len(fake.requests_to("DELETE", r"/tables/payrecon_stage_"))
    with pytest.raises(WarehouseError, match="nothing written") as err:
        warehouse.load({other: rows(("y", 2)), ITEMS: null_amount_file(tmp_path)})
    assert "MERGE into items" in str(err.value)
    assert content(fake, "others") == [("x", 1)]
    assert content(fake) == [("a", 1)]
    assert stage_tables(fake) == []
    assert len(fake.requests_to("DELETE", r"/tables/payrecon_stage_")) == deletes_before + 2


def test_a_failing_load_job_names_the_table_and_drops_its_staging_table(fake, warehouse, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(
        WarehouseError, match=r"loading items \(.*bad.parquet\) into staging table"
    ) as err:
        warehouse.load({ITEMS: ParquetFiles((str(bad),))})
    assert "Error while reading data" in str(err.value)
    assert stage_tables(fake) == []
    assert fake.rows("ds", "items") == []


def test_an_added_column_patches_the_table(fake, warehouse):
    warehouse.load({ITEMS: rows(("a", 1))})
    wider = TableDef(
        "items",
        versioned(
            "item", 2, [*ITEMS.schema, field("fee", pa.int64(), "New.")], doc="Items for tests."
        ),
        ("id",),
        "at",
    )
    warehouse.load(
        {wider: pa.Table.from_pylist([{**rows(("b", 2)).to_pylist()[0], "fee": 5}], wider.schema)}
    )
    (patch,) = fake.requests_to("PATCH", r"/tables/items$")
    added = patch.body["schema"]["fields"][-1]
    assert (added["name"], added["mode"], added["description"]) == ("fee", "NULLABLE", "New.")
    assert sorted((r["id"], r["fee"]) for r in fake.rows("ds", "items")) == [("a", None), ("b", 5)]


def test_a_column_made_nullable_is_relaxed_and_takes_nulls(fake, warehouse):
    warehouse.load({ITEMS: rows(("a", 1))})
    loose = pa.schema(
        [f.with_nullable(f.name == "amount" or f.nullable) for f in ITEMS.schema],
        metadata=ITEMS.schema.metadata,
    )
    looser = TableDef("items", loose, ("id",), "at")
    warehouse.load({looser: pa.Table.from_pylist([{"id": "b", "at": AT}], loose)})
    (patch,) = fake.requests_to("PATCH", r"/tables/items$")
    modes = {f["name"]: f["mode"] for f in patch.body["schema"]["fields"]}
    assert modes["amount"] == "NULLABLE"
    assert sorted((r["id"], r["amount"]) for r in fake.rows("ds", "items")) == [
        ("a", 1),
        ("b", None),
    ]


def test_a_changed_type_is_refused_as_incompatible_schema(fake, warehouse):
    warehouse.ensure(ITEMS)
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
    with pytest.raises(IncompatibleSchema, match=r"items.*'amount'.*'at', 'note'"):
        warehouse.ensure(changed)
    assert fake.requests_to("PATCH", r"/tables/") == []


def test_query_arrow_resolves_unqualified_names_in_the_dataset(fake, warehouse):
    facts = TABLES["fact_balance_transactions"]
    warehouse.load({facts: pa.Table.from_pylist([sample_row(facts.schema)], facts.schema)})
    result = warehouse.query_arrow(
        "SELECT balance_transaction_id, amount, created FROM fact_balance_transactions "
        "WHERE CAST(created AS DATE) IN (DATE '2026-11-20')"
    )
    assert result.to_pylist() == [
        {"balance_transaction_id": "balance_transaction_id-1", "amount": 7, "created": AT}
    ]
    (query,) = [
        r for r in fake.requests_to("POST", r"/jobs$") if "SELECT balance" in json.dumps(r.body)
    ]
    assert query.body["configuration"]["query"]["defaultDataset"]["datasetId"] == "ds"


def test_maps_lists_and_decimals_round_trip(fake, warehouse):
    for name in ("fact_ledger_events", "fact_balance_transactions", "daily_revenue"):
        table = TABLES[name]
        row = sample_row(table.schema)
        warehouse.load({table: pa.Table.from_pylist([row], table.schema)})
        (back,) = warehouse.query_arrow(f"SELECT * FROM {name}").to_pylist()
        for column in table.schema.names:
            expected = row[column]
            if pa.types.is_map(table.schema.field(column).type):
                expected = [{"key": k, "value": v} for k, v in expected]
            assert back[column] == expected, (name, column)


def test_a_null_list_or_map_loads_and_reads_back_as_empty(warehouse):
    # BigQuery has no NULL arrays; Stripe report rows have no fee_details.
    facts = TABLES["fact_balance_transactions"]
    row = {**sample_row(facts.schema), "fee_details": None}
    warehouse.load({facts: pa.Table.from_pylist([row], facts.schema)})
    events = TABLES["fact_ledger_events"]
    row = {**sample_row(events.schema), "metadata": None}
    warehouse.load({events: pa.Table.from_pylist([row], events.schema)})
    assert warehouse.query_arrow(
        "SELECT fee_details FROM fact_balance_transactions"
    ).to_pylist() == [{"fee_details": []}]
    assert warehouse.query_arrow("SELECT metadata FROM fact_ledger_events").to_pylist() == [
        {"metadata": []}
    ]


def test_has_table_is_false_before_the_first_load(warehouse):
    assert not warehouse.has_table("items")
    warehouse.load({ITEMS: rows(("a", 1))})
    assert warehouse.has_table("items")


def test_a_large_staged_file_uses_a_resumable_upload(fake, warehouse, tmp_path):
    big = tmp_path / "big.parquet"
    ids = [f"{i:08d}-{i * 7919 % 100003:06d}-{'x' * 8}{i}" for i in range(150_000)]
    table = pa.Table.from_pydict(
        {"id": ids, "amount": list(range(150_000)), "at": [AT] * 150_000, "note": ids},
        ITEMS.schema,
    )
    pq.write_table(table, big, compression="none")
    assert big.stat().st_size > 5 * 1024 * 1024  # the client's multipart limit
    warehouse.load({ITEMS: ParquetFiles((str(big),))})
    assert fake.requests_to("PUT", r"^/upload/")
    assert warehouse.query_arrow("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 150_000}]


def test_credentials_never_appear_in_error_messages(fake, tmp_path):
    token = "ya29.very-secret-token"
    client = fake.client(credentials=Credentials(token=token))
    with BigQueryWarehouse("proj", "ds", client=client) as wh, pytest.raises(WarehouseError) as err:
        wh.load({ITEMS: null_amount_file(tmp_path)})
    assert fake.requests[0].headers["Authorization"] == f"Bearer {token}"
    assert token not in str(err.value)
    with pytest.raises(ValueError, match="Application Default Credentials") as url_err:
        open_warehouse("bigquery://me:hunter2@proj/ds")
    assert "hunter2" not in str(url_err.value)


def test_a_bad_bigquery_url_says_what_is_expected():
    with pytest.raises(ValueError, match=r"bigquery://project/dataset"):
        open_warehouse("bigquery://proj")
    with pytest.raises(ValueError, match="allowed: location"):
        open_warehouse("bigquery://proj/ds?region=EU")


def test_open_warehouse_returns_the_bigquery_sink(fake, monkeypatch):
    # BIGQUERY_EMULATOR_HOST is the client library's own endpoint override.
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", fake.endpoint)
    with open_warehouse("bigquery://proj/ds?location=EU") as wh:
        assert isinstance(wh, BigQueryWarehouse)
        wh.load({ITEMS: rows(("a", 1))})
    (created,) = fake.requests_to("POST", r"/projects/proj/datasets$")
    assert created.body["location"] == "EU"
    assert content(fake) == [("a", 1)]


def sample_row(schema: pa.Schema) -> dict:
    """One valid row: every column set, strings named after their column."""
    return {f.name: _sample(f.name, f.type) for f in schema}


def _sample(name: str, t: pa.DataType):
    if pa.types.is_string(t):
        return f"{name}-1"
    if pa.types.is_integer(t):
        return 7
    if pa.types.is_boolean(t):
        return True
    if pa.types.is_timestamp(t):
        return AT
    if pa.types.is_date32(t):
        return date(2026, 11, 20)
    if pa.types.is_decimal(t):
        return Decimal("1234.567")
    if pa.types.is_binary(t):
        return b"\x00\xff"
    if pa.types.is_map(t):
        return [("k", "v"), ("k2", None)]
    if pa.types.is_list(t):
        return [_sample(name, t.value_type)]
    if pa.types.is_struct(t):
        return {
            t.field(i).name: _sample(t.field(i).name, t.field(i).type) for i in range(t.num_fields)
        }
    raise TypeError(t)
