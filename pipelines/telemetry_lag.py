"""Consumer lag in a telemetry micro-batch: measure it, keep it, alert on stalled consumers.

Each run measures the lag of the consumer groups (``--lag-groups``, every group the broker
lists by default) when it starts (``transforms.consumer_lag``), loads the measurements into
``telemetry_consumer_lag`` in the batch's one transaction, and judges the watched groups
(``--stall-groups``) from those measurements and the stored ones of the last
``HISTORY_DAYS`` (``transforms.consumer_stall``). A stalled group becomes a
``telemetry_anomalies`` row (metric ``consumer_stalled``) and an alert on
``telemetry.alerts`` like any anomaly, keyed by the stall's start, so a stall that lasts is
one alert republished with its latest lag, and a stall that ends stops being published.

Measurements are keyed by the time they were taken: a retried batch adds its own (it did
look at the broker again), it never replaces one.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa

from pipelines.telemetry_alerts import open_anomalies, resolve, sql_timestamp
from schemas.tables import TABLES
from transforms.anomaly import UP, alert_id
from transforms.consumer_lag import PartitionLag
from transforms.consumer_stall import DIMS, METRIC, MODEL, action_of, stalls
from transforms.warehouse import Warehouse

LAG = TABLES["telemetry_consumer_lag"]
ANOMALIES = TABLES["telemetry_anomalies"]
HISTORY_DAYS = 7


def lag_rows(lags: list[PartitionLag], measured_at: datetime, run_id: str) -> pa.Table:
    """The ``telemetry_consumer_lag`` rows of one measurement."""
    rows = [
        {
            "measured_at": measured_at, "group_id": x.group_id, "topic": x.topic,
            "partition": x.partition, "committed_offset": x.committed, "end_offset": x.end,
            "lag": x.lag, "run_id": run_id,
        }
        for x in lags
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=LAG.schema)


def _stored(warehouse: Warehouse, groups: Collection[str], since: datetime) -> pa.Table:
    if not groups or not warehouse.has_table(LAG.name):
        return LAG.schema.empty_table()
    listed = ", ".join("'" + g.replace("'", "''") + "'" for g in sorted(groups))
    return (
        warehouse.query_arrow(
            f"SELECT {', '.join(LAG.schema.names)} FROM {LAG.name} "
            f"WHERE group_id IN ({listed}) AND measured_at >= {sql_timestamp(since)}"
        )
        .select(LAG.schema.names)
        .cast(LAG.schema)
    )


def stalled_anomalies(
    warehouse: Warehouse,
    measured: pa.Table,
    *,
    stall_after: timedelta,
    groups: Collection[str],
    run_id: str,
    detected_at: datetime,
) -> pa.Table:
    """``telemetry_anomalies`` rows of the watched groups stalled as of this measurement,
    and of their earlier stalls that ended (resolved).

    Both carry the run's ``detected_at``: a stall found now as its ``detected_at``, an ended
    one as its ``resolved_at``, as resolved windows and cohorts get it
    (``pipelines.telemetry_alerts.resolve``). That is when payrecon judged it, the one
    notion every metric has (a window made normal by late data has no measurement time of
    its own), so the rows one run resolves share one ``resolved_at`` whatever their metric.
    When the offsets were read stays in ``telemetry_consumer_lag.measured_at``."""
    if measured.num_rows == 0 or not groups:
        return ANOMALIES.schema.empty_table()
    now = measured.column("measured_at")[0].as_py()
    stored = _stored(warehouse, groups, now - timedelta(days=HISTORY_DAYS))
    frame = pl.from_arrow(pa.concat_tables([stored, measured]))
    assert isinstance(frame, pl.DataFrame)
    found = stalls(frame, now, stall_after, groups).with_columns(dims=DIMS)
    rows = []
    for s in found.iter_rows(named=True):
        dims = s["dims"]
        rows.append(
            {
                "window_start": s["stalled_since"], "metric": METRIC, "dims": dims,
                "value": float(s["lag"]), "expected": 0.0, "mad": 0.0,
                "score": s["stalled_seconds"] / stall_after.total_seconds(),
                "direction": UP, "severity": "critical",
                "suggested_action": action_of(
                    s["group_id"], s["topic"], s["partition"], s["lag"], s["stalled_seconds"]
                ),
                "model": MODEL, "baseline_points": s["measurements"],
                "alert_id": alert_id(s["stalled_since"], METRIC, dims),
                "detected_at": detected_at, "run_id": run_id,
            }
        )  # fmt: skip
    stalled = pa.Table.from_pylist(rows, schema=ANOMALIES.schema)
    ended = _ended(warehouse, frame, now, groups, stalled, run_id, detected_at)
    return pa.concat_tables([stalled, ended])


def _ended(
    warehouse,
    frame: pl.DataFrame,
    now,
    groups,
    stalled: pa.Table,
    run_id: str,
    detected_at: datetime,
) -> pa.Table:
    """The open stalls of the series measured now that are not stalled now (or stalled
    since a later start: a new stall), resolved as of ``detected_at``."""
    measured_now = frame.filter((pl.col("measured_at") == now) & pl.col("group_id").is_in(groups))
    series = measured_now.select(dims=DIMS)
    was_open = open_anomalies(warehouse, f"metric = '{METRIC}'").join(series, on="dims", how="semi")
    still = pl.from_arrow(stalled.select(["window_start", "dims"]))
    assert isinstance(still, pl.DataFrame)
    ended = was_open.join(
        still.with_columns(pl.col("window_start").cast(pl.Datetime("us", "UTC"))),
        on=["window_start", "dims"],
        how="anti",
    )
    return resolve(was_open, ended.select("window_start", "metric", "dims"), run_id, detected_at)
