"""Beam bounded read + decode vs a plain confluent-kafka consume-and-decode loop.

Both read the same topic on the same embedded broker in the same run, and decode with the
same function (``transforms.decode.decode_ledger_batch``), so the ratio measures what Beam
and the splittable read cost on top of the raw client. Target: the Beam read within 2x.

    .venv/bin/python bench/kafka_read.py                # 1M events, 4 partitions
    .venv/bin/python bench/kafka_read.py --events 200000
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from common import messages_table
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.broker import EmbeddedBroker
from pipelines.run_summary import counters
from transforms.decode import NAMESPACE, DecodeLedgerEvents, decode_ledger_batch
from transforms.kafka import ReadKafkaRanges
from transforms.kafka_config import consumer_config, producer_config
from transforms.kafka_offsets import plan_read

TOPIC = "bench.ledger"
BASE_MS = 1_795_132_800_000  # 2026-11-20T00:00:00Z


def event(i: int) -> bytes:
    ms = BASE_MS + (i * 86_400_000) // 1_000_000 % 86_400_000
    seconds, millis = divmod(ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    return json.dumps(
        {
            "event_id": f"evt_{i:012d}",
            "event_type": "charge.succeeded",
            "occurred_at": stamp,
            "order_id": f"ord_{i:012d}",
            "stripe_object_id": f"ch_3Q{i:022d}",
            "payment_intent_id": f"pi_3Q{i:022d}",
            "amount": 1000 + i % 50_000,
            "currency": "eur",
            "idempotency_key": f"idem_{i:020d}",
            "customer_id": f"cus_{i % 90_000:010d}",
            "payment_method_type": "card",
            "country": "DE",
            "metadata": {"channel": "web"},
        }
    ).encode()


def publish(bootstrap: str, n: int, partitions: int) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, partitions, 1)]).values():
        f.result(30)
    producer = Producer(producer_config(bootstrap))
    size = 0
    for i in range(n):
        value = event(i)
        size += len(value)
        while True:
            try:
                producer.produce(
                    TOPIC, value=value, key=f"ord_{i:012d}".encode(), partition=i % partitions
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise SystemExit("bench: not every message was acknowledged")
    return size // max(n, 1)


def plain_loop(bootstrap: str, partitions: int, batch: int) -> int:
    """What a hand-written job would do: assign, consume to EOF, decode each batch."""
    consumer = Consumer(consumer_config(bootstrap, "bench-plain"))
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    done, rows = set(), 0
    while len(done) < partitions:
        msgs = [m for m in consumer.consume(batch, timeout=1.0) if _keep(m, done)]
        if msgs:
            rows += decode_ledger_batch(messages_table(msgs), job="bench").events.num_rows
    consumer.close()
    return rows


def _keep(msg, done: set) -> bool:
    err = msg.error()
    if err is not None and err.code() == KafkaError._PARTITION_EOF:
        done.add(msg.partition())
    return err is None


def beam_read(bootstrap: str, beam_args: list[str]) -> int:
    plan = plan_read(bootstrap, [TOPIC])
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    _ = (
        pipeline
        | "Read" >> ReadKafkaRanges(bootstrap, plan)
        | "Decode" >> DecodeLedgerEvents(job="bench")
    )
    result = pipeline.run()
    result.wait_until_finish()
    return counters(result, NAMESPACE).get("events_out", 0)


def timed(label: str, fn, n: int) -> float:
    start = time.perf_counter()
    rows = fn()
    seconds = time.perf_counter() - start
    if rows != n:
        raise SystemExit(f"bench: {label} decoded {rows} rows, expected {n}")
    print(f"  {label:<44} {seconds:7.2f} s  {n / seconds:>10,.0f} rows/s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        print(f"publishing {args.events:,} events to {args.partitions} partitions ...", flush=True)
        size = publish(bootstrap, args.events, args.partitions)
        print(f"events of ~{size} bytes; reading them back and decoding to Arrow:")
        plain = timed(
            "plain confluent-kafka loop + decode",
            lambda: plain_loop(bootstrap, args.partitions, 20_000),
            args.events,
        )
        one = timed(
            "Beam read + decode (DirectRunner)",
            lambda: beam_read(bootstrap, ["--runner=DirectRunner"]),
            args.events,
        )
        two = timed(
            "Beam read + decode (2 worker processes)",
            lambda: beam_read(
                bootstrap,
                [
                    "--runner=DirectRunner",
                    "--direct_num_workers=2",
                    "--direct_running_mode=multi_processing",
                ],
            ),
            args.events,
        )
    print(
        f"ratio Beam/plain: {one / plain:.2f}x in one process, {two / plain:.2f}x with 2 "
        "workers (target: within 2x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
