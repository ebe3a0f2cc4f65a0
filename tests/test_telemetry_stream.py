"""``payrecon telemetry --streaming`` under a controlled watermark, into a real DuckDB.

``ReadFromKafka`` (cross-language KafkaIO) cannot be expanded here (its expansion service is
a Java jar from Maven Central), so a ``TestStream`` of the rows it emits with metadata
stands in for it; everything after the read is the job's own graph, run on the
BundleBasedDirectRunner (the one runner that runs ``TestStream``), with dead letters to the
real broker. The finish step then runs as ``payrecon telemetry --finish-only``, and its
tables are compared with a micro-batch over the same messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

import pipelines.telemetry_stream_finish as stream_finish
from pipelines.telemetry import _parser
from pipelines.telemetry import main as telemetry
from pipelines.telemetry_run import TelemetryRequest
from pipelines.telemetry_stream import STATE, build_streaming_pipeline
from schemas.dead_letter import dlq_topic
from tests.kafka_helpers import consume_all
from tests.telemetry_helpers import (
    START,
    TABLES,
    Record,
    Topics,
    attempt,
    request_of,
    result,
    table,
)
from transforms.kafka_admin import ensure_topics
from transforms.kafka_offsets import BrokerUnavailable
from transforms.kafka_rows import KafkaReadRow, KafkaRowsToMessages
from transforms.upsert_sink import UpsertToWarehouse
from transforms.warehouse.duckdb_sink import DuckDBWarehouse

STREAM = "tel-stream@test"
BAD = b"not json"


def calls(minute: int, n: int, first: int) -> list[Record]:
    """``n`` payments in minute ``minute`` after START: one call and its result each, both
    inside that minute (requests ``first`` .. ``first + n - 1``)."""
    records = []
    for i in range(first, first + n):
        at = START + timedelta(minutes=minute, seconds=5 + i % 50)
        request = request_of(i, random.Random(i), at)
        records.append(attempt(request, at, 1, "success", latency_ms=80.0, http_status=200))
        status = "succeeded" if i % 3 else "failed"
        code = {} if i % 3 else {"error_code": "card_declined"}
        records.append(result(request, at + timedelta(milliseconds=300), status, 1, **code))
    return records


class Rows:
    """Records as ``ReadFromKafka(with_metadata=True)`` emits them, offsets in arrival order."""

    def __init__(self, topics: Topics):
        self._topics = {"telemetry": topics.telemetry, "results": topics.results}
        self._next: dict[str, int] = {}

    def of(self, records: list[Record]) -> list[TimestampedValue]:
        rows = []
        for r in records:
            topic = self._topics[r.kind]
            offset = self._next.get(topic, 0)
            self._next[topic] = offset + 1
            row = KafkaReadRow(topic, 0, offset, r.timestamp_ms, r.key, r.value)
            rows.append(TimestampedValue(row, r.timestamp_ms / 1000))
        return rows


def seconds(minutes: int) -> float:
    return (START + timedelta(minutes=minutes)).timestamp()


def request_of_flags(topics: Topics, warehouse: Path, *flags: str) -> TelemetryRequest:
    args, _ = _parser().parse_known_args(
        ["--bootstrap-servers", topics.bootstrap, "--telemetry-topic", topics.telemetry,
         "--results-topic", topics.results, "--stripe-events-topic", "none",
         "--alerts-topic", topics.alerts, "--warehouse", f"duckdb:///{warehouse}", *flags]
    )  # fmt: skip
    return TelemetryRequest.from_args(args)


def run_stream(request: TelemetryRequest, events: TestStream) -> None:
    """The streaming job with ``events`` as its Kafka rows, run to the end of ``events``."""
    pipeline = build_streaming_pipeline(
        request, STREAM, ["--runner=BundleBasedDirectRunner"],
        read=lambda p, _: p | "KafkaRows" >> events,
    )  # fmt: skip
    pipeline.run().wait_until_finish()


def finish(topics: Topics, warehouse: Path) -> int:
    return telemetry(
        ["--finish-only", "--bootstrap-servers", topics.bootstrap, "--alerts-topic",
         topics.alerts, "--warehouse", f"duckdb:///{warehouse}", "--lag-groups", "none",
         "--stall-groups", "none"]
    )  # fmt: skip


@dataclass
class Streamed:
    topics: Topics
    warehouse: Path
    records: list[Record]
    dead: list


@pytest.fixture(scope="module")
def streamed(broker, tmp_path_factory) -> Streamed:
    """Early (before any watermark), on-time and late payments, and one bad message, through
    the streaming job; then its finish step."""
    topics = Topics(broker.bootstrap_servers)
    ensure_topics(topics.bootstrap, [dlq_topic(topics.telemetry), dlq_topic(topics.results)])
    early = [r for m in range(5) for r in calls(m, 2, first=10 * m)]
    early.append(Record("telemetry", b"bad", BAD, START + timedelta(minutes=1)))
    on_time = [r for m in range(10) for r in calls(m, 1, first=100 + m)]
    late = calls(2, 1, first=200)
    rows = Rows(topics)
    events = (
        TestStream()
        .advance_watermark_to(seconds(0))
        .add_elements(rows.of(early))
        .advance_processing_time(31)  # the early firing: panes 0 of the windows so far
        .add_elements(rows.of(on_time))
        .advance_watermark_to(seconds(10))  # minutes 0-9 close: on-time panes
        .add_elements(rows.of(late))  # minute 2 is closed: a late pane (lateness 30m)
        .advance_watermark_to_infinity()
    )
    warehouse = tmp_path_factory.mktemp("stream") / "w.duckdb"
    request = request_of_flags(topics, warehouse, "--allowed-lateness", "30m")
    run_stream(request, events)
    dead = consume_all(topics.bootstrap, dlq_topic(topics.telemetry))
    assert finish(topics, warehouse) == 0
    return Streamed(topics, warehouse, early + on_time + late, dead)


def test_each_pane_lands_as_its_own_delta_of_the_windows_counts(streamed):
    with DuckDBWarehouse(streamed.warehouse) as w:
        rows = w.query_arrow(
            f"SELECT component, batch_id, count FROM {STATE.name} WHERE gateway = '*' "
            "AND component IN ('attempts', 'results') "
            "AND window_end - window_start = INTERVAL 1 MINUTE "
            f"AND window_start = TIMESTAMPTZ '{START + timedelta(minutes=2)}'"
        ).to_pylist()
    panes: dict[str, list[tuple[int, int]]] = {}
    for r in rows:
        stream, index = r["batch_id"].rsplit("/", 1)
        assert stream == STREAM
        panes.setdefault(r["component"], []).append((int(index), r["count"]))
    # early: the 2 payments that came first; on time: 1 more; late: the 1 after the
    # watermark (its call and its result are separate elements, so separate late panes)
    assert {c: [n for _, n in sorted(p)] for c, p in panes.items()} == {
        "attempts": [2, 1, 1],
        "results": [2, 1, 1],
    }


def test_the_finish_step_gives_the_tables_of_a_micro_batch_over_the_same_messages(
    streamed, tmp_path
):
    topics = streamed.topics
    topics.publish(streamed.records)
    assert topics.run(tmp_path / "batch.duckdb", "stream-vs-batch") == 0
    for name, (order, where) in TABLES.items():
        batch = table(tmp_path / "batch.duckdb", name, order, where)
        assert batch, name
        assert table(streamed.warehouse, name, order, where) == batch, name


def test_every_message_is_counted_once_or_dead_lettered(streamed):
    # Each good message is one call (attempts) or one result (results) of one minute window.
    # (The decoder's counters prove the same on Dataflow; the DirectRunner's streaming mode
    # reports only its first bundle's metrics.)
    with DuckDBWarehouse(streamed.warehouse) as w:
        (counted,) = (
            w.query_arrow(
                f"SELECT SUM(count) AS n FROM {STATE.name} WHERE gateway = '*' "
                "AND component IN ('attempts', 'results') "
                "AND window_end - window_start = INTERVAL 1 MINUTE"
            )
            .column("n")
            .to_pylist()
        )
    assert [m.value() for m in streamed.dead] == [BAD]
    assert counted + len(streamed.dead) == len(streamed.records)


def test_data_later_than_the_allowed_lateness_is_in_no_window_but_in_its_request(broker, tmp_path):
    topics = Topics(broker.bootstrap_servers)
    on_time, too_late = calls(0, 2, first=300), calls(0, 1, first=310)
    rows = Rows(topics)
    events = (
        TestStream()
        .advance_watermark_to(seconds(0))
        .add_elements(rows.of(on_time))
        .advance_watermark_to(seconds(5))  # past 10:01 + 1 minute of lateness
        .add_elements(rows.of(too_late))
        .advance_watermark_to_infinity()
    )
    request = request_of_flags(
        topics, tmp_path / "w.duckdb", "--windows", "minute", "--allowed-lateness", "1m"
    )
    run_stream(request, events)

    with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        counted = w.query_arrow(
            f"SELECT SUM(count) AS n FROM {STATE.name} "
            "WHERE gateway = '*' AND component = 'attempts'"
        ).to_pylist()
        requests = w.query_arrow("SELECT COUNT(DISTINCT request_id) AS n "
                                 "FROM telemetry_request_partials").to_pylist()  # fmt: skip
    assert counted == [{"n": 2}]
    assert requests == [{"n": 3}]


def pane(minute: int, n: int, batch: str, loaded_at: datetime | None) -> pa.Table:
    """A ``telemetry_window_counts`` row of minute ``minute``'s attempts, as loaded."""
    start = START + timedelta(minutes=minute)
    return pa.Table.from_pylist(
        [{"window_start": start, "window_end": start + timedelta(minutes=1), "gateway": "*",
          "component": "attempts", "batch_id": batch, "count": n, "loaded_at": loaded_at}],
        schema=STATE.schema,
    )  # fmt: skip


