"""docs/tables.md: its column lists match ``schemas/``, every table has a section, and every
query it shows gives the same rows on DuckDB and on Snowflake (fakesnow), over the tables of
a real reconcile run copied from one warehouse to the other."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from pipelines.reconcile import main as reconcile
from pipelines.repair import main as repair
from schemas import tables_doc
from schemas.discrepancy import KINDS
from schemas.tables import TABLES
from tests.reconcile_helpers import published_day, reconcile_argv
from tests.telemetry_helpers import Topics, traffic
from transforms.warehouse.duckdb_sink import DuckDBWarehouse
from transforms.warehouse.snowflake_sink import SnowflakeWarehouse

pytest_plugins = ("tests.snowflake_fixtures",)
# fakesnow warns about how it builds its own results: nothing for the sink to act on.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result")

DOC = tables_doc.DOC_PATH
_QUERY = re.compile(r"^### ([^\n]+)\n(?:(?!^### ).)*?```sql\n(.*?)```", re.DOTALL | re.MULTILINE)


def documented_queries() -> list[tuple[str, str]]:
    """(title, sql) of every ```sql block of the doc, titled by the heading above it."""
    found = [(title, sql.strip()) for title, sql in _QUERY.findall(DOC.read_text())]
    assert len(found) == DOC.read_text().count("```sql"), "a ```sql block has no ### title"
    return found


def test_the_column_lists_match_the_schemas():
    assert tables_doc.main(["--check"]) == 0, "run: python -m schemas.tables_doc"


def test_every_table_has_a_section_with_its_generated_columns():
    text = DOC.read_text()
    for name in TABLES:
        assert re.search(rf"^## {name}$", text, re.MULTILINE), f"no '## {name}' heading"
        assert f"<!-- columns:{name} -->" in text
        assert f"| `{TABLES[name].primary_key[0]}` |" in text


def test_check_fails_on_a_stale_file_and_a_rewrite_fixes_it(tmp_path, capsys):
    stale = tmp_path / "tables.md"
    stale.write_text(DOC.read_text().replace("| `run_id` | text | no |", "| `run_id` | int |", 1))
    assert tables_doc.main(["--check", "--path", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert tables_doc.main(["--path", str(stale)]) == 0
    assert stale.read_text() == DOC.read_text()


def test_a_table_without_a_section_is_named(tmp_path, capsys):
    missing = tmp_path / "tables.md"
    missing.write_text(DOC.read_text().replace("<!-- columns:dq_results -->", ""))
    assert tables_doc.main(["--path", str(missing)]) == 1
    assert "dq_results" in capsys.readouterr().err


@pytest.fixture(scope="module")
def warehouses(broker, tmp_path_factory, fakesnow_server) -> Iterator[tuple]:
    """One generated day reconciled for real into DuckDB as of its export, repaired, then
    reconciled again a week later (two runs of the window; what could not be repaired is now
    7-30 days old), and gateway traffic through payrecon telemetry; then every table copied
    into Snowflake with the Snowflake sink."""
    tmp = tmp_path_factory.mktemp("tables_doc")
    day = published_day(
        broker.bootstrap_servers, tmp / "day", events=1500, seed=5, discrepancy_rate=0.02
    )
    argv = reconcile_argv(
        broker.bootstrap_servers,
        day,
        tmp / "w.duckdb",
        discrepancies_topic=f"{day['topic']}.discrepancies",
        group_id="tables-doc",
    )
    assert reconcile(argv) == 0
    assert repair([
        "--bootstrap-servers", broker.bootstrap_servers,
        "--discrepancies-topic", f"{day['topic']}.discrepancies",
        "--repairs-topic", f"{day['topic']}.repairs", "--review-topic", f"{day['topic']}.review",
        "--group-id", "tables-doc", "--stripe-source", day["stripe"], "--as-of", day["as_of"],
        "--warehouse", f"duckdb:///{tmp / 'w.duckdb'}",
    ]) == 0  # fmt: skip
    week_later = datetime.fromisoformat(day["as_of"]) + timedelta(days=7)
    argv[argv.index("--as-of") + 1] = f"{week_later:%Y-%m-%dT%H:%M:%SZ}"
    assert reconcile(argv) == 0
    payments = Topics(broker.bootstrap_servers)  # the gateway's traffic, for telemetry
    payments.publish(traffic(150))
    assert payments.run(tmp / "w.duckdb", "tables-doc") == 0

    duck = DuckDBWarehouse(tmp / "w.duckdb")
    duck.ensure(TABLES["telemetry_request_partials"])  # only the streaming job writes it
    kinds = duck.query_arrow("SELECT DISTINCT kind FROM recon_discrepancies").column("kind")
    assert all(duck.has_table(name) for name in TABLES)
    assert set(kinds.to_pylist()) == set(KINDS)
    snow = SnowflakeWarehouse.connect(
        **fakesnow_server, database=f"T_{uuid.uuid4().hex[:12]}", schema="RECON"
    )
    snow.load({table: duck.query_arrow(f"SELECT * FROM {name}") for name, table in TABLES.items()})
    yield duck, snow
    snow.close()
    duck.close()


@pytest.mark.parametrize(
    ("title", "sql"), documented_queries(), ids=[t for t, _ in documented_queries()]
)
def test_a_documented_query_gives_the_same_rows_on_duckdb_and_snowflake(
    title, sql, warehouses: tuple[DuckDBWarehouse, SnowflakeWarehouse]
):
    duck, snow = warehouses
    expected, got = comparable(duck.query_arrow(sql)), comparable(snow.query_arrow(sql))
    assert expected[0] == got[0], "the columns differ"
    assert expected[1], f"{title!r} found no row in the run's tables: it proves nothing"
    assert got[1] == expected[1], differences(expected[1], got[1])


def comparable(table: pa.Table) -> tuple[list[str], list[tuple]]:
    """Column names and rows, as values: where the engines legitimately differ in
    representation, the same value compares equal (an integral decimal and an integer; a
    timestamp in micro- or nanoseconds); nothing else is loosened."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("us", tz=column.type.tz))
        columns.append(column)
    rows = pa.Table.from_arrays(columns, names=table.column_names).to_pylist()
    return table.column_names, [tuple(_value(v) for v in row.values()) for row in rows]


def _value(v: object) -> object:
    if isinstance(v, Decimal) and v == v.to_integral_value():
        return int(v)
    return v


def differences(expected: list[tuple], got: list[tuple], limit: int = 10) -> str:
    lines = [f"{len(expected)} rows on DuckDB, {len(got)} on Snowflake; first differences:"]
    pairs = itertools.zip_longest(expected, got)
    for i, (a, b) in enumerate(pairs):
        if a != b and len(lines) <= limit:
            lines += [f"  row {i}: duckdb    {a}", f"  row {i}: snowflake {b}"]
    return "\n".join(lines)
