"""The Beam Kafka sink: keyed, acknowledged writes, and failures that fail the bundle."""

from __future__ import annotations

import socket

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from tests.kafka_helpers import DAY, consume_all, millis, new_topic
from transforms.kafka import KafkaRecord, WriteToKafka


def test_written_records_arrive_once_with_key_headers_and_timestamp(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=3)
    records = [
        KafkaRecord(
            value=f"v{i}".encode(),
            key=f"k{i}".encode(),
            headers=[("origin", b"test")],
            timestamp_ms=millis(DAY) + i,
        )
        for i in range(500)
    ]
    with TestPipeline() as p:
        _ = p | beam.Create(records) | WriteToKafka(broker.bootstrap_servers, topic)
    got = consume_all(broker.bootstrap_servers, topic, 3)
    assert sorted((m.key(), m.value(), m.timestamp()[1]) for m in got) == sorted(
        (r.key, r.value, r.timestamp_ms) for r in records
    )
    assert all(m.headers() == [("origin", b"test")] for m in got)
    # Keyed: one key always lands on one partition.
    partitions_of_key = {}
    for m in got:
        partitions_of_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(ps) == 1 for ps in partitions_of_key.values())


def test_write_fails_the_pipeline_when_the_broker_does_not_acknowledge():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(Exception, match=r"unacknowledged|delivery"), TestPipeline() as p:
        _ = (
            p
            | beam.Create([KafkaRecord(value=b"x", key=b"k")])
            | WriteToKafka(dead, "nowhere", producer_overrides={"message.timeout.ms": 1500})
        )
