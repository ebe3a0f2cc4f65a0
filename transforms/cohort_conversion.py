"""Checkout friction by cohort: a significance test of each cohort's recent conversion.

A cohort is (``country``, ``payment_method_type``, ``card_brand``). The whole-traffic
``conversion`` of ``transforms.anomaly`` hides a drop in one cohort (a card network down in
one country is a few percent of all payments); comparing every cohort's conversion raw
raises false alarms on the small ones (3 declines in a row of a cohort that pays 5 times an
hour). So each cohort is compared with itself, with a test that knows how many payments it
has seen:

* **windows**: the model is evaluated at the end of 1-minute windows (the minute windows a
  telemetry micro-batch touched). For the window ``[s, s + 1 min)`` and each recent span
  ``k`` of ``recent_minutes`` (2 and 10):

  - **recent**: the cohort's requests whose first call is in the last ``k`` minutes up to
    the window's end, ``[s + 1 min - k, s + 1 min)``;
  - **baseline**: its requests in the ``baseline_minutes`` before those,
    ``[s + 1 min - k - baseline_minutes, s + 1 min - k)``.

  The short span sees a drop of a big cohort at full strength by its second minute; the
  long one gives cohorts of a few payments a minute enough requests to be tested at all
  (later, as it must be: a small cohort needs more minutes to show anything). Each cohort's
  row is its most significant span (``model`` says which).

* **conversion** on each side is ``successes / decided``: requests that succeeded over
  requests with a final outcome (succeeded, failed, dead-lettered, gave up). Pending
  requests (``requires_action``, ``processing``, no result yet) are left out: they resolve
  later, so the recent side always holds more of them than its older baseline, which would
  read as a drop on every voucher cohort.

* **test**: a one-sided test of the two proportions on the arcsine scale (``arcsine_z``):
  each side's conversion ``p`` becomes the angle ``2 asin(sqrt p)``, whose variance is
  ``1 / n`` whatever ``p``, so ``z = (angle_recent - angle_base) / sqrt(1/n_recent +
  1/n_base)`` (Cohen's h scaled by ``sqrt(n_recent n_base / (n_recent + n_base))``) and
  ``p_value = P(Z <= z) = erfc(-z / sqrt 2) / 2``. One-sided because only a drop is
  friction; a cohort converting better is no alert. Why not the textbook pooled z-test
  (``two_proportion_z``, ``z = (p_recent - p_base) / sqrt(p (1 - p) (1/n_recent +
  1/n_base))``, still here for comparison): at conversions near 90% a recent side of 30 to
  80 requests is skewed, its lower tail far heavier than the normal's, and the pooled test
  reads that tail as significance. The transform removes most of the skew, so the test's
  alpha means what it says (see the defaults below).

* **minimum sample**: a cohort is tested only with at least ``min_recent`` decided requests
  in the recent window and ``min_baseline`` in the baseline, and with the textbook's
  success-failure condition: at least ``min_expected`` successes and as many failures
  expected on each side under the pooled proportion. Below that a short streak of declines
  is what small cohorts do, and the normal approximation is wrong where alerts live: at a
  conversion of 95%, 40 requests have 2 expected failures, and the binomial's lower tail at
  z = -5 is far heavier than the normal's. Those windows get no row and never alert.

* **correction for many cohorts**: every window tests all its eligible cohorts, each over
  both spans, at once, so a window is a family of ``tests`` hypotheses; Bonferroni keeps the
  chance that a normal window alerts on *any* of them below ``alpha``
  (``p_value * tests <= alpha``). Bonferroni rather than Benjamini-Hochberg because an alert
  pages someone: the family-wise error is the number on-call cares about, and with a few to
  a few hundred tests per window Bonferroni costs little power (the z threshold moves from
  -5.2 for one test to -6.0 for a hundred). The family is one window, not one micro-batch,
  so the result does not depend on how the stream was cut into batches.

* **minimum effect**: a significant drop alerts only when it is at least ``min_drop``
  (absolute) below the baseline. A big cohort has so many requests that a drop of half a
  point is "significant"; nobody should be paged for it.

* **severity**: ``critical`` when the drop is at least ``critical_drop``, else ``warning``.

Why these defaults (measured with ``bench/cohort_calibration.py`` on the tests' generator,
``tests/telemetry_helpers.cohort_minutes``: six cohorts of 0.5 to 40 requests a minute,
conversion 72-95% drifting with the hour; figures in BENCHMARKS.md):

* ``test = "arcsine_z"``. Over 200 generated normal weeks the pooled z-test alerted in 5 at
  ``alpha = 1e-7`` (24 at 1e-6): about 25 times what its alpha promises. The arcsine test
  alerted in none at 1e-7 or 1e-6 and in 7 at 1e-5, no more than its alpha allows (the
  smallest ``p_value * tests`` of any normal window was 1.8e-6; the pooled test's 1.9e-8).
  The price is power on modest drops at the same alpha: a cohort of 20 a minute going from
  84% to 60% is alerted about as often (27 against 28 of 32 drops) but a window or two
  later, smaller cohorts' drops less often (21 against 36 of 96). Each at the largest
  alpha without a false alarm over those weeks (pooled 1e-8, arcsine 1e-6), the two catch
  about as much (93 and 87 of 160 drops); the arcsine's alpha needs no tuning to the
  traffic's conversions.
* ``alpha = 1e-7`` per window. A week has 10 080 minute windows, so a test that holds its
  alpha pages on a normal week about once in twenty years; 1e-6 would be once in two and
  alert modest drops of small cohorts more often. A window of five tests needs a z of about
  -5.5, a little stricter than the seasonal model's score 5.
* ``recent_minutes = (2, 10)``. With the 2-minute span, a cohort of 40 requests a minute
  whose conversion halves is alerted in the drop's first or second minute by day (18 of 18
  generated drops between 07:00 and 20:00); at night, with down to a quarter of the volume,
  by its seventh (2 of 14 within two). The 10-minute span tests cohorts of
  3 to 6 requests a minute (depending on their conversion).
* ``baseline_minutes = 120``. The two hours just before are the cohort's normal at that
  time of day (conversion drifts with the hour and the weekday, which a day-long baseline
  would read as drops), hold enough requests for mid-size cohorts, and keep the batch's
  read small. An incident stops being alerted two hours after it began (the drop is then
  the baseline; its alerts stay).
* ``min_recent = 30``, ``min_baseline = 200``, ``min_expected = 5`` (the textbook's five
  successes and five failures): the normal approximation needs them, on the arcsine scale
  too, and the small alpha covers the rest of its optimism.
* ``min_drop = 0.05``, ``critical_drop = 0.15``: five points of lost checkouts is worth a
  look, fifteen is an outage.

Pure: polars frames in, polars frames out, no clock and no IO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from transforms.payment_request_facts import FAILED, UNKNOWN

COHORT = ["country", "payment_method_type", "card_brand"]
METRIC = "cohort_conversion"
TESTS = ("arcsine_z", "two_proportion_z")
ACTION = (
    "cohort conversion drop: check this cohort's decline codes, its payment method or card "
    "network status, and the latest checkout change that reaches it"
)
_MINUTE = timedelta(minutes=1)

COUNT_SCHEMA: dict[str, pl.DataType] = {
    "minute": pl.Datetime("us", "UTC"),
    **{c: pl.String() for c in COHORT},
    "decided": pl.Int64(),
    "successes": pl.Int64(),
}
SCORE_COLUMNS = [
    "window_start", *COHORT, "dims", "value", "expected", "se", "score", "p_value", "tests",
    "events", "baseline_attempts", "direction", "severity", "suggested_action", "model",
]  # fmt: skip


@dataclass(frozen=True)
class CohortConfig:
    """The test's knobs (see the module docstring)."""

    recent_minutes: tuple[int, ...] = (2, 10)
    baseline_minutes: int = 120
    min_recent: int = 30
    min_baseline: int = 200
    min_expected: int = 5
    min_drop: float = 0.05
    critical_drop: float = 0.15
    alpha: float = 1e-7
    test: str = "arcsine_z"

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"test {self.test!r}: one of {', '.join(TESTS)}")

    @property
    def lookback(self) -> timedelta:
        """How far before a window's start the test reads requests."""
        return timedelta(minutes=max(self.recent_minutes) + self.baseline_minutes)


