"""Helpers for the ``payrecon dlq`` tests: dead letters made by the real decoder, and the CLI.

``dead_letter_topic`` runs the decoder the jobs run (``decode_ledger_batch``) and writes its
dead letters the way the jobs do (``dead_letter_records``), without starting a Beam pipeline,
so a test that needs dead letters but is not about the read job stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
from confluent_kafka import Producer

from pipelines import dlq
from schemas.dead_letter import dlq_topic
from schemas.kafka_message import KAFKA_MESSAGE
from transforms.dead_letters import dead_letter_records
from transforms.decode import decode_ledger_batch
from transforms.dlq_io import StoredMessage, read_to_end, topic_partitions
from transforms.kafka_admin import ensure_topics


@dataclass
class Run:
    """What one ``payrecon dlq`` command returned and printed."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run_dlq(capsys, bootstrap: str, *args: str) -> Run:
    """``payrecon dlq <args>`` against ``bootstrap``; the code and what it printed."""
    command, *rest = args
    try:
        code = dlq.main([command, "--bootstrap-servers", bootstrap, "--broker-timeout", "5", *rest])
    except SystemExit as exc:  # argparse: bad flags exit 2 before the command runs
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def messages_table(messages: list[StoredMessage]) -> pa.Table:
    """Messages read back as the ``KAFKA_MESSAGE`` batch the Beam read would emit."""
    stamp = KAFKA_MESSAGE.field("timestamp").type
    return pa.Table.from_arrays(
        [
            pa.array([m.topic for m in messages], pa.string()),
            pa.array([m.partition for m in messages], pa.int32()),
            pa.array([m.offset for m in messages], pa.int64()),
            pa.array([m.timestamp_ms for m in messages], pa.int64()).cast(stamp),
            pa.array([m.key for m in messages], pa.binary()),
            pa.array([m.value for m in messages], pa.binary()),
        ],
        schema=KAFKA_MESSAGE,
    )


def dead_letter_topic(bootstrap: str, topic: str, starts: dict[int, int] | None = None) -> int:
    """Decode ``topic`` (from ``starts``, default the beginning) and dead-letter what is bad
    to ``<topic>.dlq`` as the jobs do; returns the number of dead letters written."""
    if starts is None:
        starts = dict.fromkeys(range(topic_partitions(bootstrap)[topic]), 0)
    read = list(read_to_end(bootstrap, topic, starts, timeout=10))
    decoded = decode_ledger_batch(messages_table(read), job="test")
    ensure_topics(bootstrap, [dlq_topic(topic)])
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    records = list(dead_letter_records(decoded.dead_letters))
    for record in records:
        producer.produce(
            record.topic,
            record.value,
            key=record.key,
            headers=record.headers,
            timestamp=record.timestamp_ms or 0,
        )
    assert producer.flush(30) == 0
    return len(records)


def replays_in(bootstrap: str, topic: str) -> list[StoredMessage]:
    """The messages of ``topic`` that are replays (they carry ``payrecon.replay.of``)."""
    starts = dict.fromkeys(range(topic_partitions(bootstrap)[topic]), 0)
    return [
        m
        for m in read_to_end(bootstrap, topic, starts)
        if m.header("payrecon.replay.of") is not None
    ]
