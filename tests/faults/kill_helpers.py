"""What the kill tests share: a job run as a killable subprocess, and the state compared with
a clean run's (warehouse tables without their clock columns, committed offsets).

The ``jobs`` fixture (tests/faults/conftest.py) starts :class:`Job` s and kills any left.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120.0
KILL_ROUNDS = int(os.environ.get("PAYRECON_KILL_ROUNDS") or 1)

# (table, column names, row) -> the row as compared with a clean run's
Normalise = Callable[[str, list[str], tuple], tuple]


class Job:
    """One ``python -m <module>`` in a new session (a kill takes every process it started);
    stderr lines are collected with the time they arrived, stdout goes to a file."""

    def __init__(self, module: str, argv: list[str], log_dir: Path, name: str):
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self._seen = threading.Condition()
        self.out_path = log_dir / f"{name}.stdout"
        self.started = time.monotonic()
        with self.out_path.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, *argv],
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

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill()
        return code

    def stdout(self) -> str:
        return self.out_path.read_text()

    def stderr_tail(self, n: int = 25) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


def kill_seed() -> int:
    """The random kill points' seed: ``PAYRECON_KILL_SEED`` to replay a run, else a new one."""
    return int(os.environ.get("PAYRECON_KILL_SEED") or random.SystemRandom().randrange(10**6))


def start_and_kill(
    start: Callable[[str, list[str], str], Job],
    module: str,
    argv: list[str],
    kill: tuple[str, str | None, float],
    context: str,
) -> None:
    """Start the job, wait for the stderr line starting with ``kill[1]`` (None: do not),
    sleep ``kill[2]`` seconds, and SIGKILL it. ``start`` is the ``jobs`` fixture."""
    name, line, delay = kill
    job = start(module, argv, name)
    if line is not None:
        assert job.wait_for(line) is not None, f"{context}: never saw it\n{job.stderr_tail()}"
    time.sleep(delay)
    job.kill()


def snapshot(
    warehouse: Path, tables: Iterable[str], normalise: Normalise | None = None
) -> dict[str, list[tuple]]:
    """Every table's rows (a missing table or file: none), normalised and sorted."""
    if not warehouse.exists():
        return {table: [] for table in tables}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        present = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        rows = {}
        for table in tables:
            if table not in present:
                rows[table] = []
                continue
            cursor = con.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            rows[table] = sorted(
                (normalise(table, names, row) if normalise else row for row in cursor.fetchall()),
                key=repr,
            )
    return rows


def assert_all_or_nothing(
    warehouse: Path,
    loaded_together: tuple[str, ...],
    clean_tables: dict,
    context: str,
    normalise: Normalise | None = None,
) -> str:
    """The file opens, and the run's load (``loaded_together``, one transaction) is either
    absent or complete and equal to the clean run's."""
    try:
        tables = snapshot(warehouse, loaded_together, normalise)
    except duckdb.Error as exc:
        pytest.fail(f"{context}: the warehouse does not open after the kill: {exc}")
    loaded = {t for t in loaded_together if tables[t]}
    if not loaded:
        return "nothing loaded"
    assert loaded == set(loaded_together), f"{context}: a partial load is visible: {loaded}"
    for table in loaded_together:
        assert tables[table] == clean_tables[table], f"{context}: {table} differs from clean"
    return "load complete"


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[tuple[int, int]]:
    """The group's committed offset of each partition of ``topic`` (negative: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return [(tp.partition, tp.offset) for tp in offsets]
