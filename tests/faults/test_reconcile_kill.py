"""SIGKILL of ``payrecon reconcile`` at any point, then a rerun, gives the state of one clean
run: the same warehouse tables, no discrepancy id a clean run would not publish, and the same
committed consumer offsets (issue 4, "Done when").

The job runs as a subprocess in its own session, so a kill takes every process it started.
Kill points: random moments within a clean run's duration (seeded; set
``PAYRECON_KILL_SEED`` to replay one), just before the warehouse load, and just after the
job says it is loading the warehouse. After every kill the DuckDB file must open and show
either nothing of the run or all of its main load, never a part of it.
``PAYRECON_KILL_ROUNDS`` (default 1; ``make faults`` sets more) repeats those four kills,
each round with new random delays, before the rerun.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.faults.kill_helpers import (
    KILL_ROUNDS,
    Job,
    assert_all_or_nothing,
    kill_seed,
    start_and_kill,
)
from tests.faults.reconcile_state import (
    JOB,
    LOADED_TOGETHER,
    LOADING,
    RUNNING,
    TABLES,
    published_ids,
    snapshot,
    without_clocks,
)
from tests.faults.reconcile_state import argv as scenario_argv
from tests.faults.reconcile_state import offsets as scenario_offsets
from tests.reconcile_helpers import published_day

pytestmark = pytest.mark.slow

PARTITIONS = 3


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory) -> dict:
    """A generated day (every discrepancy kind, malformed lines), published once."""
    return published_day(
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("kill-day"),
        events=3000,
        seed=29,
        discrepancy_rate=0.02,
        malformed_rate=0.005,
        partitions=PARTITIONS,
    )


def argv(broker, day: dict, warehouse: Path, label: str) -> list[str]:
    return scenario_argv(broker.bootstrap_servers, day, warehouse, label)


def offsets(broker, day: dict, label: str) -> list[tuple[int, int]]:
    return scenario_offsets(broker.bootstrap_servers, day, label, PARTITIONS)


@pytest.fixture(scope="module")
def clean(broker, day, tmp_path_factory) -> dict:
    """One uninterrupted run: its tables, published ids, committed offsets and timings."""
    log_dir = tmp_path_factory.mktemp("clean")
    warehouse = log_dir / "clean.duckdb"
    job = Job(JOB, argv(broker, day, warehouse, "clean"), log_dir, "clean")
    try:
        assert job.finish() == 0, job.stderr_tail()
    finally:
        job.kill()
    duration = time.monotonic() - job.started
    running_at, loading_at = job.wait_for(RUNNING, 0), job.wait_for(LOADING, 0)
    assert running_at is not None and loading_at is not None, job.stderr_tail()
    return {
        "tables": snapshot(warehouse),
        "ids": published_ids(broker.bootstrap_servers, day, "clean"),
        "offsets": offsets(broker, day, "clean"),
        "duration_s": duration,
        "running_at_s": running_at,
        "loading_at_s": loading_at,
    }


def test_killed_runs_then_a_rerun_leave_the_state_of_one_clean_run(
    broker, day, clean, jobs, tmp_path
):
    seed = kill_seed()
    draw = random.Random(seed)
    duration = clean["duration_s"]
    before_load = max(0.0, clean["loading_at_s"] - clean["running_at_s"] - 0.4)
    warehouse = tmp_path / "killed.duckdb"
    run = argv(broker, day, warehouse, "killed")
    # (name, wait for this stderr line first or None, then sleep this long, then SIGKILL)
    kills = []
    for _ in range(KILL_ROUNDS):
        kills += [
            ("random", None, draw.uniform(0.1, 0.9) * duration),
            ("before-load", RUNNING, before_load),
            ("load-start", LOADING, 0.0),
            ("mid-load", LOADING, draw.uniform(0.05, 0.35)),
        ]
    history = []
    for name, line, delay in kills:
        context = f"seed {seed}, kill {name} ({delay:.2f}s after {line or 'start'})"
        start_and_kill(jobs, JOB, run, (name, line, delay), context)
        outcome = assert_all_or_nothing(
            warehouse, LOADED_TOGETHER, clean["tables"], context, without_clocks
        )
        history.append(f"{name}: {outcome}")

    print(f"seed {seed}: {len(history)} kills: {history}")
    rerun = jobs(JOB, run, "rerun")
    assert rerun.finish() == 0, f"seed {seed}, {history}\n{rerun.stderr_tail()}"

    final = snapshot(warehouse)
    for table in TABLES:
        assert final[table] == clean["tables"][table], f"seed {seed}, {history}: {table}"
    assert published_ids(broker.bootstrap_servers, day, "killed") == clean["ids"], (
        f"seed {seed}, {history}"
    )
    assert offsets(broker, day, "killed") == clean["offsets"], f"seed {seed}, {history}"


class SimulatedCrash(BaseException):
    """Stands for a SIGKILL at one exact point of an in-process run."""


def test_a_crash_after_the_first_committed_load_leaves_no_table_without_the_others(
    broker, day, tmp_path, monkeypatch
):
    """Whatever the job loads, it loads in one transaction: a crash the instant the first
    load committed (before any further load, and before the offsets) leaves every table,
    daily_revenue included, loaded together."""
    from pipelines import reconcile_finish
    from pipelines.reconcile import main
    from transforms.warehouse.duckdb_sink import DuckDBWarehouse

    real_load = DuckDBWarehouse.load
    loads = []

    def load_then_crash(self, batches):
        if loads:
            raise SimulatedCrash
        real_load(self, batches)
        loads.append(sorted(t.name for t in batches))

    def crash(*_args, **_kwargs):
        raise SimulatedCrash

    monkeypatch.setattr(DuckDBWarehouse, "load", load_then_crash)
    monkeypatch.setattr(reconcile_finish, "commit_offsets", crash)
    warehouse = tmp_path / "crashed.duckdb"

    with pytest.raises(SimulatedCrash):
        main(argv(broker, day, warehouse, "crash"))

    tables = snapshot(warehouse)
    loaded = {t for t in TABLES if tables[t]}
    assert loaded == set(TABLES), f"visible after the crash: {sorted(loaded)}, loads {loads}"
