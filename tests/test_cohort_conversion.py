"""The cohort conversion test (``transforms.cohort_conversion``) on generated cohort traffic:
a normal week raises nothing, one cohort's drop is alerted within two windows, a tiny
cohort's bad streak is not, and the p-value is the textbook two-proportion z-test's."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from transforms.cohort_conversion import (
    COHORT,
    COUNT_SCHEMA,
    CohortConfig,
    cohort_drops,
    minute_counts,
    score_cohorts,
)

MONDAY = datetime(2026, 11, 16, tzinfo=UTC)
# (country, payment method, card brand): decided requests a minute at the daily peak, and
# conversion. The last cohort is tiny: a request every two minutes or so.
COHORTS = {
    ("US", "card", "visa"): (40.0, 0.86),
    ("US", "card", "mastercard"): (20.0, 0.84),
    ("FR", "card", "visa"): (12.0, 0.80),
    ("JP", "konbini", "?"): (6.0, 0.72),
    ("DE", "sepa_debit", "?"): (15.0, 0.92),
    ("BR", "card", "elo"): (0.5, 0.95),
}
US_VISA, BR_ELO = ("US", "card", "visa"), ("BR", "card", "elo")
Incident = dict[tuple[str, str, str], tuple[int, float]]


def cohort_minutes(start: datetime, count: int, *, seed: int, incident: Incident | None = None):
    """Decided requests and successes per cohort and minute: volume follows the day (a
    quarter of the peak at night), conversion drifts two points with the hour and dips one
    point at weekends; ``incident[cohort] = (minute, conversion)`` sets the cohort's
    conversion from that minute on."""
    rng = np.random.default_rng(seed)
    minutes = [start + timedelta(minutes=i) for i in range(count)]
    phase = np.array([2 * math.pi * (m.hour * 60 + m.minute) / 1440 for m in minutes])
    weekend = np.array([m.weekday() >= 5 for m in minutes])
    frames = []
    for cohort, (peak, conversion) in COHORTS.items():
        rate = peak * (0.625 - 0.375 * np.cos(phase))
        p = conversion + 0.02 * np.sin(phase) - 0.01 * weekend
        if incident and cohort in incident:
            first, bad = incident[cohort]
            p = np.where(np.arange(count) >= first, bad, p)
        decided = rng.poisson(rate)
        frames.append(
            pl.DataFrame(
                {"minute": minutes, "decided": decided, "successes": rng.binomial(decided, p)}
            ).with_columns(pl.lit(v).alias(c) for v, c in zip(cohort, COHORT, strict=True))
        )
    counts = pl.concat(frames).select(list(COUNT_SCHEMA)).cast(COUNT_SCHEMA)  # type: ignore[arg-type]
    return counts.filter(pl.col("decided") > 0)


def windows_of(counts: pl.DataFrame) -> pl.Series:
    return counts["minute"].unique().sort()


@pytest.fixture(scope="module")
def week() -> pl.DataFrame:
    return cohort_minutes(MONDAY, 7 * 1440, seed=1)


def test_a_normal_week_of_cohort_traffic_raises_no_alert(week):
    scores = score_cohorts(week, windows_of(week))
    tested = set(scores["dims"].str.extract(r"country=(\w+)"))
    assert tested == {"US", "FR", "JP", "DE"}, "every cohort but the tiny one is tested"
    assert scores.height > 0.8 * 4 * 7 * 1440
    assert scores.filter(pl.col("severity").is_not_null()).is_empty()


def test_one_cohorts_conversion_drop_is_alerted_within_two_windows(week):
    drop_at = 600  # 10:00 on the Monday after the normal week
    day = cohort_minutes(
        MONDAY + timedelta(days=7), drop_at + 20, seed=3, incident={US_VISA: (drop_at, 0.45)}
    )
    history = pl.concat([week, day])
    found = cohort_drops(history, windows_of(day))
    assert set(found["dims"]) == {"country=US,payment_method_type=card,card_brand=visa"}
    assert found["window_start"].min() <= MONDAY + timedelta(days=7, minutes=drop_at + 1)
    assert set(found["direction"]) == {"down"} and "critical" in set(found["severity"])
    assert (found["expected"] - found["value"]).min() >= CohortConfig().min_drop


def test_a_tiny_cohorts_bad_streak_does_not_alert(week):
    """Every payment of a cohort that pays every two minutes or so declined for twenty
    minutes: from 95% to 0 on a handful of requests, which a test without the minimum
    sample calls significant (the normal approximation is wrong on so few)."""
    start = MONDAY + timedelta(days=7)
    streak = cohort_minutes(start, 600, seed=4, incident={BR_ELO: (580, 0.0)})
    bad = streak.filter(
        (pl.col("country") == "BR") & (pl.col("minute") >= start + timedelta(minutes=580))
    )
    assert bad["decided"].sum() >= 5 and bad["successes"].sum() == 0, "a real streak"
    history = pl.concat([week, streak])
    no_minimum = CohortConfig(min_recent=1, min_baseline=1, min_expected=0)
    assert set(cohort_drops(history, windows_of(streak), no_minimum)["dims"]) == {
        "country=BR,payment_method_type=card,card_brand=elo"
    }
    assert cohort_drops(history, windows_of(streak)).is_empty()


def test_the_p_value_is_the_two_proportion_z_tests():
    """Illowsky & Dean, *Introductory Statistics* (OpenStax), the hives example: 20 of 200
    against 12 of 200, pooled proportion 0.08, two-tailed p-value 0.1404."""
    window = MONDAY + timedelta(hours=3)
    counts = pl.DataFrame(
        {"minute": [window - timedelta(minutes=60), window], "country": ["US", "US"],
         "payment_method_type": ["card", "card"], "card_brand": ["visa", "visa"],
         "decided": [200, 200], "successes": [20, 12]},
    )  # fmt: skip
    (row,) = score_cohorts(counts, pl.Series([window])).to_dicts()
    assert (row["expected"], row["value"]) == (0.1, 0.06)
    assert row["score"] == pytest.approx(-1.474, abs=1e-3)
    assert 2 * row["p_value"] == pytest.approx(0.1404, abs=1e-4)
    assert row["severity"] is None


def test_minute_counts_leave_pending_requests_out():
    at = MONDAY + timedelta(seconds=30)
    requests = pl.DataFrame(
        {"at": [at] * 5, "country": ["US"] * 4 + [None], "payment_method_type": ["card"] * 5,
         "card_brand": ["visa"] * 5,
         "status": ["succeeded", "failed", "requires_action", None, "dead_lettered"]},
    )  # fmt: skip
    rows = minute_counts(requests).to_dicts()
    assert [(r["country"], r["minute"], r["decided"], r["successes"]) for r in rows] == [
        ("?", MONDAY, 1, 0),
        ("US", MONDAY, 2, 1),
    ]