def _minutely_runs(warehouse: Path) -> dict:
    with DuckDBWarehouse(warehouse) as w:
        rows = w.query_arrow(
            "SELECT window_start, run_id, value FROM telemetry_minutely "
            "WHERE metric = 'attempts' ORDER BY window_start"
        ).to_pylist()
    return {(r["window_start"] - START).seconds // 60: (r["run_id"], r["value"]) for r in rows}


def test_the_finish_step_recomputes_the_windows_loaded_since_the_last_finish(broker, tmp_path):
    topics = Topics(broker.bootstrap_servers)
    warehouse = tmp_path / "w.duckdb"
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with DuckDBWarehouse(warehouse) as w:
        w.load({STATE: pane(0, 3, "s/0", long_ago)})
    assert finish(topics, warehouse) == 0
    first = _minutely_runs(warehouse)
    with DuckDBWarehouse(warehouse) as w:
        (started,) = (
            w.query_arrow("SELECT started_at FROM recon_health WHERE job = 'telemetry_finish'")
            .column("started_at")
            .to_pylist()
        )
        # minute 1: loaded after the first finish; minute 2: stamped just before it started
        # but committed after it read (a slow load)
        w.load({STATE: pa.concat_tables([pane(1, 4, "s/0", datetime.now(UTC)),
                                         pane(2, 5, "s/0", started - timedelta(minutes=1)),
                                         pane(0, 1, "t/0", long_ago)])})  # fmt: skip
    assert finish(topics, warehouse) == 0

    second = _minutely_runs(warehouse)
    assert first == {0: (first[0][0], 3.0)}
    assert second[0] == first[0]  # its new pane is older than the cursor: not seen yet
    assert second[1][1] == 4.0 and second[2][1] == 5.0
    assert second[1][0] == second[2][0] != first[0][0]


def _unavailable(*args, **kwargs):
    raise BrokerUnavailable("the broker went away while publishing the alerts")


def test_a_finish_that_could_not_publish_its_alerts_is_redone_by_the_next(
    broker, tmp_path, monkeypatch
):
    topics = Topics(broker.bootstrap_servers)
    warehouse = tmp_path / "w.duckdb"
    with DuckDBWarehouse(warehouse) as w:
        w.load({STATE: pane(0, 3, "s/0", datetime.now(UTC) - timedelta(hours=1))})
    with monkeypatch.context() as patch:
        patch.setattr(stream_finish, "publish_alerts", _unavailable)
        assert finish(topics, warehouse) == 3
    assert finish(topics, warehouse) == 0

    with DuckDBWarehouse(warehouse) as w:
        runs = w.query_arrow(
            "SELECT run_id, status FROM recon_health WHERE job = 'telemetry_finish' "
            "ORDER BY started_at"
        ).to_pylist()
    assert [r["status"] for r in runs] == ["failed", "succeeded"]
    assert _minutely_runs(warehouse) == {0: (runs[1]["run_id"], 3.0)}


def test_a_retried_pane_rewrites_its_rows(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    retried = pane(0, 3, "s/0", None)
    for _ in range(2):
        with beam.Pipeline() as p:
            _ = p | beam.Create([retried]) | UpsertToWarehouse(url, STATE, loaded_at="loaded_at")
    with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        rows = w.query_arrow(f"SELECT count, loaded_at IS NOT NULL AS stamped FROM {STATE.name}")
    assert rows.to_pylist() == [{"count": 3, "stamped": True}]


@pytest.mark.parametrize("flags", [["--streaming"], ["--streaming", "--runner=DirectRunner"]])
def test_streaming_on_a_local_runner_exits_2_saying_what_it_needs(flags, capsys):
    assert telemetry(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DataflowRunner" in err and "FlinkRunner" in err


def test_records_read_with_metadata_become_the_bounded_reads_message_batches():
    rows = [
        KafkaReadRow("a", 1, 8, 1_700_000_000_123, b"k2", b"v2"),
        KafkaReadRow("a", 1, 7, 1_700_000_000_000, None, b"v1", [("h", b"x")]),
        KafkaReadRow("a", 1, 9, -1, b"k3", None, None, -1, "NoTimestampType"),
        KafkaReadRow("a", 0, 7, 1_700_000_000_000, b"k4", b"v4"),
        KafkaReadRow("b", 1, 3, 1_700_000_000_000, b"k5", b"v5"),
    ]
    at = datetime.fromtimestamp(1_700_000_000, UTC)
    names = ("topic", "partition", "offset", "timestamp", "key", "value")
    expected = [
        ("a", 1, 7, at, None, b"v1"),
        ("a", 1, 8, at + timedelta(milliseconds=123), b"k2", b"v2"),
        ("a", 1, 9, None, b"k3", None),  # a message without a timestamp
        ("a", 0, 7, at, b"k4", b"v4"),
        ("b", 1, 3, at, b"k5", b"v5"),
    ]
    with TestPipeline() as p:
        tables = p | beam.Create(rows) | KafkaRowsToMessages(max_rows=2)
        assert_that(
            tables | beam.FlatMap(lambda t: t.to_pylist()),
            equal_to([dict(zip(names, m, strict=True)) for m in expected]),
            label="EveryRowOnce",
        )
        assert_that(tables | beam.Map(one_partition_in_order), all_true, label="Batches")


def one_partition_in_order(messages: pa.Table) -> bool:
    """A batch holds one partition's messages, at most 2 (max_rows), in offset order."""
    where = set(zip(messages["topic"].to_pylist(), messages["partition"].to_pylist(), strict=True))
    offsets = messages["offset"].to_pylist()
    return len(where) == 1 and len(offsets) <= 2 and offsets == sorted(offsets)


def all_true(seen: list[bool]) -> None:
    assert seen and all(seen), seen
