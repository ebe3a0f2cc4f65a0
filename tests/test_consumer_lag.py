"""Consumer lag per group and partition, and the stalled-consumer alert of telemetry."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from confluent_kafka import Consumer, TopicPartition

from pipelines.telemetry import main as telemetry
from pipelines.telemetry_lag import ANOMALIES, LAG, lag_rows, stalled_anomalies
from tests.kafka_helpers import consume_all, new_topic, produce
from tests.telemetry_helpers import Topics
from transforms.consumer_lag import PartitionLag, measure_lag
from transforms.consumer_stall import stalls
from transforms.warehouse.duckdb_sink import DuckDBWarehouse

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def _publish(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    now = int(time.time() * 1000)
    produce(bootstrap, topic, [
        (f"k{p}-{i}".encode(), b"{}", now, p) for p, n in per_partition.items() for i in range(n)
    ])  # fmt: skip


def test_lag_is_the_partition_end_minus_the_committed_offset(broker, topic_name):
    bootstrap = broker.bootstrap_servers
    topic = new_topic(bootstrap, partitions=2, prefix="lag")
    _publish(bootstrap, topic, {0: 10, 1: 4})
    _commit(bootstrap, topic_name, topic, {0: 3})

    lags = measure_lag(bootstrap, [topic_name])

    by_partition = {x.partition: (x.committed, x.end, x.lag) for x in lags}
    assert by_partition == {0: (3, 10, 7), 1: (None, 4, 4)}, "p1: never committed, all waiting"
    everyone = measure_lag(bootstrap)  # every group the broker lists
    assert {x for x in everyone if x.group_id == topic_name} == set(lags)


def _measurements(rows: list[tuple]) -> pl.DataFrame:
    """(minutes after T0, group, committed, lag) on one topic partition."""
    return pl.DataFrame(
        [
            {"measured_at": T0 + m * MINUTE, "group_id": g, "topic": "payments.requests",
             "partition": 0, "committed_offset": c, "lag": lag}
            for m, g, c, lag in rows
        ],
        schema_overrides={"measured_at": pl.Datetime("us", "UTC")},
    )  # fmt: skip


def test_a_group_with_messages_waiting_and_no_commit_for_stall_after_is_stalled():
    frame = _measurements([(0, "gw", 100, 0), (1, "gw", 100, 5), (2, "gw", 100, 40)])
    found = stalls(frame, T0 + 2 * MINUTE, MINUTE, {"gw"})
    assert found.select("group_id", "stalled_since", "lag", "measurements").to_dicts() == [
        {"group_id": "gw", "stalled_since": T0 + MINUTE, "lag": 40, "measurements": 2}
    ], "stalled since the first measurement that saw messages waiting, not the idle one"
    assert stalls(frame, T0 + 2 * MINUTE, 2 * MINUTE, {"gw"}).is_empty(), "not yet stall_after"


@pytest.mark.parametrize(
    "rows",
    [
        [(0, "gw", 100, 9), (1, "gw", 120, 9), (2, "gw", 150, 9)],  # slow but committing
        [(0, "gw", 100, 0), (1, "gw", 100, 0), (2, "gw", 100, 0)],  # idle: nothing waiting
        [(0, "gw", 100, 9), (1, "gw", 100, 9), (2, "gw", 130, 0)],  # caught up again
    ],
    ids=["moving", "idle", "recovered"],
)
def test_a_consumer_that_commits_or_has_nothing_waiting_is_not_stalled(rows):
    assert stalls(_measurements(rows), T0 + 2 * MINUTE, MINUTE, {"gw"}).is_empty()


def test_only_the_watched_groups_are_judged():
    frame = _measurements([(0, "reconcile", 7, 500), (5, "reconcile", 7, 900)])
    assert stalls(frame, T0 + 5 * MINUTE, MINUTE, {"gw"}).is_empty()


def test_a_stall_keeps_its_start_while_it_lasts_and_a_new_one_starts_after_a_commit():
    rows = [(0, "gw", 100, 3), (1, "gw", 100, 8), (2, "gw", 100, 20)]
    first = stalls(_measurements(rows), T0 + 2 * MINUTE, MINUTE, {"gw"})
    later = stalls(_measurements([*rows, (3, "gw", 100, 30)]), T0 + 3 * MINUTE, MINUTE, {"gw"})
    assert first["stalled_since"].to_list() == later["stalled_since"].to_list() == [T0]
    moved = [*rows, (3, "gw", 101, 30), (4, "gw", 101, 31), (5, "gw", 101, 33)]
    again = stalls(_measurements(moved), T0 + 5 * MINUTE, MINUTE, {"gw"})
    assert again["stalled_since"].to_list() == [T0 + 3 * MINUTE]


def _judge(warehouse, minutes: int, committed: int, lag: int, detected_at: datetime):
    """One run's measurement of group gw at T0 + ``minutes``, judged and loaded as the job
    does; returns the anomaly rows."""
    measured = lag_rows(
        [PartitionLag("gw", "payments.requests", 0, committed, committed + lag, lag)],
        T0 + minutes * MINUTE, f"run-{minutes}",
    )  # fmt: skip
    found = stalled_anomalies(warehouse, measured, stall_after=MINUTE, groups={"gw"},
                              run_id=f"run-{minutes}", detected_at=detected_at)  # fmt: skip
    warehouse.load({LAG: measured, ANOMALIES: found})
    return found.to_pylist()


def test_an_ended_stall_is_resolved_at_the_runs_detected_at_like_a_window(tmp_path):
    """``resolved_at`` is when the run that found the stall over judged it (its
    ``detected_at``, what resolved windows and cohorts get), not when it read the offsets."""
    late = timedelta(seconds=40)  # a run decides well after it measured
    with DuckDBWarehouse(tmp_path / "w.duckdb") as warehouse:
        assert _judge(warehouse, 0, 100, 30, T0 + late) == []
        (opened,) = _judge(warehouse, 2, 100, 50, T0 + 2 * MINUTE + late)
        assert opened["detected_at"] == T0 + 2 * MINUTE + late and opened["resolved_at"] is None
        (resolved,) = _judge(warehouse, 4, 180, 0, T0 + 4 * MINUTE + late)
    assert resolved["alert_id"] == opened["alert_id"]
    assert resolved["resolved_at"] == T0 + 4 * MINUTE + late, "the run's detected_at"
    assert resolved["detected_at"] == opened["detected_at"], "the evidence stays"


def test_a_stalled_consumer_is_alerted_on_the_second_run_and_resolved_once_it_commits(
    broker, tmp_path, topic_name
):
    bootstrap = broker.bootstrap_servers
    work = new_topic(bootstrap, partitions=1, prefix="work")
    stuck, healthy = f"{topic_name}-stuck", f"{topic_name}-healthy"
    _publish(bootstrap, work, {0: 50})
    _commit(bootstrap, stuck, work, {0: 10})
    _commit(bootstrap, healthy, work, {0: 20})
    topics = Topics(bootstrap)
    warehouse = tmp_path / "w.duckdb"
    flags = ["--lag-groups", f"{stuck},{healthy}", "--stall-groups", f"{stuck},{healthy}",
             "--stall-after", "1s"]  # fmt: skip

    assert topics.run(warehouse, "tel", *flags) == 0  # first look: nothing to compare with
    assert consume_all(bootstrap, topics.alerts) == []
    time.sleep(1.2)
    _commit(bootstrap, healthy, work, {0: 35})  # slow, but moving
    assert topics.run(warehouse, "tel", *flags) == 0

    (alert,) = [json.loads(m.value()) for m in consume_all(bootstrap, topics.alerts)]
    assert alert["metric"] == "consumer_stalled" and alert["severity"] == "critical"
    assert alert["dims"] == f"group={stuck},topic={work},partition=0"
    assert alert["value"] == 40 and alert["suggested_action"].startswith(f"consumer group {stuck}")

    _commit(bootstrap, stuck, work, {0: 50})
    _commit(bootstrap, healthy, work, {0: 45})
    assert topics.run(warehouse, "tel", *flags) == 0
    opened, resolved = [json.loads(m.value()) for m in consume_all(bootstrap, topics.alerts)]
    assert opened == alert and opened["status"] == "open" and opened["resolved_at"] is None
    assert resolved["alert_id"] == alert["alert_id"] and resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None and resolved["value"] == 40, "evidence kept"
    with DuckDBWarehouse(warehouse) as w:
        lags = w.query_arrow(
            "SELECT group_id, committed_offset, end_offset, lag FROM telemetry_consumer_lag "
            "ORDER BY measured_at, group_id"
        ).to_pylist()
        (stored,) = w.query_arrow(
            "SELECT alert_id, baseline_points, resolved_at IS NOT NULL AS resolved "
            "FROM telemetry_anomalies WHERE metric = 'consumer_stalled'"
        ).to_pylist()
    assert [(x["group_id"], x["committed_offset"], x["lag"]) for x in lags] == [
        (healthy, 20, 30), (stuck, 10, 40), (healthy, 35, 15), (stuck, 10, 40),
        (healthy, 45, 5), (stuck, 50, 0),
    ]  # fmt: skip
    assert stored == {"alert_id": alert["alert_id"], "baseline_points": 2, "resolved": True}


@pytest.mark.parametrize(
    "flag", [["--stall-after", "0s"], ["--lag-groups", "all,gw"], ["--stall-groups", "all"]]
)
def test_a_bad_lag_flag_exits_2_with_one_line(flag, capsys):
    assert telemetry(flag) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag[0] in err
