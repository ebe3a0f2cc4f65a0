"""The durable embedded broker stopped or killed and restarted, on the same directory and
port, while ``payrecon reconcile`` runs (issue 9): the job completes or exits 3 with a
one-line reason (never hangs), a rerun ends in exactly one clean run's tables, published
discrepancy ids and committed offsets, and no message published before a restart is lost.

Two restarts per run, at the points where a lost broker can cost data:

* just after the job says it runs the pipeline: the bounded Kafka read of the ledger and
  the publish of discrepancies are in flight (the broker is stopped: SIGTERM);
* just after it says it loads the warehouse: every discrepancy was acknowledged before the
  broker went away, and the offset commit, which comes after the load, meets a broker that
  is down or just back (the broker is killed: SIGKILL, no orderly shutdown).

The broker stays down ``DOWN_S`` seconds each time, then starts again (which itself takes
seconds). Even rounds keep the default ``--broker-timeout`` (30 s), which the outage fits
in, so the job itself completes; odd rounds give it 2 s, shorter than the outage, so the
commit fails (exit 3) and a rerun finishes the work (``make test`` runs one round, to stay
fast; ``make faults`` both kinds). After the runs, the broker is killed and restarted once
more before every check, so what is compared is what survived on the restarted broker:
the ledger's message count, the clean run's discrepancies (published before any restart),
and each run's ids and offsets. ``PAYRECON_KILL_ROUNDS`` (default 1; ``make faults`` sets
more) is how many restarted runs there are.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.broker import EmbeddedBroker
from tests.faults.kill_helpers import KILL_ROUNDS, Job
from tests.faults.reconcile_state import (
    JOB,
    LOADING,
    RUNNING,
    TABLES,
    argv,
    offsets,
    published_ids,
    snapshot,
)
from tests.kafka_helpers import consume_all
from tests.reconcile_helpers import published_day

pytestmark = pytest.mark.slow

PARTITIONS = 3
DOWN_S = 3.0
SHORT_TIMEOUT = ["--broker-timeout", "2"]
RESTARTS: tuple[tuple[str, Callable[[EmbeddedBroker], None]], ...] = (
    (RUNNING, EmbeddedBroker.stop),
    (LOADING, EmbeddedBroker.kill),
)


def restart(factory, broker: EmbeddedBroker, down: Callable[[EmbeddedBroker], None]):
    """Take the broker down, wait ``DOWN_S``, start it again on the same port and directory."""
    port, directory = broker.port, broker.durable_dir
    down(broker)
    time.sleep(DOWN_S)
    return factory(durable_dir=directory, port=port)


def finish(job: Job) -> int:
    try:
        return job.finish()
    except subprocess.TimeoutExpired:
        pytest.fail(f"{job.name} hangs after the broker restart\n{job.stderr_tail()}")


def stderr_lines(job: Job) -> list[str]:
    """The job's stderr, which must not carry librdkafka's own log lines (``%3|...|FAIL|``,
    one per reconnection attempt while the broker is down): they go to logging at DEBUG."""
    lines = [line for _, line in job.lines]
    assert not [line for line in lines if line.startswith("%")], lines[-10:]
    return lines


def state(bootstrap: str, day: dict, warehouse: Path, label: str) -> dict:
    return {
        "tables": snapshot(warehouse),
        "ids": published_ids(bootstrap, day, label),
        "offsets": offsets(bootstrap, day, label, PARTITIONS),
    }


def test_reconcile_through_broker_restarts_ends_in_the_state_of_one_clean_run(
    durable_broker_factory, jobs, tmp_path
):
    broker = durable_broker_factory()
    bootstrap = broker.bootstrap_servers  # the same after every restart (same port)
    day = published_day(
        bootstrap,
        tmp_path / "day",
        events=1000,
        seed=37,
        discrepancy_rate=0.03,
        malformed_rate=0.005,
        partitions=PARTITIONS,
    )
    ledger_messages = len(consume_all(bootstrap, day["topic"]))
    clean_job = jobs(JOB, argv(bootstrap, day, tmp_path / "clean.duckdb", "clean"), "clean")
    assert finish(clean_job) == 0, clean_job.stderr_tail()
    clean = state(bootstrap, day, tmp_path / "clean.duckdb", "clean")
    assert clean["ids"], "the day has discrepancies to publish"

    history, restarts = [], 0
    for round_ in range(KILL_ROUNDS):
        label = f"restarted{round_}"
        run = argv(bootstrap, day, tmp_path / f"{label}.duckdb", label)
        if round_ % 2 == 1:
            run += SHORT_TIMEOUT
        job = jobs(JOB, run, label)
        for line, down in RESTARTS:
            if job.wait_for(line) is None:
                break  # the job ended after the previous restart
            broker = restart(durable_broker_factory, broker, down)
            restarts += 1
            history.append(f"{label}: {down.__name__} at {line!r}")
        code = finish(job)
        lines = stderr_lines(job)
        history.append(f"{label}: exit {code}, {lines[-1]!r}")
        if code != 0:
            assert code == 3, f"{history}\n{job.stderr_tail()}"
            assert lines[-1].startswith("payrecon reconcile: "), f"{history}\n{lines[-10:]}"
            assert not any(line.startswith("Traceback") for line in lines), lines
            rerun = jobs(JOB, run, f"{label}-rerun")
            assert finish(rerun) == 0, f"{history}\n{rerun.stderr_tail()}"

    broker = restart(durable_broker_factory, broker, EmbeddedBroker.kill)
    restarts += 1
    print(f"broker restarts survived: {restarts}; {history}")
    assert len(consume_all(bootstrap, day["topic"])) == ledger_messages, history
    assert published_ids(bootstrap, day, "clean") == clean["ids"], history
    for round_ in range(KILL_ROUNDS):
        label = f"restarted{round_}"
        final = state(bootstrap, day, tmp_path / f"{label}.duckdb", label)
        for table in TABLES:
            assert final["tables"][table] == clean["tables"][table], f"{history}: {table}"
        assert final["ids"] == clean["ids"], history
        assert final["offsets"] == clean["offsets"], history
