"""What ``payrecon report`` reads from the warehouse, as typed rows.

Only plain, portable SQL reaches the warehouse (SELECT, WHERE, GROUP BY, ORDER BY, CASE,
COALESCE, ABS, MAX, scalar subqueries, DATE literals), so DuckDB, BigQuery and Snowflake
answer the same queries. Columns are read by position, not by name (Snowflake upper-cases
unquoted names); JSON columns are decoded and money converted here, in Python, on few rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, TypeVar

import pyarrow as pa

from schemas.currencies import exponent, is_known
from schemas.tables import AGE_BUCKETS
from transforms.warehouse import Warehouse

JOB = "reconcile"

# How many runs the history charts and table show, ending with the latest.
HISTORY_RUNS = 30

# How many days of daily_revenue the report charts, ending with the run's last day.
REVENUE_DAYS = 31


class _Timed(Protocol):
    """A run in a history: recon_runs' or recon_health's."""

    @property
    def run_id(self) -> str: ...
    @property
    def window_end(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime: ...


R = TypeVar("R", bound=_Timed)


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


class HealthRun(NamedTuple):
    """One ``recon_health`` row of the reconcile job: any run, failed ones included.

    The counts are None for a run that failed before counting.
    """

    run_id: str
    window_start: datetime
    window_end: datetime
    started_at: datetime
    finished_at: datetime
    duration: timedelta
    freshness: timedelta  # finished_at - window_end
    status: str
    exit_code: int | None
    error: str | None
    records_in: int | None
    dead_letters: int | None
    quarantined: int | None
    discrepancies: int | None
    dq_failures: int | None


class Health(NamedTuple):
    runs: tuple[HealthRun, ...]  # oldest window first
    # True for a warehouse older than recon_health: the runs are recon_runs' (no failed run).
    from_recon_runs: bool


class AgingRow(NamedTuple):
    """One ``discrepancy_aging`` row with open discrepancies (minor units)."""

    kind: str
    currency: str  # '?' when unknown
    age_bucket: str
    age_order: int
    open_discrepancies: int
    amount_at_stake: int


class Aging(NamedTuple):
    """One ``discrepancy_aging`` snapshot: what was open on ``as_of_date``, and how old."""

    as_of_date: date
    rows: tuple[AgingRow, ...]  # open_discrepancies > 0, youngest bucket first

    def buckets(self) -> list[str]:
        """Every bucket label, youngest first: the schema's, then any other the rows name."""
        others = {(r.age_order, r.age_bucket) for r in self.rows if r.age_bucket not in AGE_BUCKETS}
        return [*AGE_BUCKETS, *(label for _, label in sorted(others))]

    def by_age(self) -> dict[str, dict[str, int]]:
        """``{bucket label: {kind: open discrepancies}}`` for every bucket, in order."""
        out: dict[str, dict[str, int]] = {label: {} for label in self.buckets()}
        for r in self.rows:
            out[r.age_bucket][r.kind] = out[r.age_bucket].get(r.kind, 0) + r.open_discrepancies
        return out


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
    aging: Aging | None  # the latest snapshot on or before as_of's day, if any
    health: Health
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
        aging=read_aging(warehouse, as_of.astimezone(UTC).date()),
        health=read_health(warehouse, runs),
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
    return tuple(sorted(map(_run, rows), key=_by_window))


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


def recent_runs(runs: Sequence[R], selected: str, limit: int = HISTORY_RUNS) -> tuple[R, ...]:
    """The latest ``limit`` of ``runs`` (sorted by window end, then finish time), oldest
    first, always including the run ``selected`` when there is one of that id."""
    shown = list(runs[-limit:])
    chosen = [r for r in runs if r.run_id == selected]
    if chosen and chosen[0] not in shown:
        shown = [chosen[0], *shown[1:]]
    return tuple(sorted(shown, key=_by_window))


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


def read_aging(warehouse: Warehouse, day: date) -> Aging | None:
    """The latest ``discrepancy_aging`` snapshot taken on or before ``day`` (None: none).

    Its zero rows (buckets that emptied during the day) are dropped, but they still date a
    snapshot in which nothing is open.
    """
    if not warehouse.has_table("discrepancy_aging"):
        return None
    rows = _rows(
        warehouse.query_arrow(
            "SELECT as_of_date, kind, currency, age_bucket, age_order, open_discrepancies, "
            "amount_at_stake FROM discrepancy_aging WHERE as_of_date = (SELECT "
            "MAX(as_of_date) FROM discrepancy_aging "
            f"WHERE as_of_date <= DATE '{day.isoformat()}') "
            "ORDER BY age_order, kind, currency"
        )
    )
    if not rows:
        return None
    found = (
        AgingRow(kind, currency, bucket, int(order), int(n or 0), int(amount or 0))
        for _, kind, currency, bucket, order, n, amount in rows
    )
    return Aging(_day(rows[0][0]), tuple(r for r in found if r.open_discrepancies))


_HEALTH_COLUMNS = (
    "run_id, window_start, window_end, started_at, finished_at, duration_ms, freshness_s, "
    "status, exit_code, error, records_in, dead_letters, quarantined, discrepancies, "
    "dq_failures"
)


def read_health(warehouse: Warehouse, runs: Sequence[Run]) -> Health:
    """Every reconcile run's ``recon_health`` row; from ``runs`` when the warehouse
    predates that table."""
    if not warehouse.has_table("recon_health"):
        return Health(tuple(_health_of(run) for run in runs), from_recon_runs=True)
    rows = _rows(
        warehouse.query_arrow(
            f"SELECT {_HEALTH_COLUMNS} FROM recon_health WHERE job = '{JOB}' "
            "ORDER BY window_end, finished_at"
        )
    )
    return Health(tuple(sorted(map(_health_row, rows), key=_by_window)), from_recon_runs=False)


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


def _health_row(row: tuple) -> HealthRun:
    run_id, start, end, started, finished, duration_ms, freshness_s, status, *rest = row
    exit_code, error, *counts = rest
    return HealthRun(
        run_id,
        _utc(start),
        _utc(end),
        _utc(started),
        _utc(finished),
        timedelta(milliseconds=int(duration_ms)),
        timedelta(seconds=int(freshness_s)),
        status,
        _int(exit_code),
        error,
        *map(_int, counts),
    )


def _health_of(run: Run) -> HealthRun:
    """A recon_runs row as the health row its run would have written (what it can tell)."""
    return HealthRun(
        run.run_id,
        run.window_start,
        run.window_end,
        run.started_at,
        run.finished_at,
        run.duration,
        run.finished_at - run.window_end,
        run.status,
        exit_code=0 if run.status == "succeeded" else 1,
        error=None,
        records_in=run.messages_in + run.stripe_rows,
        dead_letters=run.dead_letters,
        quarantined=None,
        discrepancies=run.discrepancies,
        dq_failures=run.dq_failures,
    )


def _by_window(run: _Timed) -> tuple[datetime, datetime]:
    return run.window_end, run.finished_at


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


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
