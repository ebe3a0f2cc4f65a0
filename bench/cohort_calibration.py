"""The cohort conversion test's calibration: false alarms on normal weeks, delay on drops.

Both tests of ``transforms.cohort_conversion`` (``TESTS``: the pooled two-proportion z-test
and the arcsine test), with the same minimum sample, Bonferroni family, alpha and minimum
drop, on the same generated traffic in the same run (the tests' generator,
``tests/telemetry_helpers.cohort_minutes``: six cohorts of 0.5 to 40 requests a minute,
conversion 72-95% drifting with the hour and the weekday):

- **normal weeks**: ``--weeks`` weeks of normal traffic (seeds 1..N), every minute window
  tested. Reported: the weeks with at least one alert, the alerting windows, and the
  smallest ``p_value * tests`` seen on any week (how close a normal week came to
  ``alpha``; a drop below ``min_drop`` included).
- **drops**: for each scenario (one cohort's conversion falls to a given level),
  ``--drops`` runs at random times of the week (seeded), each 130 minutes of normal
  traffic then 60 of the drop. The delay is the drop's window that first alerted on that
  cohort: 1 is the drop's first minute; "within 2" is the tests' promise for a clear drop
  of a big cohort. A drop not alerted in its 60 minutes is missed.

    .venv/bin/python bench/cohort_calibration.py                  # 60 weeks, 16 drops each
    .venv/bin/python bench/cohort_calibration.py --weeks 200 --drops 32

Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from common import machine, render_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package

import polars as pl  # noqa: E402

from tests.telemetry_helpers import COHORT_TRAFFIC, MONDAY, cohort_minutes  # noqa: E402
from transforms.cohort_conversion import COHORT, TESTS, CohortConfig, score_cohorts  # noqa: E402

# (cohort, conversion during the drop): big to small cohorts, clear to modest drops.
SCENARIOS = [
    (("US", "card", "visa"), 0.45),
    (("US", "card", "mastercard"), 0.60),
    (("DE", "sepa_debit", "?"), 0.80),
    (("FR", "card", "visa"), 0.60),
    (("JP", "konbini", "?"), 0.40),
]
BEFORE, AFTER = 130, 60  # minutes of normal traffic before a drop, of the drop after it


ALPHAS = (1e-5, 1e-6, 1e-7, 1e-8)


@dataclass
class Calibration:
    """One test's figures at one alpha."""

    weeks_alerted: int = 0
    windows_alerted: int = 0
    delays: dict[int, list[int | None]] = field(default_factory=dict)


Configs = dict[tuple[str, float], CohortConfig]


def normal_week(seed: int, configs: Configs, found: dict, smallest: dict[str, float]) -> None:
    week = cohort_minutes(MONDAY, 7 * 1440, seed=seed)
    windows = week["minute"].unique().sort()
    for (test, alpha), config in configs.items():
        scores = score_cohorts(week, windows, config)
        alerted = scores.filter(pl.col("severity").is_not_null())
        figures = found[test, alpha]
        figures.weeks_alerted += int(not alerted.is_empty())
        figures.windows_alerted += alerted["window_start"].n_unique()
        adjusted = (scores["p_value"] * scores["tests"]).min()
        smallest[test] = min(smallest.get(test, 1.0), adjusted)  # type: ignore[type-var]


def drop_delays(scenario: int, runs: int, configs: Configs, found: dict) -> None:
    cohort, bad = SCENARIOS[scenario]
    rng = random.Random(scenario)
    for run in range(runs):
        drop_at = MONDAY + timedelta(minutes=rng.randrange(BEFORE, 7 * 1440 - AFTER))
        counts = cohort_minutes(
            drop_at - timedelta(minutes=BEFORE), BEFORE + AFTER,
            seed=10_000 * (scenario + 1) + run, incident={cohort: (BEFORE, bad)},
        )  # fmt: skip
        windows = pl.Series([drop_at + timedelta(minutes=i) for i in range(AFTER)])
        for key, config in configs.items():
            scores = score_cohorts(counts, windows, config)
            mine = scores.filter(
                pl.col("severity").is_not_null(),
                *(pl.col(c) == v for c, v in zip(COHORT, cohort, strict=True)),
            )
            first = mine["window_start"].min()
            delay = None if first is None else (first - drop_at) // timedelta(minutes=1) + 1  # type: ignore[operator]
            found[key].delays.setdefault(scenario, []).append(delay)


def scenario_name(scenario: int) -> str:
    cohort, bad = SCENARIOS[scenario]
    peak, conversion = COHORT_TRAFFIC[cohort]
    return f"{'/'.join(cohort)} ({peak:g}/min at peak) {conversion:.0%} -> {bad:.0%}"


def delay_cell(delays: list[int | None]) -> str:
    """``alerted/runs, median (worst)`` delay."""
    seen = [d for d in delays if d is not None]
    if not seen:
        return f"0/{len(delays)}"
    return f"{len(seen)}/{len(delays)}, {statistics.median(seen):g} ({max(seen)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weeks", type=int, default=60, help="normal weeks (default 60)")
    parser.add_argument("--drops", type=int, default=16, help="runs per drop scenario (16)")
    args = parser.parse_args(argv)
    configs = {(t, a): CohortConfig(test=t, alpha=a) for t in TESTS for a in ALPHAS}
    found = {key: Calibration() for key in configs}
    smallest: dict[str, float] = {}
    started = time.perf_counter()
    for seed in range(1, args.weeks + 1):
        normal_week(seed, configs, found, smallest)
    for scenario in range(len(SCENARIOS)):
        drop_delays(scenario, args.drops, configs, found)
    print(f"# {machine()}; {time.perf_counter() - started:.0f} s; default alpha "
          f"{CohortConfig().alpha:g}, test {CohortConfig().test}")  # fmt: skip
    print(f"\n{args.weeks} normal weeks: weeks with an alert (alerting windows)\n")
    print(render_table(
        ["test", *(f"alpha {a:g}" for a in ALPHAS), "smallest p*tests"],
        [[t, *(f"{found[t, a].weeks_alerted} ({found[t, a].windows_alerted})" for a in ALPHAS),
          f"{smallest[t]:.2g}"] for t in TESTS],
    ))  # fmt: skip
    print(f"\nDrops, {args.drops} runs each: alerted, median (worst) delay in windows, 1 = the "
          "drop's first minute; within 2 at the default alpha\n")  # fmt: skip
    default = CohortConfig().alpha
    rows = [
        [scenario_name(s), t, *(delay_cell(found[t, a].delays[s]) for a in ALPHAS),
         str(sum(1 for d in found[t, default].delays[s] if d is not None and d <= 2))]
        for s in range(len(SCENARIOS)) for t in TESTS
    ]  # fmt: skip
    print(render_table(["drop", "test", *(f"alpha {a:g}" for a in ALPHAS), "within 2"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
