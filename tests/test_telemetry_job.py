"""``payrecon telemetry`` against the real broker: micro-batches from committed offsets."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import timedelta

import pyarrow as pa
import pytest

import pipelines.telemetry_finish as finish
from pipelines.telemetry import main as telemetry
from schemas.telemetry import CONVERSION_DROP_COLUMNS
from tests.kafka_helpers import consume_all
from tests.telemetry_helpers import (
    COHORTS,
    START,
    TABLES,
    Record,
    Topics,
    declines,
    storm_429,
    table,
    traffic,
)
from transforms.cohort_conversion import CohortConfig
from transforms.kafka_offsets import BrokerUnavailable
from transforms.warehouse.duckdb_sink import DuckDBWarehouse

TEN_MIN = timedelta(minutes=10)
ALPHA = CohortConfig().alpha


def _unavailable(*args, **kwargs):
    raise BrokerUnavailable("broker went away during the commit")


def test_two_micro_batches_give_the_tables_of_one_batch_over_all_messages(broker, tmp_path):
    topics = Topics(broker.bootstrap_servers)
    records = traffic(400, seed=21)
    random.Random(8).shuffle(records)  # each half has calls and results of every minute
    topics.publish(records[:400])
    assert topics.run(tmp_path / "batches.duckdb", "batches") == 0
    topics.publish(records[400:])
    assert topics.run(tmp_path / "batches.duckdb", "batches") == 0
    assert topics.run(tmp_path / "once.duckdb", "once") == 0

    for name, (order, where) in TABLES.items():
        once = table(tmp_path / "once.duckdb", name, order, where)
        assert once, name
        assert table(tmp_path / "batches.duckdb", name, order, where) == once, name
    with DuckDBWarehouse(tmp_path / "batches.duckdb") as w:
        shared = w.query_arrow(
            "SELECT window_start FROM telemetry_window_counts GROUP BY window_start, "
            "window_end HAVING COUNT(DISTINCT batch_id) = 2"
        )
    assert shared.num_rows > 0, "no window was spread over both batches: the test proves nothing"


def test_the_health_row_counts_every_message_as_decoded_or_dead_lettered(broker, tmp_path):
    topics = Topics(broker.bootstrap_servers)
    records = traffic(40, seed=3)
    bad = [Record("telemetry", b"k", b"not json", records[0].at),
           Record("results", b"k", b'{"request_id": "r1"}', records[0].at)]  # fmt: skip
    topics.publish(records + bad)
    assert topics.run(tmp_path / "w.duckdb", "health") == 0

    with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        (row,) = w.query_arrow("SELECT * FROM recon_health WHERE job = 'telemetry'").to_pylist()
    assert row["records_in"] == len(records) + 2
    assert row["records_out"] == len(records)
    assert row["dead_letters"] == 2 and row["counts_conserved"]
    assert row["dead_letters_by_reason"] == '{"missing_field": 1, "not_json": 1}'
    dead = consume_all(broker.bootstrap_servers, f"{topics.telemetry}.dlq")
    dead += consume_all(broker.bootstrap_servers, f"{topics.results}.dlq")
    assert sorted(m.value() for m in dead) == sorted(r.value for r in bad)


def test_a_batch_retried_after_its_commit_failed_replaces_what_it_loaded(
    broker, tmp_path, monkeypatch
):
    topics = Topics(broker.bootstrap_servers)
    records = traffic(30, seed=4)
    topics.publish(records)

    with monkeypatch.context() as patch:
        patch.setattr(finish, "commit_offsets", _unavailable)
        assert topics.run(tmp_path / "w.duckdb", "retry") == 3
    assert topics.run(tmp_path / "w.duckdb", "retry") == 0

    calls = sum(1 for r in records if r.kind == "telemetry")
    with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        counted = w.query_arrow(
            "SELECT SUM(count) AS n, COUNT(DISTINCT batch_id) AS batches "
            "FROM telemetry_window_counts WHERE component = 'attempts' AND gateway = '*' "
            "AND window_end - window_start = INTERVAL 1 MINUTE"
        ).to_pylist()
        runs = w.query_arrow("SELECT status FROM recon_health WHERE job = 'telemetry'")
    assert counted == [{"n": calls, "batches": 1}]
    assert runs.column("status").to_pylist() == ["succeeded"]


@pytest.mark.parametrize("flag", [["--windows", "day"], ["--allowed-lateness", "soon"]])
def test_a_bad_flag_exits_2_with_one_line(flag, capsys):
    assert telemetry(flag) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag[0] in err


def test_a_429_storm_is_alerted_and_resolved_when_late_data_makes_it_normal(
    broker, tmp_path, monkeypatch
):
    topics = Topics(broker.bootstrap_servers)
    history = [r for i in range(4) for r in traffic(300, seed=30 + i, start=START + i * TEN_MIN)]
    topics.publish(history)  # 40 normal minutes: enough points for the cold-start baseline
    assert topics.run(tmp_path / "w.duckdb", "storm") == 0
    assert table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start") == []

    topics.publish(storm_429(150, seed=9, start=START + 4 * TEN_MIN, seconds=120))
    with monkeypatch.context() as patch:  # published, then the commit fails: a retry
        patch.setattr(finish, "commit_offsets", _unavailable)
        assert topics.run(tmp_path / "w.duckdb", "storm") == 3
    assert topics.run(tmp_path / "w.duckdb", "storm") == 0

    found = table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start, dims",
                  "metric = 'rate_429'")  # fmt: skip
    storm_minutes = {START + 4 * TEN_MIN + timedelta(minutes=m) for m in range(2)}
    assert {r["window_start"] for r in found if r["dims"] == "gateway=*"} == storm_minutes
    assert all(r["direction"] == "up" and r["severity"] for r in found)
    alerts = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers, topics.alerts)]
    surges = [a for a in alerts if a["metric"] == "rate_429"]  # error_rate alerts too
    ids = sorted(a["alert_id"] for a in surges)
    assert ids == sorted(2 * [r["alert_id"] for r in found]), "the retry republishes the ids"
    assert all(a["suggested_action"].startswith("429 surge") and a["expected"] < 0.2
               for a in surges)  # fmt: skip
    assert {a["status"] for a in surges} == {"open"}

    # Late data: the storm minutes held far more calls than first seen, nearly all fine.
    topics.publish(traffic(2000, seed=10, start=START + 4 * TEN_MIN, seconds=120))
    assert topics.run(tmp_path / "w.duckdb", "storm") == 0
    resolved = table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start, dims",
                     "metric = 'rate_429' AND resolved_at IS NOT NULL")  # fmt: skip
    assert [r["alert_id"] for r in resolved] == [r["alert_id"] for r in found]
    assert [r["value"] for r in resolved] == [r["value"] for r in found], "the evidence stays"
    later = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers, topics.alerts)]
    closed = [a for a in later[len(alerts) :] if a["metric"] == "rate_429"]
    assert sorted(a["alert_id"] for a in closed) == sorted(r["alert_id"] for r in found)
    assert {a["status"] for a in closed} == {"resolved"}


def test_one_cohorts_drop_is_alerted_and_flagged_until_late_data_makes_it_normal(broker, tmp_path):
    topics = Topics(broker.bootstrap_servers)
    history = [r for i in range(4) for r in traffic(300, seed=40 + i, start=START + i * TEN_MIN)]
    topics.publish(history)  # 40 normal minutes: the cohorts' baselines
    assert topics.run(tmp_path / "w.duckdb", "cohorts") == 0
    cohort_rows = "metric = 'cohort_conversion'"
    assert table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start", cohort_rows) == []

    drop_start = START + 4 * TEN_MIN  # FR mastercard: as many declines as normal payments
    fr = COHORTS.index(("FR", "card", "mastercard"))
    topics.publish(traffic(300, seed=44, start=drop_start)
                   + declines(100, seed=9, start=drop_start, cohort=fr))  # fmt: skip
    assert topics.run(tmp_path / "w.duckdb", "cohorts") == 0

    found = table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start", cohort_rows)
    assert {r["dims"] for r in found} == {
        "country=FR,payment_method_type=card,card_brand=mastercard"
    }
    assert min(r["window_start"] for r in found) < drop_start + timedelta(minutes=2)
    assert all(r["value"] < r["expected"] - 0.05 and r["p_value"] * r["tests"] <= ALPHA
               and r["baseline_points"] >= 200 for r in found)  # fmt: skip
    alerts = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers, topics.alerts)]
    cohort_alerts = {a["alert_id"]: a for a in alerts if a["metric"] == "cohort_conversion"}
    assert set(cohort_alerts) == {r["alert_id"] for r in found}
    assert all(a["suggested_action"].startswith("cohort conversion drop")
               for a in cohort_alerts.values())  # fmt: skip

    conversion = table(tmp_path / "w.duckdb", "payment_conversion", "country", "attempts > 0")
    dropped = [r for r in conversion if r["significant_drop"]]
    assert [(r["country"], r["card_brand"]) for r in dropped] == [("FR", "mastercard")]
    most_significant = min(found, key=lambda r: r["score"])
    assert dropped[0]["first_drop_at"] == min(r["window_start"] for r in found)
    assert dropped[0]["p_value"] == pytest.approx(most_significant["p_value"])
    assert dropped[0]["baseline_conversion"] == pytest.approx(most_significant["expected"])

    # Late data: the same minutes held many more payments of every cohort, as usual.
    topics.publish(traffic(3000, seed=45, start=drop_start))
    assert topics.run(tmp_path / "w.duckdb", "cohorts") == 0
    still_open = table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start",
                       f"{cohort_rows} AND resolved_at IS NULL")  # fmt: skip
    assert still_open == []
    later = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers, topics.alerts)]
    resolved = {a["alert_id"] for a in later[len(alerts) :] if a["status"] == "resolved"}
    assert resolved >= set(cohort_alerts)
    conversion = table(tmp_path / "w.duckdb", "payment_conversion", "country", "attempts > 0")
    assert not any(r["significant_drop"] for r in conversion)


def test_a_warehouse_from_before_the_cohort_columns_gains_them(broker, tmp_path):
    cohort_columns = {*CONVERSION_DROP_COLUMNS, "p_value", "tests", "events"}
    with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        for table_def in (finish.CONVERSION, finish.ANOMALIES):
            fields = [f for f in table_def.schema if f.name not in cohort_columns]
            w.ensure(replace(table_def, schema=pa.schema(fields)))
    topics = Topics(broker.bootstrap_servers)
    topics.publish(traffic(40, seed=5))
    assert topics.run(tmp_path / "w.duckdb", "older") == 0

    rows = table(tmp_path / "w.duckdb", "payment_conversion", "country", "attempts > 0")
    assert rows and {r["significant_drop"] for r in rows} == {False}
    assert table(tmp_path / "w.duckdb", "telemetry_anomalies", "window_start", "p_value > 0") == []
