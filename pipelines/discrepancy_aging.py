"""``discrepancy_aging``: the open discrepancies by kind, currency and age, one snapshot a day.

A discrepancy is open while the latest run of its window still finds it: a rerun after the
ledger was repaired no longer reports it, and its row in ``recon_discrepancies`` keeps the
id of the older run. Its age is the time from its window's start to the snapshot (the run's
``--as-of``), so "7-30d" means money that has been wrong for over a week.

Each reconcile run rewrites the snapshot of its as-of day whole, in the same transaction as
its other tables: every (kind, currency, bucket) of the new snapshot, and a zero for each
that the day's previous snapshot had and the new one has not, so a closed discrepancy
leaves no stale count behind; with nothing open, a zero per kind, so the day has a snapshot.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pyarrow as pa

from pipelines.reconcile_tables import _major
from schemas.discrepancy import KINDS
from schemas.tables import AGE_BUCKETS, TABLES

AGING = TABLES["discrepancy_aging"]
_OPEN_COLUMNS = ["kind", "currency", "window_start", "ledger_amount", "stripe_amount",
                 "amount_delta"]  # fmt: skip
# Upper bounds in days of each bucket but the last.
_BOUNDS_DAYS = (1, 3, 7, 30)


def open_in_warehouse(warehouse, window: tuple[datetime, datetime]) -> pa.Table:
    """The discrepancies of every other window found by that window's latest run."""
    if not (warehouse.has_table("recon_discrepancies") and warehouse.has_table("recon_runs")):
        return pa.table({c: pa.array([], _type(c)) for c in _OPEN_COLUMNS})
    start, end = (f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S}+00:00'" for t in window)
    latest = (
        "SELECT MAX(r2.finished_at) FROM recon_runs r2 "
        "WHERE r2.window_start = r.window_start AND r2.window_end = r.window_end"
    )
    sql = (
        f"SELECT {', '.join('d.' + c for c in _OPEN_COLUMNS)} FROM recon_discrepancies d "
        "JOIN recon_runs r ON d.run_id = r.run_id "
        f"WHERE r.finished_at = ({latest}) "
        f"AND NOT (r.window_start = {start} AND r.window_end = {end})"
    )
    table = warehouse.query_arrow(sql)
    return pa.table({c: table.column(c).cast(_type(c)) for c in _OPEN_COLUMNS})


def previous_snapshot(warehouse, as_of: datetime) -> pa.Table:
    if not warehouse.has_table(AGING.name):
        return AGING.schema.empty_table()
    rows = warehouse.query_arrow(
        f"SELECT kind, currency, age_bucket FROM {AGING.name} "
        f"WHERE as_of_date = DATE '{as_of:%Y-%m-%d}'"
    )
    return rows


def aging_snapshot(open_rows: pa.Table, as_of: datetime, previous: pa.Table) -> pa.Table:
    """``DISCREPANCY_AGING_V1`` rows for ``as_of``'s day from the open discrepancies."""
    frame = pl.from_arrow(open_rows.select(_OPEN_COLUMNS))
    assert isinstance(frame, pl.DataFrame)
    age_days = (pl.lit(as_of) - pl.col("window_start")).dt.total_seconds() / 86_400
    bucket = pl.lit(len(_BOUNDS_DAYS))
    for i, bound in reversed(list(enumerate(_BOUNDS_DAYS))):
        bucket = pl.when(age_days < bound).then(pl.lit(i)).otherwise(bucket)
    stake = (
        pl.when((pl.col("kind") == "amount_mismatch") & pl.col("amount_delta").is_not_null())
        .then(pl.col("amount_delta").abs())
        .otherwise(
            pl.max_horizontal(
                pl.col("ledger_amount").fill_null(0), pl.col("stripe_amount")
            ).fill_null(0)
        )
    )
    counted = (
        frame.with_columns(
            currency=pl.col("currency").fill_null("?"), age_order=bucket.cast(pl.Int64)
        )
        .group_by("kind", "currency", "age_order")
        .agg(open_discrepancies=pl.len().cast(pl.Int64), amount_at_stake=stake.sum())
    )
    gone = (
        pl.from_arrow(previous.select(["kind", "currency", "age_bucket"]))
        .with_columns(
            age_order=pl.col("age_bucket").replace_strict(
                {b: i for i, b in enumerate(AGE_BUCKETS)}, return_dtype=pl.Int64
            )
        )
        .drop("age_bucket")
        .join(counted, on=["kind", "currency", "age_order"], how="anti")
        .with_columns(open_discrepancies=pl.lit(0, pl.Int64), amount_at_stake=pl.lit(0, pl.Int64))
    )
    rows = pl.concat([counted, gone.select(counted.columns)])
    if rows.is_empty():
        # Nothing open: zeros, so the day has a snapshot and readers don't fall back to an
        # older day's counts.
        rows = pl.DataFrame(
            {
                "kind": list(KINDS),
                "currency": ["?"] * len(KINDS),
                "age_order": [0] * len(KINDS),
                "open_discrepancies": [0] * len(KINDS),
                "amount_at_stake": [0] * len(KINDS),
            },
            schema=counted.schema,
        )
    rows = rows.sort("kind", "currency", "age_order")
    out = rows.to_dicts()
    for row in out:
        row["as_of_date"] = as_of.date()
        row["age_bucket"] = AGE_BUCKETS[row["age_order"]]
        row["amount_at_stake_major"] = _major(row["amount_at_stake"], row["currency"])
    return pa.Table.from_pylist(out, schema=AGING.schema)


def _type(column: str) -> pa.DataType:
    return TABLES["recon_discrepancies"].schema.field(column).type
