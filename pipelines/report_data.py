"""What ``payrecon report`` reads from the warehouse, as typed rows.

Only plain, portable SQL reaches the warehouse (SELECT, WHERE, GROUP BY, ORDER BY, CASE,
COALESCE, ABS, DATE literals), so DuckDB, BigQuery and Snowflake answer the same queries.
Columns are read by position, not by name (Snowflake upper-cases unquoted names); JSON
columns are decoded, ages bucketed and money converted here, in Python, on few rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import pyarrow as pa

from schemas.currencies import exponent, is_known
from transforms.warehouse import Warehouse

JOB = "reconcile"

# Open discrepancies by how long ago they were detected: (label, upper bound in days).
AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 d", 1),
    ("1–3 d", 3),
    ("3–7 d", 7),
    ("7–30 d", 30),
    ("> 30 d", float("inf")),
)

# How many runs the history charts and table show, ending with the latest.
HISTORY_RUNS = 30

# How many days of daily_revenue the report charts, ending with the run's last day.
REVENUE_DAYS = 31


class ReportError(Exception):
    """The report cannot be made from this warehouse or for this run (exit code 2)."""


class CurrencyTotal(NamedTuple):
    """Money one side moved in a run's window, in signed minor units (RECON_TOTALS_V1)."""

    side: str
    currency: str
    rows: int
    charges: int
    refunds: int
    disputes: int
    other: int
    gross: int
    fee: int | None
    net: int | None


class Run(NamedTuple):
    """One ``recon_runs`` row of the reconcile job, its JSON columns decoded."""

    run_id: str
    window_start: datetime
    window_end: datetime
    started_at: datetime
    finished_at: datetime
    status: str
    stripe_source: str
    messages_in: int
    events_out: int
    dead_letters: int
    dead_letters_by_reason: dict[str, int]
    stripe_rows: int
    matched: int
    pending: int
    discrepancies: int
    discrepancies_by_kind: dict[str, int]
    totals: tuple[CurrencyTotal, ...]
    dq_failures: int

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.started_at


class AtStake(NamedTuple):
    """A run's discrepancies of one kind and currency, and the money concerned (minor
    units): the difference for an amount mismatch, else the larger side's amount."""

    kind: str
    currency: str | None
    discrepancies: int
    amount: int


class OpenDiscrepancies(NamedTuple):
    """How many discrepancies of a kind were detected at one time (one per run)."""

    kind: str
    detected_at: datetime
    discrepancies: int


class DailyRevenue(NamedTuple):
    """One ``daily_revenue`` row, minor units."""

    day: date
    currency: str
    transactions: int
    gross: int
    refunds: int
    disputes: int
    fees: int
    net: int


class ReportData(NamedTuple):
    runs: tuple[Run, ...]  # every reconcile run, oldest window first
    run: Run  # the run the report is about
    at_stake: tuple[AtStake, ...]  # the run's discrepancies
    open_discrepancies: tuple[OpenDiscrepancies, ...]  # every run's, detected by as_of
    revenue: tuple[DailyRevenue, ...]  # REVENUE_DAYS days up to the run's last day
    as_of: datetime


def load_report_data(warehouse: Warehouse, run_id: str | None, as_of: datetime) -> ReportData:
    """Everything the report shows; ``run_id`` None means the latest run."""
    runs = read_runs(warehouse)
    run = select_run(runs, run_id)
    last_day = (run.window_end - timedelta(microseconds=1)).date()
    return ReportData(
        runs=runs,
        run=run,
        at_stake=read_at_stake(warehouse, run.run_id),
        open_discrepancies=read_open_discrepancies(warehouse, as_of),
        revenue=read_revenue(warehouse, last_day - timedelta(days=REVENUE_DAYS - 1), last_day),
        as_of=as_of,
    )


_RUN_COLUMNS = ", ".join(f for f in Run._fields)


def read_runs(warehouse: Warehouse) -> tuple[Run, ...]:
    if not warehouse.has_table("recon_runs"):
        raise ReportError(
            "the warehouse has no recon_runs table: run `payrecon reconcile ... "
            "--warehouse URL` into it first"
        )
    rows = _rows(
        warehouse.query_arrow(
            f"SELECT {_RUN_COLUMNS} FROM recon_runs WHERE job = '{JOB}' "
            "ORDER BY window_end, finished_at"
        )
    )
    if not rows:
        raise ReportError(
            "recon_runs holds no reconcile run: run `payrecon reconcile ... --warehouse URL` "
            "into this warehouse first"
        )
    runs = [_run(row) for row in rows]
    return tuple(sorted(runs, key=lambda r: (r.window_end, r.finished_at)))


def select_run(runs: Sequence[Run], run_id: str | None) -> Run:
    """The run named ``run_id``, or the latest (by window end, then finish time)."""
    if run_id is None:
        return runs[-1]
    for run in runs:
        if run.run_id == run_id:
            return run
    raise ReportError(
        f"no reconcile run {run_id!r} in recon_runs (the latest is {runs[-1].run_id!r}); "
        "list the ids with: SELECT run_id, window_start, window_end, status FROM recon_runs "
        "ORDER BY window_end DESC"
    )


