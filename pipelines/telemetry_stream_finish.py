"""``payrecon telemetry --finish-only``: the finish step of the streaming job, run periodically.

The streaming job (``pipelines.telemetry_stream``) loads each window pane's counts into
``telemetry_window_counts`` and its partial request rows into ``telemetry_request_partials``
as they fire, each row stamped with ``loaded_at``. This step does what a micro-batch does
after its pipeline (``pipelines.telemetry_finish``, whose functions it calls), for what was
loaded since the last successful finish started:

* every window with a pane loaded since then is recomputed from all of its panes' counts
  (``telemetry_minutely``);
* the requests with partial rows loaded since then are merged with their stored rows
  (``fact_payment_requests``) and the conversion of their days recomputed;
* anomalies of those windows, cohort drops and stalled consumers (from the consumer lag it
  measures, as a micro-batch does) go to ``telemetry_anomalies`` and the alerts topic;
* its ``recon_health`` row (job ``telemetry_finish``) is the cursor of the next run.

The tables are loaded in one transaction, then the alerts are published, and only then is
the ``recon_health`` row written, as a micro-batch commits its offsets last: a run that
fails anywhere before leaves the cursor where it was, and the next run redoes its work.
Recomputing is idempotent (a window's metrics are a function of all its panes), so the next
run looks back ``OVERLAP`` before this run's start: a pane stamped before that start but
committed after this run read is finished next time instead of being missed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.options import UsageError
from pipelines.run_health import health_row, record_failure
from pipelines.telemetry_alerts import publish_alerts, sql_timestamp
from pipelines.telemetry_cohorts import widen_tables
from pipelines.telemetry_finish import STATE, derive, stored_counts, window_metrics_of
from pipelines.telemetry_lag import lag_rows
from pipelines.telemetry_run import TelemetryRequest, measure_groups_lag
from schemas.tables import TABLES
from transforms.kafka_admin import ensure_topics
from transforms.kafka_offsets import BrokerUnavailable
from transforms.payment_request_facts import partial_schema
from transforms.warehouse import Warehouse, WarehouseError, open_warehouse
from transforms.warehouse.base import IncompatibleSchema

JOB = "telemetry_finish"
HEALTH = TABLES["recon_health"]
PARTIALS = TABLES["telemetry_request_partials"]
OVERLAP = timedelta(minutes=5)
_WINDOW_KEY = ["window_start", "window_end", "gateway"]


def finished_since(warehouse: Warehouse) -> datetime | None:
    """Where this run starts: ``OVERLAP`` before the last successful finish started (None:
    there was none, finish everything the streaming job loaded)."""
    if not warehouse.has_table(HEALTH.name):
        return None
    last = (
        warehouse.query_arrow(
            f"SELECT MAX(started_at) AS at FROM {HEALTH.name} "
            f"WHERE job = '{JOB}' AND status = 'succeeded'"
        )
        .column("at")[0]
        .as_py()
    )
    return None if last is None else last - OVERLAP


def _loaded_since(since: datetime | None) -> str:
    return "loaded_at IS NOT NULL" if since is None else f"loaded_at >= {sql_timestamp(since)}"


def changed_windows(warehouse: Warehouse, since: datetime | None) -> pl.DataFrame:
    """The windows (start, end, gateway) with a pane loaded since ``since``."""
    empty = pl.from_arrow(STATE.schema.empty_table().select(_WINDOW_KEY))
    assert isinstance(empty, pl.DataFrame)
    if not warehouse.has_table(STATE.name):
        return empty
    found = warehouse.query_arrow(
        f"SELECT DISTINCT {', '.join(_WINDOW_KEY)} FROM {STATE.name} WHERE {_loaded_since(since)}"
    )
    frame = pl.from_arrow(found.cast(empty.to_arrow().schema))
    assert isinstance(frame, pl.DataFrame)
    return frame


def changed_partials(warehouse: Warehouse, since: datetime | None) -> pa.Table:
    """The partial request rows loaded since ``since``."""
    schema = partial_schema()
    if not warehouse.has_table(PARTIALS.name):
        return schema.empty_table()
    rows = warehouse.query_arrow(
        f"SELECT {', '.join(schema.names)} FROM {PARTIALS.name} WHERE {_loaded_since(since)}"
    )
    return rows.select(schema.names).cast(schema)


def _span(windows: pl.DataFrame, started: datetime) -> tuple[datetime, datetime]:
    """The event time the finished windows cover, by the smallest of them."""
    if windows.is_empty():
        return started, started
    size = pl.col("window_end") - pl.col("window_start")
    smallest = windows.filter(size == windows.select(size.min()).item())
    return smallest["window_start"].min(), smallest["window_end"].max()  # type: ignore[return-value]


def finish_changed(
    request: TelemetryRequest, run_id: str, *, started: datetime, lag: pa.Table
) -> int:
    """Finish what the streaming job loaded since the last finish; returns the exit code."""
    with open_warehouse(request.warehouse) as warehouse:
        widen_tables(warehouse)
        since = finished_since(warehouse)
        windows = changed_windows(warehouse, since)
        counts = stored_counts(warehouse, windows)
        minutely = window_metrics_of(counts, windows, run_id)
        partials = changed_partials(warehouse, since)
        derived = derive(request, warehouse, minutely, partials, lag, run_id)
        warehouse.load(derived.tables())
    alerts = publish_alerts(request, derived.anomalies)
    read = counts.num_rows + partials.num_rows  # warehouse rows, not messages
    health = health_row(
        job=JOB, run_id=run_id, window=_span(windows, started), started_at=started,
        finished_at=datetime.now(UTC), status="succeeded", exit_code=0,
        counts={"records_in": read, "records_out": read, "dead_letters": 0},
    )  # fmt: skip
    with open_warehouse(request.warehouse) as warehouse:
        warehouse.load({HEALTH: health})  # the next run's cursor, once the alerts are out
    changed = pc.count_distinct(partials["request_id"]).as_py() if partials.num_rows else 0
    print(
        f"\ntelemetry finish {run_id}: loaded since "
        f"{since.isoformat() if since else 'the start'}: {windows.height:,} windows, "
        f"{changed:,} requests; {derived.summary(alerts, request)}"
    )
    return 0


def run_finish_only(request: TelemetryRequest, beam_args: list[str]) -> int:
    """One finish step (``beam_args`` are unused: no pipeline runs); returns the exit code."""
    started = datetime.now(UTC)
    run_id = f"telfin_{started:%Y%m%dT%H%M%S%fZ}"
    try:
        ensure_topics(
            request.bootstrap_servers, [request.alerts_topic], overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )  # fmt: skip
        lag = lag_rows(measure_groups_lag(request), datetime.now(UTC), run_id)
        return finish_changed(request, run_id, started=started, lag=lag)
    except (UsageError, IncompatibleSchema) as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        return 2
    except (WarehouseError, BrokerUnavailable) as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        record_failure(
            request.warehouse, job=JOB, run_id=run_id, window=(started, started),
            started_at=started, exit_code=3, error=str(exc),
        )  # fmt: skip
        return 3
