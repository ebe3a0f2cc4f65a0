"""Anomalies of a telemetry micro-batch: score the minute windows it touched, publish alerts.

After ``telemetry_minutely`` is recomputed (``pipelines.telemetry_finish``), every 1-minute
window the batch touched is scored by the seasonal median/MAD model (``transforms.anomaly``)
against the history of its series in the warehouse (the minute windows of the same metric
and gateway over the model's ``history_days`` before it), read with one plain SQL query that
runs on every warehouse. The batch's own recomputed rows replace their stored versions in
that history, so a window is scored with the values being loaded.

The anomalous windows become ``telemetry_anomalies`` rows (loaded in the batch's one
transaction) and, after the load, one JSON message each on ``telemetry.alerts`` keyed by a
deterministic ``alert_id`` (window, metric, dims): a retried batch, or a later batch that
completes a window with late data, republishes the same id with the latest evidence.
Publishing happens before the offsets are committed: alerts that are not acknowledged fail
the run (exit 3) and the rerun publishes them again.

An anomaly is **resolved** when a later run scores its window again and finds it normal (its
late data made the minute normal): its stored row gets ``resolved_at`` (the evidence of the
anomaly is kept) and its alert is republished under the same id with ``status``
``resolved``, so that a reader keyed by ``alert_id`` (a compacted topic, the gateway) sees
the latest state. Stalled consumers are resolved the same way (``pipelines.telemetry_lag``).

``dims`` is ``gateway=<gateway>``; only the whole-metric rows (``dimension = '*'``) of
the minute windows are scored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from schemas.tables import TABLES
from transforms.anomaly import RULES, ModelConfig, alert_id, score_windows
from transforms.dlq_io import AcknowledgedProducer, Outgoing
from transforms.kafka_offsets import BrokerUnavailable
from transforms.warehouse import Warehouse

ANOMALIES = TABLES["telemetry_anomalies"]
MINUTELY = TABLES["telemetry_minutely"]
_SERIES = ["window_start", "gateway", "metric", "dimension"]
_ANOMALY_KEY = ["window_start", "metric", "dims"]
_ANY_PARTITION = -1


def sql_timestamp(t: datetime) -> str:
    """A UTC timestamp literal every warehouse's SQL reads."""
    return f"TIMESTAMP '{t.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00:00'"


def _scored_rows(minutely: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(minutely)
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(
        (pl.col("window_seconds") == 60)
        & (pl.col("dimension") == "*")
        & pl.col("metric").is_in(list(RULES))
    ).select(pl.col("window_start").cast(pl.Datetime("us", "UTC")), *_SERIES[1:], "value", "events")


def read_history(warehouse: Warehouse, first: datetime, last: datetime, days: int) -> pl.DataFrame:
    """The stored minute windows of the modelled metrics in ``[first - days, last]``."""
    empty = _scored_rows(MINUTELY.schema.empty_table())
    if not warehouse.has_table(MINUTELY.name):
        return empty
    metrics = ", ".join(f"'{m}'" for m in RULES)
    stored = warehouse.query_arrow(
        f"SELECT {', '.join([*_SERIES, 'value', 'events'])} FROM {MINUTELY.name} "
        f"WHERE window_seconds = 60 AND dimension = '*' AND metric IN ({metrics}) "
        f"AND window_start >= {sql_timestamp(first - timedelta(days=days))} "
        f"AND window_start <= {sql_timestamp(last)}"
    )
    frame = pl.from_arrow(stored)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        pl.col("window_start").cast(pl.Datetime("us", "UTC")),
        *_SERIES[1:], pl.col("value").cast(pl.Float64), pl.col("events").cast(pl.Int64),
    ).select(empty.columns)  # fmt: skip


