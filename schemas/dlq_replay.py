"""Replaying and parking dead letters: what ``payrecon dlq`` writes, and where.

A dead letter is identified by the coordinates of the message that failed, its *source*
(``payrecon.dlq.topic/partition/offset``), not by its place on the ``.dlq`` topic: a rerun of
a window, or a second job reading the same topic, dead-letters the same source message again,
and those copies are one failure to fix and replay once.

* A replay is the dead letter's original key and value (or a fixed value) produced to the
  source topic and partition with the ``REPLAY_*`` headers below.
* Each replay is recorded in ``<dlq>.replayed`` (compacted, keyed by the source coordinates)
  as a ``DLQ_REPLAY_V1`` JSON value: ``pending`` before the replay is produced, ``done``
  after the broker acknowledged it. A ``pending`` record whose replay may or may not have
  landed is resolved by looking for the ``REPLAY_SOURCE`` header in the target partition
  from ``scan_from`` on, so a replay is published once even across a crash.
* A parked dead letter is copied to ``<dlq>.parked``: its key, value and ``payrecon.dlq.*``
  headers, plus the ``PARK_*`` headers. Replays skip parked dead letters unless asked.

Coordinates travel as text, ``topic/partition/offset`` (a topic name has no ``/``).
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa

from schemas.fields import field, versioned

REPLAY_OF = "payrecon.replay.of"  # dlq topic/partition/offset of the dead letter replayed
REPLAY_SOURCE = "payrecon.replay.source"  # topic/partition/offset of the message that failed
REPLAY_AT = "payrecon.replay.at"  # RFC 3339 UTC
REPLAY_FIXED = "payrecon.replay.fixed"  # "true" when the value was replaced by a fix

PARK_REASON = "payrecon.park.reason"  # why an operator parked it (free text)
PARK_OF = "payrecon.park.of"  # dlq topic/partition/offset of the dead letter parked
PARK_AT = "payrecon.park.at"  # RFC 3339 UTC

PENDING = "pending"
DONE = "done"

DLQ_REPLAY_V1 = versioned(
    "dlq_replay",
    1,
    [
        field(
            "state",
            pa.string(),
            "pending: about to be produced; done: acknowledged.",
            enum=[PENDING, DONE],
        ),
        field("source", pa.string(), "topic/partition/offset of the message that failed."),
        field("dead_letter", pa.string(), "dlq topic/partition/offset of the copy replayed."),
        field("target_topic", pa.string(), "Topic the replay is produced to (the source's)."),
        field("target_partition", pa.int32(), "Partition the replay is produced to."),
        field(
            "scan_from",
            pa.int64(),
            "The target partition's end before the replay was produced: a pending replay "
            "is looked for from here.",
        ),
        field(
            "replayed_offset", pa.int64(), "Offset of the replay once acknowledged.", nullable=True
        ),
        field("fixed", pa.bool_(), "True when the value was replaced by a fix."),
        field("value_sha256", pa.string(), "SHA-256 (hex) of the value replayed."),
        field("at", pa.string(), "When this state was recorded, RFC 3339 UTC."),
    ],
    doc="One replay of a dead letter, as recorded in <dlq>.replayed (latest state per key).",
)


class Coordinates(NamedTuple):
    """Where a message is: ``topic/partition/offset``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Coordinates:
        """``"t/1/42"`` to ``Coordinates("t", 1, 42)``; raises ValueError otherwise."""
        topic, _, rest = text.rpartition("/")
        topic, _, partition = topic.rpartition("/")
        if not topic:
            raise ValueError(f"{text!r} is not topic/partition/offset")
        return cls(topic, int(partition), int(rest))


def replayed_topic(dlq: str) -> str:
    """Where the replays of ``dlq``'s dead letters are recorded."""
    return f"{dlq}.replayed"


def parked_topic(dlq: str) -> str:
    """Where ``dlq``'s parked dead letters are kept."""
    return f"{dlq}.parked"
