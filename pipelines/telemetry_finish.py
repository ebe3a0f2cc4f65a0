"""After a telemetry micro-batch's pipeline: merge with the earlier batches, load, commit.

* Window metrics: the batch's counts per window are stored under its run id
  (``telemetry_window_counts``); every window the batch touched is recomputed from the
  counts of all batches (``telemetry_minutely``). Counts add up, so a window spread over
  several batches, or completed by late data, gets the metrics of one batch over all.
* Requests: the batch's partial rows are merged with the stored rows of the same requests
  (``fact_payment_requests``); ``payment_conversion`` is recomputed for every day a merged
  request is (or was) on, from all of that day's requests.

* Anomalies: the minute windows the batch touched are scored against their history
  (``pipelines.telemetry_alerts``), each cohort's conversion in them is tested against
  its own recent past (``pipelines.telemetry_cohorts``, which also fills the drop columns of
  ``payment_conversion``), and the watched consumer groups are judged from their lag
  measurements (``pipelines.telemetry_lag``): ``telemetry_anomalies``, and one message per
  anomaly on the alerts topic.
* Consumer lag: the measurement taken when the batch started (``telemetry_consumer_lag``).

Everything is upserted in one transaction with the run's ``recon_health`` row; then the
alerts are published, and only then are the group's offsets committed (forward only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.run_health import health_row
from pipelines.telemetry_alerts import ANOMALIES, detect_anomalies, publish_alerts, sql_timestamp
from pipelines.telemetry_cohorts import detect_cohort_drops, widen_tables, with_cohort_drops
from pipelines.telemetry_lag import LAG, stalled_anomalies
from schemas.dead_letter import DEAD_LETTER_V1
from schemas.tables import TABLES
from transforms.kafka_offsets import ReadPlan, commit_offsets
from transforms.payment_decode import MESSAGE_COUNTS
from transforms.payment_request_facts import conversion_rollup, partial_schema, reduce_requests
from transforms.staging import read_staged
from transforms.telemetry_metrics import window_metrics
from transforms.warehouse import Warehouse, open_warehouse

MINUTELY = TABLES["telemetry_minutely"]
STATE = TABLES["telemetry_window_counts"]
FACTS = TABLES["fact_payment_requests"]
CONVERSION = TABLES["payment_conversion"]
_WINDOW_KEY = ["window_start", "window_end", "gateway"]
_IN_CHUNK = 500


def _text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _date(d: date) -> str:
    return f"DATE '{d.isoformat()}'"


def _rows_where_in(
    warehouse: Warehouse,
    table: Any,
    column: str,
    values: Iterable,
    literal: Callable[[Any], str],
    extra: str = "",
) -> pa.Table:
    """The rows of ``table`` whose ``column`` is one of ``values`` (queried in chunks)."""
    values = sorted(set(values))
    if not values or not warehouse.has_table(table.name):
        return table.schema.empty_table()
    parts = []
    for i in range(0, len(values), _IN_CHUNK):
        listed = ", ".join(literal(v) for v in values[i : i + _IN_CHUNK])
        parts.append(
            warehouse.query_arrow(
                f"SELECT {', '.join(table.schema.names)} FROM {table.name} "
                f"WHERE {column} IN ({listed}){extra}"
            )
            .select(table.schema.names)
            .cast(table.schema)
        )
    return pa.concat_tables(parts)


def window_state(window_counts: pa.Table, run_id: str) -> pa.Table:
    """The batch's ``telemetry_window_counts`` rows (one per window, gateway, component)."""
    frame = pl.from_arrow(window_counts)
    assert isinstance(frame, pl.DataFrame)
    summed = frame.group_by(*_WINDOW_KEY, "component").agg(pl.col("count").sum())
    summed = summed.with_columns(
        batch_id=pl.lit(run_id), loaded_at=pl.lit(None, pl.Datetime("us", "UTC"))
    ).sort(*_WINDOW_KEY, "component")
    return summed.select(STATE.schema.names).to_arrow().cast(STATE.schema)


def stored_counts(warehouse: Warehouse, windows: pl.DataFrame, extra: str = "") -> pa.Table:
    """The stored ``telemetry_window_counts`` rows of ``windows`` (``_WINDOW_KEY`` rows)."""
    starts = windows.get_column("window_start").to_list()
    return _rows_where_in(warehouse, STATE, "window_start", starts, sql_timestamp, extra=extra)


