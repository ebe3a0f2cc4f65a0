"""The Airflow DAGs: they load, and the daily DAG reconciles, backfills and repairs for real.

``dag.test()`` runs each DAG run in this process against the session's embedded broker and a
DuckDB file; Airflow's metadata database is SQLite in a temporary AIRFLOW_HOME, set before
Airflow is imported and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

DAGS = Path(__file__).resolve().parent.parent / "dags"
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="payrecon-airflow-")
os.environ.update(
    AIRFLOW_HOME=_AIRFLOW_HOME,
    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
)
pytest.importorskip("airflow", reason="the airflow extra is not installed")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402
from airflow.timetables.trigger import DeltaTriggerTimetable  # noqa: E402

from tests.reconcile_helpers import published_day  # noqa: E402
from tests.telemetry_helpers import Topics, traffic  # noqa: E402

DAY = datetime(2026, 11, 20, tzinfo=UTC)
RECON_RUN_COLUMNS = "run_id, window_start, window_end, status, messages_in, discrepancies"
FACT_TABLES = ("recon_discrepancies", "recon_matches", "fact_ledger_events", "daily_revenue")


@pytest.fixture(scope="module", autouse=True)
def airflow_db():
    """Airflow's metadata tables in the temporary AIRFLOW_HOME, removed afterwards."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory):
    return published_day(
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("day"),
        events=600,
        seed=23,
        discrepancy_rate=0.03,
    )


