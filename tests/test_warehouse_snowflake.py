"""The Snowflake warehouse, run against fakesnow's server: the real Snowflake connector over
HTTP, DuckDB underneath (``tests/snowflake_fixtures.py``). Each test uses its own database on
one server.

fakesnow 0.12 ignores column comments and clustering keys (the DDL test checks those in the
statement itself) and returns a null TIMESTAMP_TZ as 1970-01-01, so rows compared here keep
their nullable timestamps out of the comparison.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import snowflake.connector

from pipelines.reconcile_tables import daily_revenue
from pipelines.synthetic.day import GenerateConfig, generate_day
from schemas.fields import UTC_MICROS, field, versioned
from schemas.tables import TABLES, TableDef
from transforms.stripe_files import read_stripe_export
from transforms.warehouse import ParquetFiles, WarehouseError, open_warehouse
from transforms.warehouse.base import IncompatibleSchema
from transforms.warehouse.snowflake_schema import add_column_sql, create_table_sql
from transforms.warehouse.snowflake_sink import SnowflakeWarehouse

pytest_plugins = ("tests.snowflake_fixtures",)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
LAST_MICRO = datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC)
BIG = 2**53 + 1  # the first integer a float64 cannot hold
# fakesnow warns about how it builds its own results: nothing for the sink to act on.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result")

ITEMS = TableDef(
    "items",
    versioned(
        "item",
        1,
        [
            field("id", pa.string(), "Key."),
            field("amount", pa.int64(), "Minor units."),
            field("refunded", pa.int64(), "Minor units.", nullable=True),
            field("paid_at", UTC_MICROS, "When."),
        ],
        doc="test",
    ),
    ("id",),
)
OTHERS = TableDef("others", ITEMS.schema, ("id",))


def rows(*items: tuple) -> pa.Table:
    """``(id, amount)`` or ``(id, amount, refunded, paid_at)`` tuples as ITEMS rows."""
    full = [(*i, None, NOON) if len(i) == 2 else i for i in items]
    return pa.Table.from_pylist(
        [dict(zip(ITEMS.schema.names, i, strict=True)) for i in full], schema=ITEMS.schema
    )


def content(wh, name: str = "items") -> list[dict]:
    return wh.query_arrow(f"SELECT * FROM {name} ORDER BY id").to_pylist()


@pytest.fixture
def wh(snowflake_connect) -> SnowflakeWarehouse:
    return snowflake_connect()


def test_tables_are_created_with_the_schema_columns_and_types(wh):
    for table in TABLES.values():
        wh.ensure(table)
    columns = wh.query_arrow(
        "SELECT column_name, data_type, numeric_scale FROM information_schema.columns "
        "WHERE table_name = 'FACT_BALANCE_TRANSACTIONS' ORDER BY ordinal_position"
    ).to_pylist()
    assert [c["column_name"] for c in columns] == [
        n.upper() for n in TABLES["fact_balance_transactions"].schema.names
    ]
    types = {c["column_name"]: (c["data_type"], c["numeric_scale"]) for c in columns}
    assert types["AMOUNT"] == ("NUMBER", 0)
    assert types["CREATED"] == ("TIMESTAMP_TZ", None)
    assert types["CURRENCY"] == ("TEXT", None)
    assert types["FEE_DETAILS"][0] in ("ARRAY", "VARIANT")  # fakesnow says VARIANT
    for table in TABLES.values():  # reopening every table is not a schema change
        wh.ensure(table)


def test_ddl_declares_comments_primary_key_and_clustering():
    ddl = create_table_sql(TABLES["recon_discrepancies"])
    assert "discrepancy_id VARCHAR NOT NULL COMMENT 'Deterministic hash of kind + keys.'" in ddl
    assert "ledger_amount NUMBER(38,0) COMMENT " in ddl
    assert "detected_at TIMESTAMP_TZ COMMENT 'When the run found it (UTC).'" in ddl
    assert "PRIMARY KEY (discrepancy_id)" in ddl
    assert "CLUSTER BY (kind, currency)" in ddl
    assert "daily_revenue" not in ddl
    assert "gross_major NUMBER(38,3)" in create_table_sql(TABLES["daily_revenue"])
    assert "metadata OBJECT" in create_table_sql(TABLES["fact_ledger_events"])
    note = field("note", pa.string(), "It's new.", nullable=True)
    assert add_column_sql(ITEMS, note) == [
        "ALTER TABLE items ADD COLUMN note VARCHAR",
        "ALTER TABLE items ALTER COLUMN note COMMENT 'It''s new.'",
    ]


def test_a_table_load_keeps_int64_amounts_exact_and_timestamps_in_utc(wh):
    wh.load({ITEMS: rows(("a", BIG, None, LAST_MICRO), ("b", -BIG, 7, NOON))})
    result = wh.query_arrow("SELECT id, amount, refunded, paid_at FROM items ORDER BY id")
    assert result.schema == pa.schema(
        [
            ("id", pa.string()),
            ("amount", pa.int64()),
            ("refunded", pa.int64()),
            ("paid_at", UTC_MICROS),
        ]
    )
    assert result.to_pylist() == [
        {"id": "a", "amount": BIG, "refunded": None, "paid_at": LAST_MICRO},
        {"id": "b", "amount": -BIG, "refunded": 7, "paid_at": NOON},
    ]
    day = wh.query_arrow("SELECT CAST(paid_at AS DATE) AS day FROM items WHERE id = 'a'")
    assert day.to_pylist() == [{"day": date(2026, 11, 20)}]


def test_staged_parquet_files_load_with_nested_columns_as_json(wh, tmp_path):
    table = TABLES["fact_ledger_events"]
    event = {
        "event_type": "charge.succeeded",
        "occurred_at": NOON,
        "order_id": "ord_1",
        "stripe_object_id": "ch_1",
        "amount": BIG,
        "currency": "usd",
        "metadata": [("channel", "web")],
        "kafka_topic": "ledger.transactions",
        "kafka_partition": 0,
    }
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(
        pa.Table.from_pylist([{**event, "event_id": "e1", "kafka_offset": 1}], table.schema),
        first,
    )
    pq.write_table(
        pa.Table.from_pylist([{**event, "event_id": "e2", "kafka_offset": 2}], table.schema),
        second,
    )
    wh.load({table: ParquetFiles((str(first), str(second)))})
    result = wh.query_arrow(
        "SELECT event_id, amount, metadata:channel::VARCHAR AS channel, kafka_offset "
        "FROM fact_ledger_events ORDER BY event_id"
    )
    assert result.to_pylist() == [
        {"event_id": "e1", "amount": BIG, "channel": "web", "kafka_offset": 1},
        {"event_id": "e2", "amount": BIG, "channel": "web", "kafka_offset": 2},
    ]


def test_nested_values_of_a_table_load_are_queryable_as_semi_structured(wh):
    table = TABLES["fact_balance_transactions"]
    fee = {"amount": 59, "currency": "usd", "type": "stripe_fee"}
    row = {
        **{"balance_transaction_id": "txn_1", "amount": 1000, "fee": 59, "net": 941},
        **{"currency": "usd", "created": NOON, "origin": "api", "fee_details": [fee]},
    }
    wh.load({table: pa.Table.from_pylist([row], schema=table.schema)})
    result = wh.query_arrow(
        "SELECT fee_details[0]:amount::NUMBER AS fee, fee_details[0]:type::VARCHAR AS kind "
        "FROM fact_balance_transactions"
    )
    assert result.to_pylist() == [{"fee": 59, "kind": "stripe_fee"}]


def test_staged_parquet_files_without_nested_columns_load_as_they_are(wh, tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(rows(("a", 1), ("b", BIG)), path)
    wh.load({ITEMS: ParquetFiles((str(path),))})
    assert [(r["id"], r["amount"]) for r in content(wh)] == [("a", 1), ("b", BIG)]


def test_rerunning_the_same_load_leaves_every_table_unchanged(wh):
    load = {ITEMS: rows(("a", 1), ("b", 2)), OTHERS: rows(("x", 3))}
    wh.load(load)
    before = content(wh), content(wh, "others")
    wh.load(load)
    assert (content(wh), content(wh, "others")) == before


def test_a_second_load_updates_a_changed_row_and_adds_a_new_one(wh):
    wh.load({ITEMS: rows(("a", 1), ("b", 2))})
    wh.load({ITEMS: rows(("b", 20), ("c", 3))})
    assert [(r["id"], r["amount"]) for r in content(wh)] == [("a", 1), ("b", 20), ("c", 3)]


def test_a_key_repeated_within_one_load_is_stored_once(wh):
    wh.load({ITEMS: rows(("a", 1), ("a", 1), ("b", 2))})
    assert [(r["id"], r["amount"]) for r in content(wh)] == [("a", 1), ("b", 2)]


def test_a_failure_in_the_second_table_leaves_the_first_unchanged(wh):
    wh.load({ITEMS: rows(("a", 1)), OTHERS: rows(("x", 1))})
    null_key = rows(("y", 2)).set_column(0, "id", pa.array([None], pa.string()))
    with pytest.raises(WarehouseError, match=r"nothing written.*others"):
        wh.load({ITEMS: rows(("a", 100), ("b", 2)), OTHERS: null_key})
    assert [(r["id"], r["amount"]) for r in content(wh)] == [("a", 1)]
    assert [(r["id"], r["amount"]) for r in content(wh, "others")] == [("x", 1)]


def test_an_added_column_is_migrated(snowflake_connect):
    snowflake_connect().load({ITEMS: rows(("a", 1))})
    note = field("note", pa.string(), "New.", nullable=True)
    wider = TableDef("items", versioned("item", 2, [*ITEMS.schema, note], doc="t"), ("id",))
    wh = snowflake_connect()
    wh.load({wider: rows(("b", 2)).append_column(note, pa.array(["hi"]))})
    assert wh.query_arrow("SELECT id, note FROM items ORDER BY id").to_pylist() == [
        {"id": "a", "note": None},
        {"id": "b", "note": "hi"},
    ]


def test_a_changed_type_or_dropped_column_is_refused_naming_table_and_columns(wh):
    wh.ensure(ITEMS)
    changed = TableDef(
        "items",
        versioned(
            "item",
            3,
            [field("id", pa.string(), "Key."), field("amount", pa.string(), "Now text.")],
            doc="t",
        ),
        ("id",),
    )
    with pytest.raises(IncompatibleSchema, match=r"items.*\['amount'\].*\['refunded', 'paid_at'\]"):
        wh.ensure(changed)


@pytest.fixture
def environ(monkeypatch, tmp_path):
    """No Snowflake settings from the machine running the tests."""
    import os

    for name in [n for n in os.environ if n.startswith("SNOWFLAKE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SNOWFLAKE_HOME", str(tmp_path))
    return monkeypatch


def test_a_missing_credential_names_the_environment_variable(environ):
    with pytest.raises(ValueError, match="SNOWFLAKE_USER"):
        open_warehouse("snowflake://acct/db/schema")
    environ.setenv("SNOWFLAKE_USER", "loader")
    with pytest.raises(ValueError, match="SNOWFLAKE_PASSWORD"):
        open_warehouse("snowflake://acct/db/schema")
    environ.setenv("SNOWFLAKE_PRIVATE_KEY_FILE", "/nonexistent/key.p8")
    with pytest.raises(ValueError, match="SNOWFLAKE_PRIVATE_KEY_FILE"):
        open_warehouse("snowflake://acct/db/schema")


def test_secrets_never_appear_in_error_messages(environ):
    secret = "hunter2-very-secret"
    with pytest.raises(ValueError) as in_url:
        open_warehouse(f"snowflake://loader:{secret}@acct/db/schema")
    assert secret not in str(in_url.value)

    def echoing_connect(**kwargs):  # a connector error that repeats what it was given
        raise snowflake.connector.errors.DatabaseError(msg=f"login refused: {kwargs}")

    environ.setenv("SNOWFLAKE_USER", "loader")
    environ.setenv("SNOWFLAKE_PASSWORD", secret)
    environ.setattr(snowflake.connector, "connect", echoing_connect)
    with pytest.raises(WarehouseError, match="cannot connect") as refused:
        open_warehouse("snowflake://acct/db/schema")
    assert secret not in str(refused.value)
    assert refused.value.__cause__ is None


def test_open_warehouse_connects_with_the_url_and_environment_settings(environ, fakesnow_server):
    environ.setenv("SNOWFLAKE_USER", "loader")
    environ.setenv("SNOWFLAKE_PASSWORD", "pw")
    environ.setenv("SNOWFLAKE_WAREHOUSE", "LOAD_WH")
    seen = {}
    real_connect = snowflake.connector.connect

    def to_fakesnow(**kwargs):
        seen.update(kwargs)
        session = {**kwargs["session_parameters"], **fakesnow_server["session_parameters"]}
        return real_connect(**{**kwargs, **fakesnow_server, "session_parameters": session})

    environ.setattr(snowflake.connector, "connect", to_fakesnow)
    with open_warehouse("snowflake://acct/payrecon_db/recon?role=LOADER") as wh:
        assert isinstance(wh, SnowflakeWarehouse)
        assert not wh.has_table("recon_runs")
    assert {k: seen[k] for k in ("account", "database", "schema", "warehouse", "role")} == {
        "account": "acct",
        "database": "payrecon_db",
        "schema": "recon",
        "warehouse": "LOAD_WH",
        "role": "LOADER",
    }
    assert (seen["user"], seen["password"]) == ("loader", "pw")
    assert seen["session_parameters"]["TIMEZONE"] == "UTC"


@pytest.fixture(scope="module")
def run_tables(tmp_path_factory) -> dict[TableDef, pa.Table]:
    """A generated day's Stripe facts, the answer key's discrepancies, the daily rollup."""
    out = tmp_path_factory.mktemp("day")
    day = generate_day(
        GenerateConfig(day=date(2026, 11, 20), events=300, discrepancy_rate=0.05, out=out, seed=7)
    )
    key = json.loads(day.answer_key_path.read_text())
    facts = read_stripe_export(day.stripe_path, datetime.fromisoformat(key["report_as_of"]))
    window = {k: datetime.fromisoformat(v) for k, v in key["window"].items()}
    found = [
        {
            **{k: d[k] for k in ("kind", "order_id", "stripe_object_id", "currency")},
            **{k: d[k] for k in ("ledger_amount", "stripe_amount", "amount_delta")},
            "discrepancy_id": f"d{i:04d}",
            "run_id": "run-1",
            "severity": "high",
            "detected_at": NOON,
            "window_start": window["start"],
            "window_end": window["end"],
        }
        for i, d in enumerate(key["discrepancies"])
    ]
    return {
        TABLES["fact_balance_transactions"]: facts,
        TABLES["recon_discrepancies"]: pa.Table.from_pylist(
            found, schema=TABLES["recon_discrepancies"].schema
        ),
        TABLES["daily_revenue"]: daily_revenue([facts]),
    }


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT kind, COUNT(*) AS n FROM recon_discrepancies GROUP BY kind ORDER BY kind",
        "SELECT currency, CAST(SUM(amount) AS BIGINT) AS amount, COUNT(*) AS n "
        "FROM fact_balance_transactions GROUP BY currency ORDER BY currency",
        # What the reconcile job asks before it rebuilds daily_revenue.
        "SELECT balance_transaction_id, created, currency, reporting_category, amount, fee, net "
        "FROM fact_balance_transactions WHERE CAST(created AS DATE) IN (DATE '2026-11-20') "
        "ORDER BY balance_transaction_id",
        "SELECT day, currency, transactions, gross, net, gross_major, net_major "
        "FROM daily_revenue ORDER BY day, currency",
        "SELECT discrepancy_id, ledger_amount, stripe_amount, amount_delta, detected_at "
        "FROM recon_discrepancies ORDER BY discrepancy_id",
    ],
    ids=["kinds", "sums", "job-days", "daily", "amounts"],
)
def test_a_run_queries_the_same_in_snowflake_as_in_duckdb(sql, run_tables, wh, tmp_path):
    wh.load(run_tables)
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as duck:
        duck.load(run_tables)
        expected = duck.query_arrow(sql)
    assert expected.num_rows > 0
    assert wh.query_arrow(sql) == expected


def test_an_empty_result_is_typed_as_in_duckdb(run_tables, wh, tmp_path):
    sql = (
        "SELECT balance_transaction_id, created, amount, available_on FROM "
        "fact_balance_transactions WHERE CAST(created AS DATE) IN (DATE '2020-01-01')"
    )
    wh.load(run_tables)
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as duck:
        duck.load(run_tables)
        expected = duck.query_arrow(sql)
    assert wh.query_arrow(sql).schema == expected.schema
