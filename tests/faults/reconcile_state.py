"""A reconcile scenario's state, as the fault tests compare it with a clean run's: its
warehouse tables without clock columns, the discrepancy ids it published and its group's
committed offsets. Each scenario (``label``) has its own discrepancies topic and group."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.kill_helpers import committed
from tests.faults.kill_helpers import snapshot as snapshot_tables
from tests.kafka_helpers import consume_all
from tests.reconcile_helpers import reconcile_argv

JOB = "pipelines.reconcile"
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


def argv(bootstrap: str, day: dict, warehouse: Path, label: str) -> list[str]:
    """The reconcile flags for this day; ``label`` names this
    scenario's discrepancies topic and consumer group."""
    return reconcile_argv(
        bootstrap,
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
    return snapshot_tables(warehouse, TABLES, without_clocks)


def without_clocks(table: str, names: list[str], row: tuple) -> tuple:
    if table != "recon_runs":
        return row
    values = dict(zip(names, row, strict=True))
    del values["started_at"], values["finished_at"]
    offsets = json.loads(values["offsets"])
    offsets.pop("planned_at_ms", None)
    values["offsets"] = offsets
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


def offsets(bootstrap: str, day: dict, label: str, partitions: int) -> list[tuple[int, int]]:
    return committed(bootstrap, group(day, label), day["topic"], partitions)


def published_ids(bootstrap: str, day: dict, label: str) -> set[str]:
    return {m.key().decode() for m in consume_all(bootstrap, discrepancies_topic(day, label))}
