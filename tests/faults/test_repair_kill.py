"""SIGKILL of ``payrecon repair`` at any point, then a rerun, gives the state of one clean
run (issue 9): the same ``recon_repairs`` and ``recon_health`` rows, the same records on
``ledger.repairs``, ``recon.review`` and the dead-letter topic, and the same committed offsets.

The discrepancies come from one reconcile of a generated day (every kind), plus one
unreadable message for the dead-letter path; Stripe's truth is the day's export, so no
Stripe server is needed (the API path's faults are another module's). The job runs as a
subprocess in its own session, so a kill takes every process it started.

Kill points, each round: a random moment before the clean run's commit (seeded; set
``PAYRECON_KILL_SEED`` to replay one), a random moment within the publish (from its start),
one within the warehouse load (from its start), and the start of the offset commit (the
job's ``==>`` lines on stderr mark the phases; the delays come from the clean run's). After
every kill the DuckDB file must open and show either nothing of the run or all of its load.
A kill that lands after the commit ends the round early: the run was complete, and a later
run handles nothing new.
``PAYRECON_KILL_ROUNDS`` (default 1; ``make faults`` sets more) repeats the round, each with
new random delays and its own consumer group, output topics and warehouse.

Publishing is at least once with deterministic ids (DESIGN.md, "Effectively once": keyed
Kafka writes with deterministic ids, consumers dedupe by id): a killed run's records may be
published again by the rerun, so a topic may hold several copies of one record, but every
copy is byte for byte a record the clean run published, and no other record appears.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.faults.kill_helpers import (
    KILL_ROUNDS,
    Job,
    assert_all_or_nothing,
    committed,
    kill_seed,
    snapshot,
    start_and_kill,
)
from tests.kafka_helpers import consume_all, produce
from tests.reconcile_helpers import published_day, reconcile_day

pytestmark = pytest.mark.slow

JOB = "pipelines.repair"
RUN = "==> run "
PUBLISHING = "==> publishing"
LOADING = "==> loading the warehouse"
COMMITTING = "==> committing the offsets"
LOADED_TOGETHER = ("recon_repairs", "recon_health")
# Columns a rerun cannot repeat: clock times, and ids derived from the consumer group
# (each scenario has its own).
CLOCKS = {
    "recon_repairs": {"repaired_at", "repair_run_id"},
    "recon_health": {
        "run_id", "window_start", "window_end", "started_at", "finished_at", "duration_ms",
        "freshness_s",
    },
}  # fmt: skip
UNREADABLE = b"{not json: a discrepancy nobody can read"


def without_clocks(table: str, names: list[str], row: tuple) -> tuple:
    values = {k: v for k, v in zip(names, row, strict=True) if k not in CLOCKS[table]}
    if table == "recon_health":
        offsets = json.loads(values["offsets"])
        offsets.pop("group_id", None)
        values["offsets"] = offsets
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


def health_counts(row: tuple) -> dict:
    return {k: v for k, v in row if k in {"records_in", "records_out", "dead_letters"}}


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory) -> dict:
    """A generated day reconciled once: its discrepancies, and one unreadable message, on
    ``<topic>.discrepancies``."""
    out = tmp_path_factory.mktemp("repair-kill-day")
    day = published_day(broker.bootstrap_servers, out, events=1500, seed=31, discrepancy_rate=0.04)
    assert reconcile_day(broker.bootstrap_servers, day, out / "reconcile.duckdb") == 0
    day["discrepancies"] = f"{day['topic']}.discrepancies"
    now_ms = int(time.time() * 1000)
    produce(broker.bootstrap_servers, day["discrepancies"], [(b"x", UNREADABLE, now_ms)])
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(
        day["discrepancies"], timeout=30
    )
    day["partitions"] = len(metadata.topics[day["discrepancies"]].partitions)
    day["messages"] = len(consume_all(broker.bootstrap_servers, day["discrepancies"]))
    return day


def argv(broker, day: dict, warehouse: Path, label: str) -> list[str]:
    base = f"{day['topic']}.{label}"
    return [
        "--bootstrap-servers", broker.bootstrap_servers,
        "--discrepancies-topic", day["discrepancies"], "--repairs-topic", f"{base}.repairs",
        "--review-topic", f"{base}.review", "--group-id", f"g-{base}",
        "--stripe-source", day["stripe"], "--as-of", day["as_of"],
        "--warehouse", f"duckdb:///{warehouse}",
    ]  # fmt: skip


def published(broker, day: dict, label: str) -> dict[str, set[tuple[bytes, bytes]]]:
    """Each output topic's distinct (key, value) records, and every dead letter's bytes
    with the coordinates it came from (the DLQ topic is shared by every scenario)."""
    bootstrap = broker.bootstrap_servers
    base = f"{day['topic']}.{label}"
    records = {
        name: {(m.key(), m.value()) for m in consume_all(bootstrap, f"{base}.{name}")}
        for name in ("repairs", "review")
    }
    records["dlq"] = {
        (m.value(), dict(m.headers())["payrecon.dlq.offset"])
        for m in consume_all(bootstrap, f"{day['discrepancies']}.dlq")
    }
    return records


def offsets(broker, day: dict, label: str) -> list[tuple[int, int]]:
    group = f"g-{day['topic']}.{label}"
    return committed(broker.bootstrap_servers, group, day["discrepancies"], day["partitions"])


@pytest.fixture(scope="module")
def clean(broker, day, tmp_path_factory) -> dict:
    """One uninterrupted run: its tables, records, committed offsets and phase timings."""
    log_dir = tmp_path_factory.mktemp("repair-clean")
    warehouse = log_dir / "clean.duckdb"
    job = Job(JOB, argv(broker, day, warehouse, "clean"), log_dir, "clean")
    assert job.finish() == 0, job.stderr_tail()
    at = {line: job.wait_for(line, 0) for line in (RUN, PUBLISHING, LOADING, COMMITTING)}
    assert None not in at.values(), job.stderr_tail()
    tables = snapshot(warehouse, LOADED_TOGETHER, without_clocks)
    [health] = tables["recon_health"]
    # The reference itself: every message handled, one dead letter, the counts add up.
    assert health_counts(health) == {
        "records_in": repr(day["messages"]),
        "records_out": repr(day["messages"] - 1),
        "dead_letters": repr(1),
    }
    assert len(tables["recon_repairs"]) == len(day["key"]["discrepancies"])
    records = published(broker, day, "clean")
    assert records["repairs"] and records["review"] and len(records["dlq"]) == 1
    return {
        "tables": tables,
        "records": records,
        "offsets": offsets(broker, day, "clean"),
        "at": at,
    }


def kill_points(draw: random.Random, at: dict) -> list[tuple[str, str | None, float]]:
    """(name, wait for this stderr line first or None, then sleep this long, then SIGKILL)"""
    return [
        ("random", None, draw.uniform(0.1, 0.95) * at[COMMITTING]),
        ("publish", PUBLISHING, draw.uniform(0.0, at[LOADING] - at[PUBLISHING])),
        ("load", LOADING, draw.uniform(0.0, at[COMMITTING] - at[LOADING])),
        ("commit", COMMITTING, 0.0),
    ]


@pytest.mark.parametrize("round_", range(KILL_ROUNDS))
def test_killed_repairs_then_a_rerun_leave_the_state_of_one_clean_run(
    broker, day, clean, jobs, tmp_path, round_
):
    seed = kill_seed()
    draw = random.Random(seed + round_)
    label = f"killed{round_}"
    warehouse = tmp_path / f"{label}.duckdb"
    run = argv(broker, day, warehouse, label)
    history = []
    for name, line, delay in kill_points(draw, clean["at"]):
        context = f"seed {seed}, round {round_}, kill {name} ({delay:.2f}s after {line or 'start'})"
        start_and_kill(jobs, JOB, run, (name, line, delay), context)
        loaded = assert_all_or_nothing(
            warehouse, LOADED_TOGETHER, clean["tables"], context, without_clocks
        )
        history.append(f"{name}: {loaded}")
        if offsets(broker, day, label) == clean["offsets"]:
            history.append("(committed before the kill: the run was complete)")
            break

    print(f"seed {seed}, round {round_}: {history}")
    rerun = jobs(JOB, run, "rerun")
    assert rerun.finish() == 0, f"seed {seed}, {history}\n{rerun.stderr_tail()}"

    final = snapshot(warehouse, LOADED_TOGETHER, without_clocks)
    assert final["recon_repairs"] == clean["tables"]["recon_repairs"], f"seed {seed}, {history}"
    # A rerun after a completed run handles nothing and records that (records_in 0).
    handled = [row for row in final["recon_health"] if health_counts(row)["records_in"] != "0"]
    assert handled == clean["tables"]["recon_health"], f"seed {seed}, {history}"
    if len(final["recon_health"]) > 1:
        assert history[-1].startswith("(committed"), f"seed {seed}, {history}: extra runs"
    assert published(broker, day, label) == clean["records"], f"seed {seed}, {history}"
    copies = len(consume_all(broker.bootstrap_servers, f"{day['topic']}.{label}.repairs"))
    print(f"round {round_}: {copies} repair events published for "
          f"{len(clean['records']['repairs'])} distinct ones (at least once)")  # fmt: skip
    assert offsets(broker, day, label) == clean["offsets"], f"seed {seed}, {history}"
