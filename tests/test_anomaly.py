"""The anomaly model (``transforms.anomaly``) on generated minute metrics: a normal week with
a daily and weekly shape raises nothing; injected incidents are alerted within two windows;
a cold start never alerts before it has ``min_points`` points."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from transforms.anomaly import ModelConfig, anomalies, score_windows

MONDAY = datetime(2026, 11, 16, tzinfo=UTC)
DIMS = "gateway=*"


def normal(minute: datetime, metric: str, rng: random.Random) -> float:
    """A metric's normal value at ``minute``: a daily shape, a weekend shift and noise."""
    day_phase = math.sin(2 * math.pi * (minute.hour * 60 + minute.minute) / 1440)
    weekend = minute.weekday() >= 5
    if metric == "rate_429":
        return max(0.0, 0.01 + 0.005 * day_phase + rng.gauss(0, 0.003))
    if metric == "latency_p95":
        return 600 + 200 * day_phase + (80 if weekend else 0) + rng.gauss(0, 25)
    if metric == "webhook_coverage":  # a few webhooks land in the next minute, a few early
        return 1.0 + rng.gauss(0, 0.01)
    return min(1.0, 0.8 - 0.05 * day_phase - (0.02 if weekend else 0) + rng.gauss(0, 0.01))


def minutes(start: datetime, count: int, *, seed: int, incident=None) -> pl.DataFrame:
    """``count`` minute windows of rate_429, latency_p95, conversion and webhook_coverage
    from ``start``;
    ``incident(metric, i, value)`` may replace the value of minute ``i``."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        at = start + timedelta(minutes=i)
        for metric in ("rate_429", "latency_p95", "conversion", "webhook_coverage"):
            value = normal(at, metric, rng)
            if incident is not None:
                value = incident(metric, i, value)
            rows.append((at, metric, DIMS, value, 200))
    return pl.DataFrame(
        rows,
        schema={"window_start": pl.Datetime("us", "UTC"), "metric": pl.String,
                "dims": pl.String, "value": pl.Float64, "events": pl.Int64},
        orient="row",
    )  # fmt: skip


@pytest.fixture(scope="module")
def week() -> pl.DataFrame:
    return minutes(MONDAY, 7 * 1440, seed=1)


def test_a_normal_week_raises_no_alert(week):
    scores = score_windows(week, week)
    assert scores.height > 0.9 * week.height, "most of the week must be scored"
    # the first day is a cold start; no weekday has an earlier week yet
    assert set(scores["model"]) == {"global", "seasonal_daily"}
    assert anomalies(week, week).is_empty()


def test_the_week_after_a_normal_week_is_scored_by_weekday_and_hour(week):
    monday = minutes(MONDAY + timedelta(days=7), 120, seed=2)
    scores = score_windows(week, monday)
    assert set(scores["model"]) == {"seasonal_weekly"}
    assert scores.filter(pl.col("severity").is_not_null()).is_empty()


STORM_START = 600  # minute of the day after the normal week


@pytest.mark.parametrize(
    ("metric", "bad_value"),
    [("rate_429", 0.45), ("latency_p95", 2500.0), ("conversion", 0.45), ("webhook_coverage", 0.0)],
    ids=["429_storm", "latency_spike", "conversion_drop", "webhooks_dropped"],
)
def test_an_incident_is_alerted_within_two_windows(week, metric, bad_value):
    def incident(m: str, i: int, value: float) -> float:
        return bad_value if m == metric and i >= STORM_START else value

    day = minutes(MONDAY + timedelta(days=7), STORM_START + 20, seed=3, incident=incident)
    found = anomalies(pl.concat([week, day]), day)
    assert set(found["metric"]) == {metric}
    first = found["window_start"].min()
    assert first <= MONDAY + timedelta(days=7, minutes=STORM_START + 1)
    expected_direction = "down" if metric in ("conversion", "webhook_coverage") else "up"
    assert set(found["direction"]) == {expected_direction}
    assert found["suggested_action"][0]


def test_an_incident_in_the_history_does_not_become_normal(week):
    """Yesterday's 30-minute storm at 10:00 does not hide today's storm at 10:00."""
    yesterday_storm = minutes(
        MONDAY + timedelta(days=7), 1440, seed=4,
        incident=lambda m, i, v: 0.45 if m == "rate_429" and 600 <= i < 630 else v,
    )  # fmt: skip
    today = minutes(
        MONDAY + timedelta(days=8), 620, seed=5,
        incident=lambda m, i, v: 0.45 if m == "rate_429" and i >= 600 else v,
    )  # fmt: skip
    found = anomalies(pl.concat([week, yesterday_storm, today]), today)
    assert found.filter(pl.col("metric") == "rate_429").height == 20


def test_a_cold_start_never_alerts_before_min_points():
    config = ModelConfig(min_points=30)
    storm = lambda m, i, v: 0.45 if m == "rate_429" and i >= 25 else v  # noqa: E731
    early = minutes(MONDAY, 30, seed=6, incident=storm)  # minute i has i points before it
    assert anomalies(early, early, config).is_empty(), "25 to 29 points are too few"

    late_storm = lambda m, i, v: 0.45 if m == "rate_429" and i >= 40 else v  # noqa: E731
    later = minutes(MONDAY, 45, seed=6, incident=late_storm)
    found = anomalies(later, later, config)
    assert found["model"].unique().to_list() == ["global"]
    assert found["window_start"].min() == MONDAY + timedelta(minutes=40)


def test_windows_with_too_few_events_are_not_scored(week):
    quiet = minutes(MONDAY + timedelta(days=7), 10, seed=7).with_columns(events=pl.lit(3))
    assert score_windows(week, quiet).is_empty()
