"""The bounded Beam read of Kafka: exact windows, true partition ends, groups, replays."""

from __future__ import annotations

from datetime import timedelta

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.kafka_helpers import DAY, millis, new_topic, produce
from transforms.kafka import ReadKafkaRanges, ReadKafkaWindow
from transforms.kafka_offsets import BadReadRequest, commit_offsets, plan_read

WINDOW_START, WINDOW_END = DAY, DAY + timedelta(hours=1)


def keys_of(tables):
    return tables | beam.FlatMap(lambda t: t.column("key").to_pylist())


def _timeline(topic_bootstrap, n_per_side=150, n_inside=600):
    """Messages before, inside and after the window, in multi-record batches."""
    bootstrap, topic = topic_bootstrap
    records, inside = [], []
    for i in range(n_per_side):
        records.append((f"before-{i}".encode(), b"{}", millis(WINDOW_START) - 1000 * (i + 1)))
    for i in range(n_inside):
        key = f"inside-{i}".encode()
        inside.append(key)
        records.append((key, b"{}", millis(WINDOW_START) + i * 5000))
    for i in range(n_per_side):
        records.append((f"after-{i}".encode(), b"{}", millis(WINDOW_END) + 1000 * i))
    # The exact edges: start is inclusive, end is exclusive.
    records.append((b"edge-start", b"{}", millis(WINDOW_START)))
    records.append((b"edge-end", b"{}", millis(WINDOW_END)))
    inside.append(b"edge-start")
    produce(bootstrap, topic, records)
    return inside


def test_window_read_returns_exactly_the_events_inside_the_window(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=4)
    inside = _timeline((broker.bootstrap_servers, topic))
    with TestPipeline() as p:
        tables = p | ReadKafkaWindow(broker.bootstrap_servers, [topic], WINDOW_START, WINDOW_END)
        assert_that(keys_of(tables), equal_to(inside))


def test_read_reaches_the_true_end_of_each_partition(broker):
    """The last record batch is read even where the broker under-reports the high watermark."""
    topic = new_topic(broker.bootstrap_servers, partitions=2)
    records = [(f"k{i}".encode(), b"{}", millis(DAY) + i, i % 2) for i in range(1000)]
    produce(broker.bootstrap_servers, topic, records, linger_ms=200)
    plan = plan_read(broker.bootstrap_servers, [topic])
    assert sorted((r.partition, r.start, r.stop) for r in plan.ranges) == [(0, 0, 500), (1, 0, 500)]
    with TestPipeline() as p:
        tables = p | ReadKafkaRanges(broker.bootstrap_servers, plan)
        assert_that(keys_of(tables), equal_to([r[0] for r in records]))


def test_read_spanning_several_topics_reads_each(broker):
    first = new_topic(broker.bootstrap_servers, partitions=2)
    second = new_topic(broker.bootstrap_servers, partitions=3)
    produce(broker.bootstrap_servers, first, [(b"a", b"{}", millis(DAY))])
    produce(broker.bootstrap_servers, second, [(b"b", b"{}", millis(DAY))])
    with TestPipeline() as p:
        tables = p | ReadKafkaWindow(broker.bootstrap_servers, [first, second])
        topics = tables | beam.FlatMap(lambda t: t.column("topic").to_pylist())
        assert_that(topics, equal_to([first, second]))


def test_ranges_split_into_chunks_are_each_read_once(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=1)
    records = [(f"k{i}".encode(), b"{}", millis(DAY) + i) for i in range(2000)]
    produce(broker.bootstrap_servers, topic, records)
    plan = plan_read(broker.bootstrap_servers, [topic])
    with TestPipeline() as p:
        tables = p | ReadKafkaRanges(
            broker.bootstrap_servers, plan, chunk_offsets=128, batch_size=100
        )
        offsets = tables | beam.FlatMap(lambda t: t.column("offset").to_pylist())
        assert_that(offsets, equal_to(list(range(2000))))


def test_second_reader_of_a_group_starts_after_the_committed_offsets(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=3)
    group = f"g-{topic}"
    produce(
        broker.bootstrap_servers,
        topic,
        [(f"first-{i}".encode(), b"{}", millis(DAY) + i) for i in range(300)],
    )
    first = plan_read(broker.bootstrap_servers, [topic], group_id=group)
    assert first.total_offsets == 300
    commit_offsets(broker.bootstrap_servers, group, first.ranges)
    produce(
        broker.bootstrap_servers,
        topic,
        [(f"second-{i}".encode(), b"{}", millis(DAY) + i) for i in range(40)],
    )
    second = plan_read(broker.bootstrap_servers, [topic], group_id=group)
    with TestPipeline() as p:
        tables = p | ReadKafkaRanges(broker.bootstrap_servers, second)
        assert_that(keys_of(tables), equal_to([f"second-{i}".encode() for i in range(40)]))


def test_a_recorded_plan_repeats_the_read_exactly_after_more_data_arrived(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=2)
    produce(
        broker.bootstrap_servers,
        topic,
        [(f"old-{i}".encode(), b"{}", millis(DAY) + i) for i in range(100)],
    )
    recorded = plan_read(broker.bootstrap_servers, [topic], DAY, DAY + timedelta(days=1))
    produce(
        broker.bootstrap_servers,
        topic,
        [(f"new-{i}".encode(), b"{}", millis(DAY) + 200 + i) for i in range(50)],
    )
    replayed = type(recorded).from_json(recorded.to_json())
    with TestPipeline() as p:
        tables = p | ReadKafkaRanges(broker.bootstrap_servers, replayed)
        assert_that(keys_of(tables), equal_to([f"old-{i}".encode() for i in range(100)]))


def test_planning_an_unknown_topic_names_it(broker):
    with pytest.raises(BadReadRequest, match="no-such-topic"):
        plan_read(broker.bootstrap_servers, ["no-such-topic"])


def test_forward_only_commit_never_moves_a_group_backwards(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=1)
    group = f"g-{topic}"
    produce(
        broker.bootstrap_servers,
        topic,
        [(f"k{i}".encode(), b"{}", millis(DAY) + i) for i in range(50)],
    )
    everything = plan_read(broker.bootstrap_servers, [topic])
    commit_offsets(broker.bootstrap_servers, group, everything.ranges)
    older = plan_read(broker.bootstrap_servers, [topic], None, DAY + timedelta(milliseconds=10))
    older_ranges = [type(r)(r.topic, r.partition, 0, 10) for r in older.ranges]
    commit_offsets(broker.bootstrap_servers, group, older_ranges, forward_only=True)
    again = plan_read(broker.bootstrap_servers, [topic], group_id=group)
    assert [(r.start, r.stop) for r in again.ranges] == [(50, 50)]
