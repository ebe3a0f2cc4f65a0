"""Anomaly detection on ``telemetry_minutely``: a seasonal median/MAD model, scored per window.

The model learns, for each metric and its dimensions (``metric``, ``dims``), what a minute
normally looks like at that time of day (and, with enough history, that time of the week),
from the minute windows of the last ``history_days`` days *before* the window scored:

* **baseline**: the history points in the window's seasonal bucket, tried in this order:

  1. ``seasonal_weekly``: same weekday and hour-of-day (UTC); used once the bucket holds
     ``min_points`` points, from at least ``min_days`` days before the window's own day
     (so from an earlier week);
  2. ``seasonal_daily``: same hour-of-day, ``min_points`` points from at least
     ``min_days`` earlier days;
  3. ``global`` (cold start): every point of the series in the history, whatever its hour;
  4. none: fewer than ``min_points`` points. The window is not scored and never alerts.

* **expected** = the baseline's median, **mad** = its median absolute deviation, and the
  robust z-score ``score = (value - expected) / scale`` with
  ``scale = max(1.4826 * mad, abs_floor, rel_floor * |expected|)``. 1.4826 makes the MAD
  estimate a standard deviation for normal noise; the floors stop a flat series (a 429 rate
  that is always 0, so mad = 0) from turning one stray 429 into an infinite score.

* **direction**: each metric is bad one way only (a 429 rate, an error rate or a latency
  p95 going up; conversion or webhook coverage going down). A window is an anomaly when its
  score in the bad direction reaches ``warn_score`` (severity ``warning``) or
  ``critical_score`` (``critical``). Windows computed from fewer than ``min_events`` calls
  or results are neither scored nor learned from: a minute of 3 calls with one 429 is
  noise, not a storm.

Why median and MAD rather than mean and standard deviation: the history contains past
incidents. A 20-minute 429 storm yesterday would drag a mean up and inflate a standard
deviation for a whole day, teaching the model that storms are normal and hiding the next
one; the median and MAD of a bucket ignore anything less than half of it, so an incident
does not become the baseline until it lasts half the bucket.

Pure: polars frames in, polars frames out, no clock and no IO (``detected_at`` is passed in),
so the same history and windows always give the same scores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

UP, DOWN = "up", "down"
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class MetricRule:
    """How a metric goes wrong: its bad ``direction``, the smallest ``scale`` that counts as
    noise (``abs_floor`` in the metric's unit, ``rel_floor`` as a share of the expected
    value), and what to do about it."""

    direction: str
    abs_floor: float
    rel_floor: float
    action: str


RULES: dict[str, MetricRule] = {
    "rate_429": MetricRule(
        UP, 0.02, 0.0, "429 surge: lower gateway concurrency / honour Retry-After"
    ),
    "error_rate": MetricRule(
        UP, 0.02, 0.0, "error rate spike: check Stripe status and error_rate by reason"
    ),
    "latency_p95": MetricRule(
        UP, 20.0, 0.10, "latency p95 spike: lower gateway concurrency, check Stripe status"
    ),
    "conversion": MetricRule(
        DOWN, 0.03, 0.0, "conversion drop: check decline codes and the latest checkout change"
    ),
    "webhook_coverage": MetricRule(
        DOWN,
        0.05,
        0.0,
        "webhooks missing: check `payrecon webhooks serve` and the endpoint's "
        "failed deliveries in Stripe's dashboard; replay them from Stripe",
    ),
}


@dataclass(frozen=True)
class ModelConfig:
    """The model's knobs (see the module docstring)."""

    history_days: int = 28
    min_points: int = 30
    min_days: int = 1
    min_events: int = 20
    warn_score: float = 5.0
    critical_score: float = 10.0


SCORE_COLUMNS = [
    "window_start", "metric", "dims", "value", "expected", "mad", "score", "direction",
    "severity", "suggested_action", "model", "points",
]  # fmt: skip


def alert_id(window_start: datetime, metric: str, dims: str) -> str:
    """Deterministic: a rerun that finds the same anomaly publishes the same id."""
    identity = f"{window_start.isoformat()}|{metric}|{dims}"
    return "anom_" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def _usable(frame: pl.DataFrame, config: ModelConfig) -> pl.DataFrame:
    return frame.filter(
        pl.col("metric").is_in(list(RULES))
        & pl.col("value").is_not_null()
        & pl.col("value").is_not_nan()
        & (pl.col("events") >= config.min_events)
    ).with_columns(
        hour=pl.col("window_start").dt.hour(),
        dow=pl.col("window_start").dt.weekday(),
    )


