"""The cohort conversion test (``transforms.cohort_conversion``) on generated cohort traffic:
a normal week raises nothing, one cohort's drop is alerted within two windows, a tiny
cohort's bad streak is not, and the tests' z and p-values are the textbooks'."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest

from tests.telemetry_helpers import BR_ELO, MONDAY, US_VISA, cohort_minutes
from transforms.cohort_conversion import (
    CohortConfig,
    cohort_drops,
    minute_counts,
    score_cohorts,
)


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


def _one_window(baseline: tuple[int, int], recent: tuple[int, int], config: CohortConfig):
    """A cohort's row for one window with ``(decided, successes)`` an hour before it (its
    baseline) and in it (its recent side)."""
    window = MONDAY + timedelta(hours=3)
    counts = pl.DataFrame(
        {"minute": [window - timedelta(minutes=60), window], "country": ["US", "US"],
         "payment_method_type": ["card", "card"], "card_brand": ["visa", "visa"],
         "decided": [baseline[0], recent[0]], "successes": [baseline[1], recent[1]]},
    )  # fmt: skip
    (row,) = score_cohorts(counts, pl.Series([window]), config).to_dicts()
    return row


def test_the_arcsine_tests_z_is_cohens_h_scaled_by_the_sample_sizes():
    """From 50% to 25% is Cohen's h = 2 asin(sqrt .5) - 2 asin(sqrt .25) = pi/2 - pi/3 =
    pi/6 exactly; 800 requests a side scale it by sqrt(800 * 800 / 1600) = 20."""
    row = _one_window((800, 400), (800, 200), CohortConfig())
    assert (row["expected"], row["value"], row["model"]) == (0.5, 0.25, "arcsine_z_2m")
    assert row["score"] == pytest.approx(-20 * math.pi / 6)
    assert row["p_value"] == pytest.approx(0.5 * math.erfc(20 * math.pi / 6 / math.sqrt(2)))
    assert row["severity"] == "critical"


def test_the_p_value_of_the_pooled_test_is_the_textbooks_two_proportion_z_test():
    """Illowsky & Dean, *Introductory Statistics* (OpenStax), the hives example: 20 of 200
    against 12 of 200, pooled proportion 0.08, two-tailed p-value 0.1404."""
    row = _one_window((200, 20), (200, 12), CohortConfig(test="two_proportion_z"))
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