def _model_frame(rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(
        "window_start", "metric", "value", "events",
        dims=pl.concat_str(pl.lit("gateway="), pl.col("gateway")),
    )  # fmt: skip


def detect_anomalies(
    warehouse: Warehouse,
    minutely: pa.Table,
    run_id: str,
    detected_at: datetime,
    config: ModelConfig | None = None,
) -> pa.Table:
    """``telemetry_anomalies`` rows of the minute windows in ``minutely`` (the batch's)."""
    config = config or ModelConfig()
    touched = _scored_rows(minutely)
    if touched.is_empty():
        return ANOMALIES.schema.empty_table()
    first, last = touched["window_start"].min(), touched["window_start"].max()
    stored = read_history(warehouse, first, last, config.history_days)  # type: ignore[arg-type]
    history = pl.concat([stored.join(touched, on=_SERIES, how="anti"), touched])
    scored = score_windows(_model_frame(history), _model_frame(touched), config)
    found = scored.filter(pl.col("severity").is_not_null())
    span = f"window_start >= {sql_timestamp(first)} AND window_start <= {sql_timestamp(last)}"  # type: ignore[arg-type]
    was_open = open_anomalies(warehouse, f"metric IN ({', '.join(map(repr, RULES))}) AND {span}")
    normal = scored.filter(pl.col("severity").is_null()).select(_ANOMALY_KEY)
    return pa.concat_tables(
        [
            anomaly_rows(found.rename({"points": "baseline_points"}), run_id, detected_at),
            resolve(was_open, normal, run_id, detected_at),
        ]
    )


def open_anomalies(warehouse: Warehouse, where: str) -> pl.DataFrame:
    """The stored ``telemetry_anomalies`` rows not yet resolved that match ``where``."""
    if not warehouse.has_table(ANOMALIES.name):
        rows = ANOMALIES.schema.empty_table()
    else:
        rows = (
            warehouse.query_arrow(
                f"SELECT {', '.join(ANOMALIES.schema.names)} FROM {ANOMALIES.name} "
                f"WHERE resolved_at IS NULL AND {where}"
            )
            .select(ANOMALIES.schema.names)
            .cast(ANOMALIES.schema)
        )
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame


def resolve(
    was_open: pl.DataFrame, normal: pl.DataFrame, run_id: str, resolved_at: datetime
) -> pa.Table:
    """The open anomalies among the series found ``normal`` now (``window_start``,
    ``metric``, ``dims``), resolved: same key and evidence, ``resolved_at`` set.

    Every caller passes the run's ``detected_at`` as ``resolved_at`` (windows, cohorts and
    stalls alike): it is when payrecon found the anomaly over, not when the metric changed,
    which for a late-data window has no time of its own."""
    keys = normal.select(pl.col("window_start").cast(pl.Datetime("us", "UTC")), "metric", "dims")
    done = was_open.with_columns(pl.col("window_start").cast(pl.Datetime("us", "UTC"))).join(
        keys.unique(), on=_ANOMALY_KEY, how="semi"
    )
    done = done.with_columns(resolved_at=pl.lit(resolved_at), run_id=pl.lit(run_id))
    return done.to_arrow().select(ANOMALIES.schema.names).cast(ANOMALIES.schema)


def anomaly_rows(found: pl.DataFrame, run_id: str, detected_at: datetime) -> pa.Table:
    """``telemetry_anomalies`` rows of a model's anomalies (its columns named as the table's,
    the ones it has no evidence for left null), each with its deterministic ``alert_id``."""
    rows = [
        {**row, "alert_id": alert_id(row["window_start"], row["metric"], row["dims"]),
         "detected_at": detected_at, "run_id": run_id}
        for row in found.to_dicts()
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=ANOMALIES.schema)


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot encode {type(value).__name__}")


def alert_messages(found: pa.Table, topic: str) -> list[Outgoing]:
    """One message per anomaly: key ``alert_id``, value the row with its window's end and
    its ``status``: ``open``, or ``resolved`` once a later run found it normal again."""
    messages = []
    for row in found.to_pylist():
        row["window_end"] = row["window_start"] + timedelta(minutes=1)
        row["status"] = "open" if row["resolved_at"] is None else "resolved"
        value = json.dumps(row, default=_json_default, sort_keys=True).encode()
        messages.append(
            Outgoing(topic, _ANY_PARTITION, row["alert_id"].encode(), value,
                     timestamp_ms=int(row["detected_at"].timestamp() * 1000))
        )  # fmt: skip
    return messages


def publish_alerts(request, found: pa.Table) -> int:
    """Publish the anomalies to ``request.alerts_topic``; raises ``BrokerUnavailable`` unless
    every alert was acknowledged. Returns how many were published."""
    messages = alert_messages(found, request.alerts_topic)
    if not messages:
        return 0
    producer = AcknowledgedProducer(request.bootstrap_servers, request.kafka_overrides)
    deliveries = producer.send(messages, timeout=request.broker_timeout)
    failed = [d.error for d in deliveries if d.error is not None]
    if failed:
        raise BrokerUnavailable(
            f"{len(failed)} of {len(messages)} alerts to {request.alerts_topic} not "
            f"acknowledged ({failed[0]}); nothing committed, rerun to publish them"
        )
    return len(messages)