def recompute_windows(warehouse: Warehouse, state: pa.Table, run_id: str) -> pa.Table:
    """``telemetry_minutely`` rows of every window in ``state``, from all batches' counts."""
    frame = pl.from_arrow(state)
    assert isinstance(frame, pl.DataFrame)
    touched = frame.select(_WINDOW_KEY).unique()
    earlier = stored_counts(warehouse, touched, extra=f" AND batch_id <> {_text(run_id)}")
    return window_metrics_of(pa.concat_tables([earlier, state]), touched, run_id)


def window_metrics_of(counts: pa.Table, windows: pl.DataFrame, run_id: str) -> pa.Table:
    """``telemetry_minutely`` rows of ``windows`` from ``counts``, every batch's counts of
    them (``TELEMETRY_WINDOW_COUNTS_V1`` rows; rows of other windows are ignored)."""
    frame = pl.from_arrow(counts.select(STATE.schema.names))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.join(windows.select(_WINDOW_KEY), on=_WINDOW_KEY, how="semi")
    summed = frame.group_by(*_WINDOW_KEY, "component").agg(pl.col("count").sum())
    windows: dict[tuple, dict[str, int]] = {}
    for start, end, gateway, component, n in summed.iter_rows():
        windows.setdefault((start, end, gateway), {})[component] = n
    rows = [
        {
            "window_start": s,
            "window_end": e,
            "window_seconds": int((e - s).total_seconds()),
            "gateway": g,
            **metric,
            "run_id": run_id,
        }
        for (s, e, g), counts in sorted(windows.items())
        for metric in window_metrics(counts)
    ]
    return pa.Table.from_pylist(rows, schema=MINUTELY.schema)


def merge_requests(
    warehouse: Warehouse, partials: pa.Table, run_id: str
) -> tuple[pa.Table, set[date]]:
    """The batch's requests merged with their stored rows, and every day they are or were on."""
    stored = _rows_where_in(
        warehouse, FACTS, "request_id", partials.column("request_id").to_pylist(), _text
    )
    earlier = stored.select(partials.column_names).cast(partials.schema)
    merged = reduce_requests(pa.concat_tables([earlier, partials]), run_id)
    days = set(merged.column("day").to_pylist()) | set(stored.column("day").to_pylist())
    return merged, {d for d in days if d is not None}


def recompute_conversion(
    warehouse: Warehouse, merged: pa.Table, days: set[date], run_id: str
) -> pa.Table:
    """``payment_conversion`` of ``days`` from all their requests, ``merged`` replacing the
    stored versions; a cohort that no longer has requests on a day gets a row of zeros."""
    others = _rows_where_in(warehouse, FACTS, "day", days, _date)
    others = others.filter(
        pc.invert(pc.is_in(others["request_id"], value_set=merged["request_id"]))
    )
    rolled = conversion_rollup(pa.concat_tables([others, merged]), run_id)
    before = _rows_where_in(warehouse, CONVERSION, "day", days, _date)
    key = ["day", "country", "payment_method_type", "card_brand"]
    emptied = (
        pl.from_arrow(before.select(key))
        .join(pl.from_arrow(rolled.select(key)), on=key, how="anti")  # type: ignore[arg-type]
        .with_columns(
            attempts=pl.lit(0),
            successes=pl.lit(0),
            failures=pl.lit(0),
            pending=pl.lit(0),
            conversion=pl.lit(None, pl.Float64),
            run_id=pl.lit(run_id),
        )
    )
    zeros = emptied.select(rolled.schema.names).to_arrow().cast(rolled.schema)
    return pa.concat_tables([rolled, zeros])


def _health(request, plan: ReadPlan, run_id: str, started: datetime, staging: str, windows):
    counts = read_staged(staging, "counts", MESSAGE_COUNTS).to_pylist()
    dead = read_staged(staging, "dead_letters", DEAD_LETTER_V1).column("reason").to_pylist()
    messages = sum(c["messages"] for c in counts)
    decoded = sum(c["decoded"] for c in counts)
    conserved = messages == decoded + len(dead)
    by_reason: dict[str, int] = {}
    for reason in dead:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    span = (started, started)
    if windows.num_rows:  # the event time the batch covers, by its smallest windows
        size = pc.subtract(windows["window_end"], windows["window_start"]).cast(pa.int64())
        smallest = windows.filter(pc.equal(size, pc.min(size)))
        span = (pc.min(smallest["window_start"]).as_py(),
                pc.max(smallest["window_end"]).as_py())  # fmt: skip
    return health_row(
        job="telemetry", run_id=run_id, window=span, started_at=started,
        finished_at=datetime.now(UTC), status="succeeded" if conserved else "data_quality_failed",
        exit_code=0 if conserved else 1,
        counts={
            "records_in": messages, "records_out": decoded, "dead_letters": len(dead),
            "dead_letters_by_reason": dict(sorted(by_reason.items())), "quarantined": 0,
            "dq_failures": 0 if conserved else 1, "counts_conserved": conserved,
            "offsets": plan.to_json(),
        },
    )  # fmt: skip