def recent_runs(runs: Sequence[Run], run: Run, limit: int = HISTORY_RUNS) -> tuple[Run, ...]:
    """The latest ``limit`` runs, oldest first, always including ``run``."""
    shown = list(runs[-limit:])
    if run not in shown:
        shown = [run, *shown[1:]]
    return tuple(sorted(shown, key=lambda r: (r.window_end, r.finished_at)))


def read_at_stake(warehouse: Warehouse, run_id: str) -> tuple[AtStake, ...]:
    if not warehouse.has_table("recon_discrepancies"):
        return ()
    rows = _rows(
        warehouse.query_arrow(
            "SELECT kind, currency, COUNT(*), SUM(CASE "
            "WHEN kind = 'amount_mismatch' AND amount_delta IS NOT NULL THEN ABS(amount_delta) "
            "WHEN COALESCE(ledger_amount, 0) >= COALESCE(stripe_amount, 0) "
            "THEN COALESCE(ledger_amount, 0) ELSE stripe_amount END) "
            f"FROM recon_discrepancies WHERE run_id = {_literal(run_id)} "
            "GROUP BY kind, currency ORDER BY kind, currency"
        )
    )
    return tuple(AtStake(k, c, int(n), int(a or 0)) for k, c, n, a in rows)


def read_open_discrepancies(warehouse: Warehouse, as_of: datetime) -> tuple[OpenDiscrepancies, ...]:
    """Discrepancies detected by ``as_of``, grouped by kind and detection time.

    Every discrepancy in the warehouse counts as open: the repair job's outcomes are not
    in the warehouse yet.
    """
    if not warehouse.has_table("recon_discrepancies"):
        return ()
    rows = _rows(
        warehouse.query_arrow(
            "SELECT kind, detected_at, COUNT(*) FROM recon_discrepancies "
            "GROUP BY kind, detected_at ORDER BY detected_at, kind"
        )
    )
    found = (OpenDiscrepancies(k, _utc(t), int(n)) for k, t, n in rows)
    return tuple(o for o in found if o.detected_at <= as_of)


def read_revenue(warehouse: Warehouse, first: date, last: date) -> tuple[DailyRevenue, ...]:
    if not warehouse.has_table("daily_revenue"):
        return ()
    rows = _rows(
        warehouse.query_arrow(
            "SELECT day, currency, transactions, gross, refunds, disputes, fees, net "
            f"FROM daily_revenue WHERE day >= DATE '{first.isoformat()}' "
            f"AND day <= DATE '{last.isoformat()}' ORDER BY day, currency"
        )
    )
    return tuple(DailyRevenue(_day(d), c, *(int(v or 0) for v in values)) for d, c, *values in rows)


def age_bucket(age: timedelta) -> str:
    """The AGE_BUCKETS label of an age (a negative age counts as fresh)."""
    days = age / timedelta(days=1)
    return next(label for label, upper in AGE_BUCKETS if days < upper)


def open_by_age(open_discrepancies: Sequence[OpenDiscrepancies], as_of: datetime) -> dict:
    """``{bucket label: {kind: count}}`` for every AGE_BUCKETS label, in order."""
    out: dict[str, dict[str, int]] = {label: {} for label, _ in AGE_BUCKETS}
    for o in open_discrepancies:
        bucket = out[age_bucket(as_of - o.detected_at)]
        bucket[o.kind] = bucket.get(o.kind, 0) + o.discrepancies
    return out


def major_units(amount: int, currency: str) -> Decimal | None:
    """Minor units as an exact major-unit Decimal (None for an unknown currency)."""
    if not is_known(currency):
        return None
    return Decimal(amount).scaleb(-exponent(currency))


_COUNTS = (
    "messages_in",
    "events_out",
    "dead_letters",
    "stripe_rows",
    "matched",
    "pending",
    "discrepancies",
    "dq_failures",
)


def _run(row: tuple) -> Run:
    values = dict(zip(Run._fields, row, strict=True))
    for name in ("window_start", "window_end", "started_at", "finished_at"):
        values[name] = _utc(values[name])
    for name in ("dead_letters_by_reason", "discrepancies_by_kind"):
        values[name] = {k: int(v) for k, v in json.loads(values[name] or "{}").items()}
    values["totals"] = tuple(
        CurrencyTotal(**{f: t.get(f) for f in CurrencyTotal._fields})
        for t in json.loads(values["totals"] or "[]")
    )
    for name in _COUNTS:
        values[name] = int(values[name] or 0)
    return Run(**values)


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """The rows as tuples in SELECT order, whatever case the warehouse gave the names."""
    return list(zip(*(column.to_pylist() for column in table.columns), strict=True))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _utc(value: datetime) -> datetime:
    """Warehouses return UTC timestamps with or without a zone; always aware here."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _day(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