def cohort_dims() -> pl.Expr:
    """``country=..,payment_method_type=..,card_brand=..``: a cohort as anomaly ``dims``."""
    parts: list[pl.Expr | str] = []
    for i, c in enumerate(COHORT):
        parts += [f"{',' if i else ''}{c}=", pl.col(c)]
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def one_sided_p(z: float) -> float:
    """``P(Z <= z)`` for a standard normal ``Z``: the p-value of a drop as large as ``z``."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def minute_counts(requests: pl.DataFrame) -> pl.DataFrame:
    """Decided requests and successes per cohort and minute (``COUNT_SCHEMA``).

    ``requests`` has ``at`` (the request's event time, UTC), the ``COHORT`` columns and
    ``status`` (``fact_payment_requests.status``). Unknown cohort values are ``?`` as in
    ``payment_conversion``; pending requests are not counted (see the module docstring).
    """
    status = pl.col("status")
    decided = requests.filter(
        pl.col("at").is_not_null() & ((status == "succeeded") | status.is_in(list(FAILED)))
    )
    return (
        decided.with_columns(pl.col(c).fill_null(UNKNOWN) for c in COHORT)
        .group_by(*COHORT, minute=pl.col("at").dt.truncate("1m"))
        .agg(decided=pl.len(), successes=(status == "succeeded").sum())
        .select(list(COUNT_SCHEMA))
        .cast(COUNT_SCHEMA)  # type: ignore[arg-type]
        .sort("minute", *COHORT)
    )


def _cumulative_at(grid: pl.DataFrame, running: pl.DataFrame, shift: timedelta, name: str):
    """The cohort's running totals over the minutes up to ``window_start - shift``."""
    keyed = grid.with_columns(key=pl.col("window_start") - shift).sort("key")
    joined = keyed.join_asof(
        running, left_on="key", right_on="minute", by=COHORT, check_sortedness=False
    )
    return joined.select(
        "window_start", *COHORT,
        pl.col("cum_decided").fill_null(0).alias(f"{name}_decided"),
        pl.col("cum_successes").fill_null(0).alias(f"{name}_successes"),
    )  # fmt: skip


def _sides(
    counts: pl.DataFrame, windows: pl.Series, recent_minutes: int, baseline_minutes: int
) -> pl.DataFrame:
    """Per window and cohort: decided requests and successes of the recent window and the
    baseline, as differences of running totals (one as-of join per boundary)."""
    running = counts.sort("minute").with_columns(
        cum_decided=pl.col("decided").cum_sum().over(COHORT),
        cum_successes=pl.col("successes").cum_sum().over(COHORT),
    )
    starts = pl.DataFrame({"window_start": windows.cast(COUNT_SCHEMA["minute"])}).unique()
    grid = counts.select(COHORT).unique().join(starts, how="cross")
    recent = timedelta(minutes=recent_minutes)
    end = _cumulative_at(grid, running, timedelta(0), "end")
    mid = _cumulative_at(grid, running, recent, "mid")
    first = _cumulative_at(grid, running, recent + timedelta(minutes=baseline_minutes), "first")
    key = ["window_start", *COHORT]
    both = end.join(mid, on=key).join(first, on=key)
    return both.select(
        *key,
        recent_minutes=pl.lit(recent_minutes, pl.Int64),
        n_recent=pl.col("end_decided") - pl.col("mid_decided"),
        x_recent=pl.col("end_successes") - pl.col("mid_successes"),
        n_base=pl.col("mid_decided") - pl.col("first_decided"),
        x_base=pl.col("mid_successes") - pl.col("first_successes"),
    )


def _difference(test: str) -> tuple[pl.Expr, pl.Expr]:
    """The recent side's difference from the baseline on the test's scale, and its standard
    error: conversions themselves with the pooled variance (``two_proportion_z``), or their
    angles ``2 asin(sqrt(p))``, whose variance is ``1 / n`` whatever ``p`` (``arcsine_z``)."""
    n1, x1, n2, x2 = (pl.col(c).cast(pl.Float64) for c in ("n_base", "x_base", "n_recent",
                                                           "x_recent"))  # fmt: skip
    if test == "arcsine_z":
        angle = [2 * (x / n).sqrt().arcsin() for x, n in ((x2, n2), (x1, n1))]
        return angle[0] - angle[1], (1 / n1 + 1 / n2).sqrt()
    pooled = (x1 + x2) / (n1 + n2)
    return x2 / n2 - x1 / n1, (pooled * (1 - pooled) * (1 / n1 + 1 / n2)).sqrt()


def _z_test(sides: pl.DataFrame, test: str) -> pl.DataFrame:
    """``test`` (a ``TESTS`` name) of each row's recent side against its baseline: ``score``
    is its z, ``se`` its standard error, ``pooled`` the pooled conversion (for the minimum
    sample)."""
    n1, x1, n2, x2 = (pl.col(c) for c in ("n_base", "x_base", "n_recent", "x_recent"))
    difference, se = _difference(test)
    scored = sides.filter(pl.col("n_base") > 0, pl.col("n_recent") > 0)
    scored = scored.with_columns(
        value=x2 / n2, expected=x1 / n1, pooled=(x1 + x2) / (n1 + n2), difference=difference,
        se=se,
    )  # fmt: skip
    return scored.with_columns(
        score=pl.when(pl.col("se") > 0)
        .then(pl.col("difference") / pl.col("se"))
        .otherwise(0.0)  # every request of both sides succeeded (or none did): no drop
    )


def _testable(config: CohortConfig) -> pl.Expr:
    """The minimum sample: enough requests on both sides, and enough expected successes and
    failures on both sides under the pooled proportion."""
    expected_each = [
        pl.min_horizontal(pl.col("pooled"), 1 - pl.col("pooled")) * pl.col(n) >= config.min_expected
        for n in ("n_recent", "n_base")
    ]
    return (
        (pl.col("n_recent") >= config.min_recent)
        & (pl.col("n_base") >= config.min_baseline)
        & expected_each[0]
        & expected_each[1]
    )


def score_cohorts(
    counts: pl.DataFrame, windows: pl.Series, config: CohortConfig = CohortConfig()
) -> pl.DataFrame:
    """Test every cohort with enough requests at each of ``windows`` (window starts, UTC).

    ``counts`` is :func:`minute_counts` of the requests from at least ``config.lookback``
    before the first window to the end of the last one (earlier rows do no harm). One row
    per window and tested cohort (``SCORE_COLUMNS``), its most significant recent span:
    ``value`` the recent conversion, ``expected`` the baseline's, ``se`` the test's standard
    error on its scale (of the angles for ``arcsine_z``), ``score`` its z, ``p_value``
    one-sided, ``tests`` the tests made in that window (the Bonferroni factor), ``events``
    and ``baseline_attempts`` the decided requests of each side, ``model``
    ``<config.test>_<k>m`` (``arcsine_z_2m``) for the span of the last k minutes;
    ``severity`` is null unless the drop is significant and large enough.
    """
    if counts.is_empty() or windows.is_empty():
        return _empty()
    counts = counts.cast(COUNT_SCHEMA)  # type: ignore[arg-type]
    sides = pl.concat(
        _sides(counts, windows, span, config.baseline_minutes) for span in config.recent_minutes
    )
    scored = _z_test(sides, config.test).filter(_testable(config))
    scored = scored.with_columns(
        p_value=pl.col("score").map_elements(one_sided_p, return_dtype=pl.Float64),
        tests=pl.len().over("window_start").cast(pl.Int64),
    )
    drop = pl.col("expected") - pl.col("value")
    significant = (pl.col("p_value") * pl.col("tests") <= config.alpha) & (drop >= config.min_drop)
    judged = scored.with_columns(
        severity=pl.when(significant & (drop >= config.critical_drop))
        .then(pl.lit("critical"))
        .when(significant)
        .then(pl.lit("warning"))
    )
    return (
        judged.sort(
            "window_start", *COHORT, pl.col("severity").is_null(), "p_value", "recent_minutes"
        )
        .unique(["window_start", *COHORT], keep="first", maintain_order=True)
        .with_columns(
            dims=cohort_dims(),
            events=pl.col("n_recent"),
            baseline_attempts=pl.col("n_base"),
            direction=pl.lit("down"),
            suggested_action=pl.lit(ACTION),
            model=pl.concat_str(pl.lit(f"{config.test}_"), pl.col("recent_minutes"), pl.lit("m")),
        )
        .select(SCORE_COLUMNS)
    )


def cohort_drops(
    counts: pl.DataFrame, windows: pl.Series, config: CohortConfig = CohortConfig()
) -> pl.DataFrame:
    """The windows and cohorts whose conversion dropped significantly (severity not null)."""
    return score_cohorts(counts, windows, config).filter(pl.col("severity").is_not_null())


def _empty() -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {
        "window_start": pl.Datetime("us", "UTC"), **{c: pl.String() for c in COHORT},
        "dims": pl.String(), "value": pl.Float64(), "expected": pl.Float64(),
        "se": pl.Float64(), "score": pl.Float64(), "p_value": pl.Float64(),
        "tests": pl.Int64(), "events": pl.Int64(), "baseline_attempts": pl.Int64(),
        "direction": pl.String(), "severity": pl.String(), "suggested_action": pl.String(),
        "model": pl.String(),
    }  # fmt: skip
    return pl.DataFrame(schema=schema)
