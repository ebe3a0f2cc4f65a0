"""payrecon's Kafka IO against an independent client: kafka-python (pure Python protocol).

It shares no code with librdkafka, so agreement here means payrecon speaks the protocol,
not just whatever librdkafka and the broker happen to agree on.
"""

from __future__ import annotations

import time

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.kafka_helpers import DAY, encode, ledger_event, millis, new_topic
from transforms.decode import DecodeLedgerEvents
from transforms.kafka import KafkaRecord, ReadKafkaWindow, WriteToKafka


def test_events_produced_by_kafka_python_are_read_and_decoded_by_payrecon(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=3)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=20)
    events = [ledger_event(i, DAY) for i in range(200)]
    for e in events:
        producer.send(topic, key=e["order_id"].encode(), value=encode(e), timestamp_ms=millis(DAY))
    producer.send(topic, key=b"bad", value=b"not json", timestamp_ms=millis(DAY))
    producer.flush()
    producer.close()
    with TestPipeline() as p:
        decoded = (
            p | ReadKafkaWindow(broker.bootstrap_servers, [topic]) | DecodeLedgerEvents(job="test")
        )
        ids = decoded.events | "ids" >> beam.FlatMap(lambda t: t.column("event_id").to_pylist())
        reasons = decoded.dead_letters | "reasons" >> beam.FlatMap(
            lambda t: t.column("reason").to_pylist()
        )
        assert_that(ids, equal_to([e["event_id"] for e in events]), label="events")
        assert_that(reasons, equal_to(["not_json"]), label="dead letters")


def test_records_written_by_payrecon_are_read_by_kafka_python(broker):
    topic = new_topic(broker.bootstrap_servers, partitions=2)
    records = [
        KafkaRecord(
            value=f"v{i}".encode(),
            key=f"k{i}".encode(),
            headers=[("h", b"1")],
            timestamp_ms=millis(DAY) + i,
        )
        for i in range(300)
    ]
    with TestPipeline() as p:
        _ = p | beam.Create(records) | WriteToKafka(broker.bootstrap_servers, topic)
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consumer.seek_to_beginning()
    got, deadline = [], time.monotonic() + 30
    while len(got) < len(records) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            got.extend(batch)
    consumer.close()
    assert sorted((m.key, m.value, m.timestamp) for m in got) == sorted(
        (r.key, r.value, r.timestamp_ms) for r in records
    )
    assert all(list(m.headers) == [("h", b"1")] for m in got)