def finish_batch(
    request, plan: ReadPlan, run_id: str, staging: str, *, started: datetime, lag: pa.Table
) -> int:
    """Load the batch with what it changes and the consumer ``lag`` measured when it
    started, then commit; returns the exit code."""
    from pipelines.telemetry import WINDOW_COUNTS

    state = window_state(read_staged(staging, "window_counts", WINDOW_COUNTS), run_id)
    partials = read_staged(staging, "request_partials", partial_schema())
    with open_warehouse(request.warehouse) as warehouse:
        widen_tables(warehouse)
        minutely = recompute_windows(warehouse, state, run_id)
        derived = derive(request, warehouse, minutely, partials, lag, run_id)
        health = _health(request, plan, run_id, started, staging, state)
        warehouse.load({STATE: state, **derived.tables(), TABLES["recon_health"]: health})
    row = health.to_pylist()[0]
    if not row["counts_conserved"]:
        print(f"payrecon telemetry: counts do not add up: {row}", file=sys.stderr)
        return 1
    alerts = publish_alerts(request, derived.anomalies)
    commit_offsets(
        request.bootstrap_servers, request.group_id, plan.ranges, request.kafka_overrides,
        forward_only=True, timeout=request.broker_timeout,
    )  # fmt: skip
    print(
        f"\ntelemetry run {run_id}: {row['records_in']:,} messages, {row['records_out']:,} "
        f"decoded, {row['dead_letters']:,} dead-lettered; {derived.summary(alerts, request)}"
    )
    return 0


class Derived(NamedTuple):
    """What a finish step computes from the recomputed windows and the merged requests."""

    minutely: pa.Table
    facts: pa.Table
    days: set[date]
    conversion: pa.Table
    anomalies: pa.Table
    stalled: pa.Table
    lag: pa.Table

    def tables(self) -> dict:
        return {MINUTELY: self.minutely, FACTS: self.facts, CONVERSION: self.conversion,
                ANOMALIES: self.anomalies, LAG: self.lag}  # fmt: skip

    def summary(self, alerts: int, request) -> str:
        windows = self.minutely.select(_WINDOW_KEY).group_by(_WINDOW_KEY).aggregate([])
        return (
            f"{self.minutely.num_rows:,} metric rows over {windows.num_rows:,} windows; "
            f"{self.facts.num_rows:,} payment requests; conversion of {len(self.days)} day(s) "
            f"recomputed; consumer lag of {self.lag.num_rows:,} partition(s), "
            f"{self.stalled.num_rows} stalled; {alerts} anomal{'y' if alerts == 1 else 'ies'} "
            f"alerted on {request.alerts_topic}"
        )


def derive(
    request, warehouse: Warehouse, minutely: pa.Table, partials: pa.Table, lag: pa.Table,
    run_id: str,
) -> Derived:  # fmt: skip
    """Requests merged with ``partials``, conversion of their days, and the anomalies of
    ``minutely`` (the recomputed windows), of the cohorts and of the consumer ``lag``."""
    facts, days = merge_requests(warehouse, partials, run_id)
    conversion = recompute_conversion(warehouse, facts, days, run_id)
    detected_at = datetime.now(UTC)
    stalled = stalled_anomalies(
        warehouse, lag, stall_after=timedelta(seconds=request.stall_after_s),
        groups=request.stall_groups, run_id=run_id, detected_at=detected_at,
    )  # fmt: skip
    drops = detect_cohort_drops(warehouse, minutely, facts, run_id, detected_at)
    conversion = with_cohort_drops(warehouse, conversion, drops)
    anomalies = pa.concat_tables(
        [detect_anomalies(warehouse, minutely, run_id, detected_at), drops, stalled]
    )
    return Derived(minutely, facts, days, conversion, anomalies, stalled, lag)
