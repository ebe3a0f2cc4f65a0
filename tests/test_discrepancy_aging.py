"""Open discrepancies by kind, currency and age: what is still wrong, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from pipelines.discrepancy_aging import aging_snapshot, open_in_warehouse
from schemas.tables import TABLES
from transforms.warehouse import open_warehouse

AS_OF = datetime(2026, 11, 25, 6, tzinfo=UTC)
DAY = timedelta(days=1)


def window(days_ago: int) -> tuple[datetime, datetime]:
    start = datetime(2026, 11, 25, tzinfo=UTC) - days_ago * DAY
    return start, start + DAY


def discrepancy(run_id: str, win, n: int, kind="missing_in_ledger", currency="usd", **amounts):
    return {
        "discrepancy_id": f"d_{run_id}_{n}",
        "run_id": run_id,
        "kind": kind,
        "severity": "high",
        "order_id": None,
        "stripe_object_id": f"ch_{n}",
        "ledger_amount": amounts.get("ledger"),
        "stripe_amount": amounts.get("stripe", 1000),
        "currency": currency,
        "amount_delta": amounts.get("delta"),
        "detected_at": AS_OF,
        "window_start": win[0],
        "window_end": win[1],
        "repair_hint": None,
    }


def run(run_id: str, win, finished: datetime) -> dict:
    schema = TABLES["recon_runs"].schema
    row = {f.name: ("" if f.type == pa.string() else 0) for f in schema if not f.nullable}
    return row | {
        "run_id": run_id,
        "job": "reconcile",
        "window_start": win[0],
        "window_end": win[1],
        "started_at": finished - timedelta(minutes=1),
        "finished_at": finished,
        "status": "succeeded",
    }


def open_rows(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=TABLES["recon_discrepancies"].schema)
    return table.select(
        ["kind", "currency", "window_start", "ledger_amount", "stripe_amount", "amount_delta"]
    )


def test_only_the_latest_run_of_each_window_counts_as_open(tmp_path):
    old, new, other = window(3), window(3), window(10)
    runs = [
        run("r_first", old, AS_OF - 2 * DAY),
        run("r_rerun", new, AS_OF - DAY),
        run("r_other", other, AS_OF - 5 * DAY),
    ]
    found = [
        discrepancy("r_first", old, 1),
        discrepancy("r_first", old, 2),  # repaired: the rerun no longer finds it
        discrepancy("r_rerun", new, 3),
        discrepancy("r_other", other, 4),
    ]
    with open_warehouse(f"duckdb:///{tmp_path}/w.duckdb") as wh:
        wh.load(
            {
                TABLES["recon_runs"]: pa.Table.from_pylist(
                    runs, schema=TABLES["recon_runs"].schema
                ),
                TABLES["recon_discrepancies"]: pa.Table.from_pylist(
                    found, schema=TABLES["recon_discrepancies"].schema
                ),
            }
        )
        everything = open_in_warehouse(wh, window(0))
        without_other = open_in_warehouse(wh, other)
    assert sorted(everything.column("window_start").to_pylist()) == [other[0], new[0]]
    assert without_other.column("window_start").to_pylist() == [new[0]]


def test_discrepancies_fall_in_buckets_by_the_age_of_their_window():
    rows = [
        discrepancy("r", window(0), 1),
        discrepancy("r", window(2), 2),
        discrepancy("r", window(2), 3),
        discrepancy("r", window(40), 4),
    ]
    snapshot = aging_snapshot(
        open_rows(rows), AS_OF, TABLES["discrepancy_aging"].schema.empty_table()
    )
    got = {r["age_bucket"]: r["open_discrepancies"] for r in snapshot.to_pylist()}
    assert got == {"0-1d": 1, "1-3d": 2, "30d+": 1}
    assert set(snapshot.column("as_of_date").to_pylist()) == {AS_OF.date()}


def test_money_at_stake_is_the_mismatch_or_the_larger_side_in_each_currencys_units():
    rows = [
        discrepancy("r", window(1), 1, kind="amount_mismatch", currency="jpy", ledger=5000,
                    stripe=5400, delta=400),
        discrepancy("r", window(1), 2, kind="missing_in_stripe", currency="kwd", ledger=12345,
                    stripe=None),
    ]  # fmt: skip
    snapshot = aging_snapshot(
        open_rows(rows), AS_OF, TABLES["discrepancy_aging"].schema.empty_table()
    )
    got = {
        (r["kind"], r["currency"]): (r["amount_at_stake"], r["amount_at_stake_major"])
        for r in snapshot.to_pylist()
    }
    assert got == {
        ("amount_mismatch", "jpy"): (400, Decimal("400.000")),
        ("missing_in_stripe", "kwd"): (12345, Decimal("12.345")),
    }


def test_a_bucket_that_emptied_since_the_last_snapshot_is_written_as_zero():
    previous = pa.Table.from_pylist(
        [{"kind": "missing_in_ledger", "currency": "eur", "age_bucket": "3-7d"}]
    )
    snapshot = aging_snapshot(open_rows([discrepancy("r", window(0), 1)]), AS_OF, previous)
    got = {(r["currency"], r["age_bucket"]): r["open_discrepancies"] for r in snapshot.to_pylist()}
    assert got == {("usd", "0-1d"): 1, ("eur", "3-7d"): 0}


def test_a_day_with_nothing_open_still_has_a_snapshot_of_zeros():
    empty = aging_snapshot(open_rows([]), AS_OF, TABLES["discrepancy_aging"].schema.empty_table())
    assert empty.num_rows > 0
    assert set(empty.column("open_discrepancies").to_pylist()) == {0}
    assert set(empty.column("as_of_date").to_pylist()) == {AS_OF.date()}
