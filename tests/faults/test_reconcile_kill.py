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

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.kafka_helpers import consume_all
from tests.reconcile_helpers import published_day, reconcile_argv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
LOADING = "==> loading the warehouse"
RUNNING = "==> running the pipeline"
# Loaded together in one transaction by the job; a kill shows all of them or none.
LOADED_TOGETHER = (
    "recon_runs",
    "recon_discrepancies",
    "recon_matches",
    "fact_ledger_events",
    "fact_balance_transactions",
    "dq_results",
)
TABLES = (*LOADED_TOGETHER, "daily_revenue")
RUN_TIMEOUT_S = 120.0
KILL_ROUNDS = int(os.environ.get("PAYRECON_KILL_ROUNDS") or 1)


class Job:
    """One ``python -m pipelines.reconcile`` in a new session; stderr lines are collected
    with the time they arrived, stdout goes to a file."""

    def __init__(self, argv: list[str], log_dir: Path, name: str):
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self._seen = threading.Condition()
        self.out_path = log_dir / f"{name}.stdout"
        self.started = time.monotonic()
        with self.out_path.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.reconcile", *argv],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, prefix: str, timeout: float = RUN_TIMEOUT_S) -> float | None:
        """Seconds since the start when a stderr line starting with ``prefix`` arrived; None
        if the job ended (or the timeout passed) without one."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for at, line in self.lines:
                    if line.startswith(prefix):
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    return None
                self._seen.wait(min(left, 0.05))

    def kill(self) -> None:
        """SIGKILL the job's whole process group (a no-op if it already ended)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)

    def finish(self) -> int:
        try:
            code = self.process.wait(timeout=RUN_TIMEOUT_S)
        finally:
            self.kill()
        return code

    def stderr_tail(self, n: int = 25) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Callable[[list[str], str], Job]]:
    """``start(argv, name) -> Job``; every job still running at teardown is killed."""
    started: list[Job] = []

    def start(argv: list[str], name: str) -> Job:
        job = Job(argv, tmp_path, name)
        started.append(job)
        return job

    yield start
    for job in started:
        job.kill()


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
    """The reconcile flags for this day; ``label`` names this
    scenario's discrepancies topic and consumer group."""
    return reconcile_argv(
        broker.bootstrap_servers,
        day,
        warehouse,
        discrepancies_topic=discrepancies_topic(day, label),
        group_id=group(day, label),
    )


def discrepancies_topic(day: dict, label: str) -> str:
    return f"{day['topic']}.{label}.discrepancies"


def group(day: dict, label: str) -> str:
    return f"g-{day['topic']}-{label}"


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted; recon_runs without its clock columns (started_at,
    finished_at, and the plan's planned_at_ms inside ``offsets``), which no rerun repeats."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        present = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        tables = {}
        for table in TABLES:
            if table not in present:
                tables[table] = []
                continue
            cursor = con.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            tables[table] = sorted(
                (_without_clocks(table, names, row) for row in cursor.fetchall()), key=repr
            )
    return tables


def _without_clocks(table: str, names: list[str], row: tuple) -> tuple:
    if table != "recon_runs":
        return row
    values = dict(zip(names, row, strict=True))
    del values["started_at"], values["finished_at"]
    offsets = json.loads(values["offsets"])
    offsets.pop("planned_at_ms", None)
    values["offsets"] = offsets
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


def committed(broker, day: dict, label: str) -> list[tuple[int, int]]:
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": group(day, label)}
    )
    try:
        offsets = consumer.committed(
            [TopicPartition(day["topic"], p) for p in range(PARTITIONS)], timeout=10
        )
    finally:
        consumer.close()
    return [(tp.partition, tp.offset) for tp in offsets]


def published_ids(broker, day: dict, label: str) -> set[str]:
    return {
        m.key().decode()
        for m in consume_all(broker.bootstrap_servers, discrepancies_topic(day, label))
    }


@pytest.fixture(scope="module")
def clean(broker, day, tmp_path_factory) -> dict:
    """One uninterrupted run: its tables, published ids, committed offsets and timings."""
    log_dir = tmp_path_factory.mktemp("clean")
    warehouse = log_dir / "clean.duckdb"
    job = Job(argv(broker, day, warehouse, "clean"), log_dir, "clean")
    try:
        assert job.finish() == 0, job.stderr_tail()
    finally:
        job.kill()
    duration = time.monotonic() - job.started
    running_at, loading_at = job.wait_for(RUNNING, 0), job.wait_for(LOADING, 0)
    assert running_at is not None and loading_at is not None, job.stderr_tail()
    return {
        "tables": snapshot(warehouse),
        "ids": published_ids(broker, day, "clean"),
        "offsets": committed(broker, day, "clean"),
        "duration_s": duration,
        "running_at_s": running_at,
        "loading_at_s": loading_at,
    }


def assert_all_or_nothing(warehouse: Path, clean_tables: dict, context: str) -> str:
    """The file opens, and the run's main load is either absent or complete."""
    try:
        tables = snapshot(warehouse)
    except duckdb.Error as exc:
        pytest.fail(f"{context}: the warehouse does not open after the kill: {exc}")
    loaded = {t for t in LOADED_TOGETHER if tables[t]}
    if not loaded:
        return "nothing loaded"
    assert loaded == set(LOADED_TOGETHER), f"{context}: a partial load is visible: {loaded}"
    for table in LOADED_TOGETHER:
        assert tables[table] == clean_tables[table], f"{context}: {table} differs from clean"
    return "main load complete"


def test_killed_runs_then_a_rerun_leave_the_state_of_one_clean_run(
    broker, day, clean, jobs, tmp_path
):
    seed = int(os.environ.get("PAYRECON_KILL_SEED") or random.SystemRandom().randrange(10**6))
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
        job = jobs(run, name)
        if line is not None:
            assert job.wait_for(line) is not None, f"{context}: never saw it\n{job.stderr_tail()}"
        time.sleep(delay)
        job.kill()
        history.append(f"{name}: {assert_all_or_nothing(warehouse, clean['tables'], context)}")

    print(f"seed {seed}: {len(history)} kills: {history}")
    rerun = jobs(run, "rerun")
    assert rerun.finish() == 0, f"seed {seed}, {history}\n{rerun.stderr_tail()}"

    final = snapshot(warehouse)
    for table in TABLES:
        assert final[table] == clean["tables"][table], f"seed {seed}, {history}: {table}"
    assert published_ids(broker, day, "killed") == clean["ids"], f"seed {seed}, {history}"
    assert committed(broker, day, "killed") == clean["offsets"], f"seed {seed}, {history}"


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
