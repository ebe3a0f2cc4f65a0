"""Cohort conversion drops of a telemetry micro-batch: test, and carry into payment_conversion.

After the batch's requests are merged (``pipelines.telemetry_finish``), every 1-minute
window the batch touched is tested by the cohort model (``transforms.cohort_conversion``):
each cohort's conversion over its last minutes against its own two hours before. The
requests come from ``fact_payment_requests`` (its event time is ``first_call_at``, else
``decided_at``, the time its ``day`` is taken from), read with one plain SQL query that
runs on every warehouse; the batch's merged rows replace their stored versions, so a window
is tested with the outcomes being loaded.

The significant drops become ``telemetry_anomalies`` rows (metric ``cohort_conversion``,
``dims`` the cohort), loaded in the batch's one transaction and published with the other
anomalies (``pipelines.telemetry_alerts``: same deterministic ``alert_id`` of window,
metric and dims, so a retried batch republishes the same ids).

``payment_conversion`` gets the drop columns for every day and cohort it recomputes, from
the cohort's ``cohort_conversion`` anomalies of that day (stored, and the batch's): whether
there was a significant drop, the first window that alerted, and the baseline conversion
and p-value of the most significant one. They are derived from the anomalies table rather
than kept as state of their own, so a day recomputed by a later batch keeps them. A
warehouse written before these columns existed is widened first (:func:`widen_tables`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import pyarrow as pa

from pipelines.telemetry_alerts import anomaly_rows, open_anomalies, resolve, sql_timestamp
from schemas.tables import TABLES
from transforms.cohort_conversion import (
    COHORT,
    METRIC,
    CohortConfig,
    cohort_dims,
    minute_counts,
    one_sided_p,
    score_cohorts,
)
from transforms.warehouse import Warehouse

ANOMALIES = TABLES["telemetry_anomalies"]
CONVERSION = TABLES["payment_conversion"]
FACTS = TABLES["fact_payment_requests"]
_REQUEST_COLUMNS = ["request_id", *COHORT, "status", "first_call_at", "decided_at"]
_AT = pl.coalesce("first_call_at", "decided_at")


def widen_tables(warehouse: Warehouse) -> None:
    """Add the cohort columns to a ``payment_conversion`` and ``telemetry_anomalies``, and
    ``loaded_at`` to a ``telemetry_window_counts``, of a warehouse from before them (the
    additive migration a load would make), before the batch reads those tables by their
    current schema."""
    for table in (CONVERSION, ANOMALIES, TABLES["telemetry_window_counts"]):
        if warehouse.has_table(table.name):
            warehouse.ensure(table)


def _date(d: date) -> str:
    return f"DATE '{d.isoformat()}'"


def _requests(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table.select(_REQUEST_COLUMNS))
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(
        pl.col(c).cast(pl.Datetime("us", "UTC")) for c in ("first_call_at", "decided_at")
    )


def read_requests(warehouse: Warehouse, first: datetime, end: datetime) -> pl.DataFrame:
    """The stored requests whose event time is in ``[first, end)``."""
    if not warehouse.has_table(FACTS.name):
        return _requests(FACTS.schema.empty_table())
    at = "COALESCE(first_call_at, decided_at)"
    stored = warehouse.query_arrow(
        f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM {FACTS.name} "
        f"WHERE day >= {_date(first.date())} AND day <= {_date(end.date())} "
        f"AND {at} >= {sql_timestamp(first)} AND {at} < {sql_timestamp(end)}"
    )
    return _requests(stored.cast(pa.schema([FACTS.schema.field(c) for c in _REQUEST_COLUMNS])))


def detect_cohort_drops(
    warehouse: Warehouse,
    minutely: pa.Table,
    facts: pa.Table,
    run_id: str,
    detected_at: datetime,
    config: CohortConfig | None = None,
) -> pa.Table:
    """``telemetry_anomalies`` rows of the cohorts whose conversion dropped significantly in
    a minute window of ``minutely`` (the batch's), with ``facts`` its merged requests."""
    config = config or CohortConfig()
    frame = pl.from_arrow(minutely.select(["window_start", "window_seconds"]))
    assert isinstance(frame, pl.DataFrame)
    windows = frame.filter(pl.col("window_seconds") == 60)["window_start"].unique()
    if windows.is_empty():
        return ANOMALIES.schema.empty_table()
    first = windows.min() - config.lookback  # type: ignore[operator]
    end = windows.max() + timedelta(minutes=1)  # type: ignore[operator]
    batch = _requests(facts)
    stored = read_requests(warehouse, first, end).join(batch, on="request_id", how="anti")
    requests = pl.concat([stored, batch]).with_columns(at=_AT)
    scored = score_cohorts(minute_counts(requests), windows, config)
    found = scored.filter(pl.col("severity").is_not_null())
    rows = found.select(
        "window_start", "dims", "value", "expected", "score", "direction", "severity",
        "suggested_action", "model", "p_value", "tests", "events", metric=pl.lit(METRIC),
        mad=pl.col("se"), baseline_points=pl.col("baseline_attempts"),
    )  # fmt: skip
    span = (
        f"window_start >= {sql_timestamp(windows.min())} "  # type: ignore[arg-type]
        f"AND window_start <= {sql_timestamp(windows.max())}"  # type: ignore[arg-type]
    )
    was_open = open_anomalies(warehouse, f"metric = '{METRIC}' AND {span}")
    normal = scored.filter(pl.col("severity").is_null()).select(
        "window_start", "dims", metric=pl.lit(METRIC)
    )
    return pa.concat_tables(
        [anomaly_rows(rows, run_id, detected_at), resolve(was_open, normal, run_id, detected_at)]
    )


def _day_drops(warehouse: Warehouse, days: list[date], drops: pa.Table) -> pl.DataFrame:
    """The open cohort drop anomalies of ``days``: the stored ones, replaced by the batch's
    (which may resolve them)."""
    columns = ["window_start", "dims", "expected", "score", "resolved_at"]
    frame = pl.from_arrow(drops.select(columns))
    assert isinstance(frame, pl.DataFrame)
    if warehouse.has_table(ANOMALIES.name):
        start = datetime.combine(min(days), time(), tzinfo=UTC)
        end = datetime.combine(max(days) + timedelta(days=1), time(), tzinfo=UTC)
        stored = warehouse.query_arrow(
            f"SELECT {', '.join(columns)} FROM {ANOMALIES.name} WHERE metric = '{METRIC}' "
            f"AND window_start >= {sql_timestamp(start)} AND window_start < {sql_timestamp(end)}"
        )
        earlier = pl.from_arrow(stored.cast(drops.select(columns).schema))
        assert isinstance(earlier, pl.DataFrame)
        frame = pl.concat([earlier.join(frame, on=["window_start", "dims"], how="anti"), frame])
    return frame.filter(pl.col("resolved_at").is_null()).with_columns(
        day=pl.col("window_start").dt.date(),
        p_value=pl.col("score").map_elements(one_sided_p, return_dtype=pl.Float64),
    )


def with_cohort_drops(warehouse: Warehouse, conversion: pa.Table, drops: pa.Table) -> pa.Table:
    """``conversion`` (``payment_conversion`` rows without the drop columns) with them: from
    each day and cohort's ``cohort_conversion`` anomalies, stored and ``drops`` (the batch's)."""
    frame = pl.from_arrow(conversion)
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return CONVERSION.schema.empty_table()
    found = _day_drops(warehouse, sorted(set(frame["day"])), drops)
    summary = (
        found.sort("day", "dims", "score", "window_start")
        .group_by("day", "dims", maintain_order=True)
        .agg(
            first_drop_at=pl.col("window_start").min(),
            baseline_conversion=pl.col("expected").first(),
            p_value=pl.col("p_value").first(),
        )
    )
    merged = frame.with_columns(dims=cohort_dims()).join(summary, on=["day", "dims"], how="left")
    merged = merged.with_columns(significant_drop=pl.col("first_drop_at").is_not_null())
    return merged.select(CONVERSION.schema.names).to_arrow().cast(CONVERSION.schema)