def write_config(path: Path, broker, day: dict, warehouse: Path, **overrides) -> Path:
    """A payrecon.yaml for the published day: its topics, export and as-of."""
    as_of = datetime.fromisoformat(day["as_of"].replace("Z", "+00:00"))
    delay = int((as_of - (DAY + timedelta(days=1))).total_seconds())
    name = warehouse.stem
    config = {
        "broker": {"bootstrap_servers": broker.bootstrap_servers},
        "topics": {
            "ledger": [day["topic"]],
            "repairs": f"{day['topic']}.repairs.{name}",
            "discrepancies": f"{day['topic']}.discrepancies.{name}",
            "review": f"{day['topic']}.review.{name}",
        },
        "reconcile": {
            "stripe_source": day["stripe"],
            "as_of_delay": f"{delay}s",
            "warehouse": f"duckdb:///{warehouse}",
            "group_id": f"g-reconcile-{name}",
            "buckets": 2,
        },
        "repair": {"stripe_source": day["stripe"], "group_id": f"g-repair-{name}"},
        "schedule": {"start_date": "2026-11-19", "retries": 0},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    path.write_text(yaml.safe_dump(config))
    return path


def daily_dag(config: Path, monkeypatch):
    monkeypatch.setenv("PAYRECON_CONFIG", str(config))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("payrecon_reconcile")


def run_window(dag, window_start: datetime) -> dict[str, str]:
    """One DAG run whose data interval is the day starting at ``window_start``; the state of
    each task. (A run triggered at T reconciles the window that ended at T.)"""
    run = dag.test(logical_date=window_start + timedelta(days=1))
    assert run.data_interval_start == window_start
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def snapshot(warehouse: Path) -> dict[str, list]:
    tables = {t: sorted(rows(warehouse, f"SELECT * FROM {t}"), key=repr) for t in FACT_TABLES}
    tables["recon_runs"] = rows(warehouse, f"SELECT {RECON_RUN_COLUMNS} FROM recon_runs ORDER BY 1")
    return tables


def test_every_dag_loads_without_import_errors(broker, day, tmp_path, monkeypatch):
    config = write_config(tmp_path / "payrecon.yaml", broker, day, tmp_path / "w.duckdb")
    monkeypatch.setenv("PAYRECON_CONFIG", str(config))

    bag = DagBag(dag_folder=str(DAGS))

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["payrecon_reconcile"]  # telemetry is off by default
    assert [t.task_id for t in bag.get_dag("payrecon_reconcile").topological_sort()] == [
        "reconcile",
        "repair",
    ]

    write_config(config, broker, day, tmp_path / "w.duckdb", telemetry={"enabled": True})
    bag = DagBag(dag_folder=str(DAGS))

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["payrecon_reconcile", "payrecon_telemetry"]
    telemetry = bag.get_dag("payrecon_telemetry")
    assert [t.task_id for t in telemetry.tasks] == ["telemetry"]
    assert (telemetry.max_active_runs, telemetry.catchup) == (1, False)
    assert telemetry.timetable == DeltaTriggerTimetable(timedelta(minutes=5))


@pytest.fixture(scope="module")
def backfill(broker, day, tmp_path_factory):
    """Three days backfilled (reconcile only), then the middle day run again."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        folder = tmp_path_factory.mktemp("backfill")
        warehouse = folder / "backfill.duckdb"
        config = write_config(
            folder / "payrecon.yaml", broker, day, warehouse, repair={"enabled": False}
        )
        dag = daily_dag(config, monkeypatch)
        states = [run_window(dag, DAY + timedelta(days=d)) for d in (-1, 0, 1)]
        first = snapshot(warehouse)
        finished = rows(warehouse, "SELECT run_id, finished_at FROM recon_runs ORDER BY 1")
        again = run_window(dag, DAY)
        return {
            "states": [*states, again],
            "first": first,
            "again": snapshot(warehouse),
            "finished": [
                finished,
                rows(warehouse, "SELECT run_id, finished_at FROM recon_runs ORDER BY 1"),
            ],
        }


def test_a_three_day_backfill_reconciles_each_day_once(backfill):
    assert backfill["states"][:3] == [{"reconcile": "success"}] * 3
    windows = [(start, end) for _, start, end, *_ in backfill["first"]["recon_runs"]]
    assert sorted(windows) == [
        (DAY + timedelta(days=d), DAY + timedelta(days=d + 1)) for d in (-1, 0, 1)
    ]
    statuses = {status for *_, status, _, _ in backfill["first"]["recon_runs"]}
    assert statuses == {"succeeded"}


def test_rerunning_a_day_changes_nothing(backfill):
    assert backfill["states"][3] == {"reconcile": "success"}
    before, after = backfill["finished"]
    assert [run for run, _ in before] == [run for run, _ in after]  # the same run ids
    assert sum(b != a for b, a in zip(before, after, strict=True)) == 1  # the day ran again
    assert backfill["again"] == backfill["first"]


def test_the_daily_dag_reconciles_the_day_then_repairs(broker, day, tmp_path, monkeypatch):
    warehouse = tmp_path / "daily.duckdb"
    dag = daily_dag(write_config(tmp_path / "payrecon.yaml", broker, day, warehouse), monkeypatch)

    assert run_window(dag, DAY) == {"reconcile": "success", "repair": "success"}

    [(start, end, found)] = rows(
        warehouse, "SELECT window_start, window_end, discrepancies FROM recon_runs"
    )
    assert (start, end) == (DAY, DAY + timedelta(days=1))
    assert found == len(day["key"]["discrepancies"]) > 0
    [(handled,)] = rows(warehouse, "SELECT count(*) FROM recon_repairs")
    assert handled == found


def test_discrepancies_over_the_threshold_fail_the_reconcile_task_and_skip_repair(
    broker, day, tmp_path, monkeypatch, capsys
):
    warehouse = tmp_path / "strict.duckdb"
    config = write_config(
        tmp_path / "payrecon.yaml",
        broker,
        day,
        warehouse,
        reconcile={"max_discrepancies": 0},
        schedule={"start_date": "2026-11-19", "retries": 3},
    )
    dag = daily_dag(config, monkeypatch)

    assert run_window(dag, DAY) == {"reconcile": "failed", "repair": "upstream_failed"}

    out = capsys.readouterr()
    assert "payrecon reconcile exited 1: found discrepancies over " in out.out + out.err
    [(status,)] = rows(warehouse, "SELECT status FROM recon_runs")
    assert status == "discrepancies_over_threshold"


def test_the_telemetry_dag_runs_one_micro_batch(broker, tmp_path, monkeypatch):
    topics = Topics(broker.bootstrap_servers)
    records = traffic(60, seed=5)
    topics.publish(records)
    warehouse = tmp_path / "telemetry.duckdb"
    config = {
        "broker": {"bootstrap_servers": broker.bootstrap_servers},
        "topics": {
            "payments_telemetry": topics.telemetry,
            "payments_results": topics.results,
            "telemetry_alerts": topics.alerts,
        },
        "reconcile": {"warehouse": f"duckdb:///{tmp_path / 'unused.duckdb'}"},
        "telemetry": {
            "enabled": True,
            "warehouse": f"duckdb:///{warehouse}",
            "group_id": "g-telemetry-dag",
        },
        "schedule": {"retries": 0},
    }
    (tmp_path / "payrecon.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("PAYRECON_CONFIG", str(tmp_path / "payrecon.yaml"))
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}

    run = bag.get_dag("payrecon_telemetry").test()

    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {
        "telemetry": "success"
    }
    [(minutes,)] = rows(warehouse, "SELECT count(*) FROM telemetry_minutely")
    assert minutes > 0
    [(records_in, conserved)] = rows(
        warehouse,
        "SELECT records_in, counts_conserved FROM recon_health WHERE job = 'telemetry'",
    )
    assert (records_in, conserved) == (len(records), True)