def _robust(joined: pl.DataFrame, model: str, priority: int, min_days: int) -> pl.DataFrame:
    value = pl.col("h_value")
    stats = joined.group_by("w").agg(
        expected=value.median(),
        mad=(value - value.median()).abs().median(),
        points=pl.len(),
        days=pl.col("h_day").filter(pl.col("h_day") < pl.col("day")).n_unique(),
    )
    return stats.filter(pl.col("days") >= min_days).with_columns(
        model=pl.lit(model), priority=pl.lit(priority)
    )


def _baselines(windows: pl.DataFrame, history: pl.DataFrame, config: ModelConfig) -> pl.DataFrame:
    """One baseline per window (``w``): the first of weekly, daily, global with enough points."""
    span = timedelta(days=config.history_days)
    past = history.select(
        "metric", "dims", "hour",
        h_start=pl.col("window_start"), h_value=pl.col("value"), h_dow=pl.col("dow"),
        h_day=pl.col("window_start").dt.date(),
    )  # fmt: skip
    keys = windows.select(
        "w", "metric", "dims", "hour", "dow", "window_start", day=pl.col("window_start").dt.date()
    )
    in_range = (pl.col("h_start") < pl.col("window_start")) & (
        pl.col("h_start") >= pl.col("window_start") - span
    )
    same_hour = keys.join(past, on=["metric", "dims", "hour"]).filter(in_range)
    seasonal = [
        _robust(same_hour.filter(pl.col("h_dow") == pl.col("dow")), "seasonal_weekly", 0,
                config.min_days),
        _robust(same_hour, "seasonal_daily", 1, config.min_days),
    ]  # fmt: skip
    seasonal = [s.filter(pl.col("points") >= config.min_points) for s in seasonal]
    cold = keys.join(pl.concat(seasonal).select("w"), on="w", how="anti")
    everything = cold.drop("hour").join(past.drop("hour"), on=["metric", "dims"]).filter(in_range)
    fallback = _robust(everything, "global", 2, 0)
    chosen = pl.concat([*seasonal, fallback]).filter(pl.col("points") >= config.min_points)
    return (
        chosen.sort("w", "priority")
        .unique("w", keep="first", maintain_order=True)
        .drop("priority", "days")
    )


def score_windows(
    history: pl.DataFrame, windows: pl.DataFrame, config: ModelConfig = ModelConfig()
) -> pl.DataFrame:
    """Score ``windows`` against ``history``: one row per window with a baseline.

    Both frames have ``window_start`` (UTC datetime), ``metric``, ``dims``, ``value`` and
    ``events``, one row per minute window (``windows`` may also be in ``history``: only
    points strictly before a window are its baseline). Metrics without a rule, windows with
    too few events and windows without enough history (cold start) get no row. Output:
    ``SCORE_COLUMNS``; ``severity`` is null for a normal window, else warning or critical.
    """
    scored = _usable(windows, config).with_row_index("w")
    if scored.is_empty():
        return _empty()
    baselines = _baselines(scored, _usable(history, config), config)
    rules = pl.DataFrame(
        {
            "metric": list(RULES),
            "direction": [r.direction for r in RULES.values()],
            "abs_floor": [r.abs_floor for r in RULES.values()],
            "rel_floor": [r.rel_floor for r in RULES.values()],
            "suggested_action": [r.action for r in RULES.values()],
        }
    )
    scale = pl.max_horizontal(
        MAD_TO_SIGMA * pl.col("mad"),
        pl.col("abs_floor"),
        pl.col("rel_floor") * pl.col("expected").abs(),
    )
    bad = pl.col("score") * pl.when(pl.col("direction") == UP).then(1.0).otherwise(-1.0)
    return (
        scored.join(baselines, on="w")
        .join(rules, on="metric")
        .with_columns(score=(pl.col("value") - pl.col("expected")) / scale)
        .with_columns(
            severity=pl.when(bad >= config.critical_score)
            .then(pl.lit("critical"))
            .when(bad >= config.warn_score)
            .then(pl.lit("warning"))
        )
        .sort("window_start", "metric", "dims")
        .select(SCORE_COLUMNS)
    )


def anomalies(
    history: pl.DataFrame, windows: pl.DataFrame, config: ModelConfig = ModelConfig()
) -> pl.DataFrame:
    """The scored windows that are anomalies (``severity`` warning or critical)."""
    return score_windows(history, windows, config).filter(pl.col("severity").is_not_null())


def _empty() -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {
        "window_start": pl.Datetime("us", "UTC"), "metric": pl.String(), "dims": pl.String(),
        "value": pl.Float64(), "expected": pl.Float64(), "mad": pl.Float64(),
        "score": pl.Float64(), "direction": pl.String(), "severity": pl.String(),
        "suggested_action": pl.String(), "model": pl.String(), "points": pl.UInt32(),
    }  # fmt: skip
    return pl.DataFrame(schema=schema)
