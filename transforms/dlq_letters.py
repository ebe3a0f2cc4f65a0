"""Dead letters as read back from a ``.dlq`` topic, and what has been done about them.

``DeadLetter`` is one message of a ``.dlq`` topic with its ``payrecon.dlq.*`` headers parsed.
``DlqState`` is what ``<dlq>.replayed`` and ``<dlq>.parked`` say about each failed source
message (see ``schemas.dlq_replay``): replayed, replay pending, parked, or still waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from schemas.dead_letter import HEADER_PREFIX
from schemas.dlq_replay import (
    DONE,
    PARK_AT,
    PARK_OF,
    PARK_REASON,
    PENDING,
    Coordinates,
    parked_topic,
    replayed_topic,
)
from transforms.dlq_io import StoredMessage, read_topic

UNREADABLE = "(no payrecon.dlq headers)"


class Status(StrEnum):
    """Where a dead letter stands. Values are stable: ``--json`` output uses them."""

    WAITING = "waiting"  # neither replayed nor parked
    REPLAY_PENDING = "replay_pending"  # a replay was started and not confirmed yet
    REPLAYED = "replayed"
    PARKED = "parked"


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw is not None else ""


def _int(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _time(raw: bytes | None) -> datetime | None:
    try:
        return datetime.fromisoformat(raw.decode()) if raw else None
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass(frozen=True)
class DeadLetter:
    """One message of a ``.dlq`` topic: the original bytes and why and where it failed.

    ``source`` is None when the message lacks the coordinate headers (not written by
    payrecon); such a message can be shown and parked but not replayed.
    """

    at: Coordinates
    source: Coordinates | None
    reason: str
    detail: str
    job: str
    dead_lettered_at: datetime | None
    source_timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_message(cls, msg: StoredMessage) -> DeadLetter:
        def header(name: str) -> bytes | None:
            return msg.header(HEADER_PREFIX + name)

        topic, partition, offset = header("topic"), _int(header("partition")), header("offset")
        source = None
        if topic and partition is not None and _int(offset) is not None:
            source = Coordinates(_text(topic), partition, int(offset or 0))
        reason = header("reason")
        return cls(
            at=Coordinates(msg.topic, msg.partition, msg.offset),
            source=source,
            reason=_text(reason) if reason else UNREADABLE,
            detail=_text(header("detail")),
            job=_text(header("job")),
            dead_lettered_at=_time(header("dead_lettered_at")),
            source_timestamp_ms=_int(header("timestamp")),
            key=msg.key,
            value=msg.value,
            headers=msg.headers,
        )


@dataclass(frozen=True)
class ReplayRecord:
    """One state of a replay, as kept in ``<dlq>.replayed`` (``schemas.dlq_replay``)."""

    state: str
    source: str
    dead_letter: str
    target_topic: str
    target_partition: int
    scan_from: int
    fixed: bool
    value_sha256: str
    at: str
    replayed_offset: int | None = None

    def to_value(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_value(cls, value: bytes | None) -> ReplayRecord | None:
        """The record, or None for a value that is not one (a tombstone, foreign data)."""
        try:
            raw = json.loads(value or b"")
            record = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
            Coordinates.parse(record.source)
        except (ValueError, TypeError):
            return None
        return record

    @property
    def replay(self) -> Coordinates | None:
        """Where the replay landed, once acknowledged."""
        if self.state != DONE or self.replayed_offset is None:
            return None
        return Coordinates(self.target_topic, self.target_partition, self.replayed_offset)


@dataclass(frozen=True)
class Parked:
    """A parked dead letter: the copy in ``<dlq>.parked`` and why it was parked."""

    letter: DeadLetter
    note: str
    parked_at: datetime | None


@dataclass
class DlqState:
    """Replays and parked dead letters of one ``.dlq`` topic, by source coordinates."""

    replays: dict[Coordinates, ReplayRecord] = field(default_factory=dict)
    parked: dict[Coordinates, Parked] = field(default_factory=dict)
    _replay_copies: dict[Coordinates, ReplayRecord] = field(default_factory=dict)

    def add_replay(self, record: ReplayRecord) -> None:
        self.replays[Coordinates.parse(record.source)] = record
        if record.replay is not None:
            self._replay_copies[record.replay] = record

    def status(self, letter: DeadLetter) -> Status:
        record = self.replays.get(letter.source) if letter.source else None
        if record is not None:
            return Status.REPLAYED if record.state == DONE else Status.REPLAY_PENDING
        return Status.PARKED if self.is_parked(letter) else Status.WAITING

    def is_parked(self, letter: DeadLetter) -> bool:
        return letter.source in self.parked if letter.source else letter.at in self.parked

    def replay_that_failed(self, letter: DeadLetter) -> ReplayRecord | None:
        """The replay this dead letter is a copy of, when a replayed message failed again."""
        return self._replay_copies.get(letter.source) if letter.source else None


def read_dead_letters(
    bootstrap_servers: str,
    dlq: str,
    partitions: int,
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Iterator[DeadLetter]:
    """Every dead letter of ``dlq``, read with ``assign()`` to the end of each partition."""
    for msg in read_topic(bootstrap_servers, dlq, partitions, overrides, timeout):
        yield DeadLetter.from_message(msg)


def load_state(
    bootstrap_servers: str,
    dlq: str,
    topics: Mapping[str, int],
    overrides: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> DlqState:
    """Read ``<dlq>.replayed`` and ``<dlq>.parked`` whole (absent topics mean nothing yet).

    ``topics`` is the cluster's topics with their partition counts (``topic_partitions``):
    a bookkeeping topic that does not exist is not named to the broker, which would create it.
    """
    state = DlqState()
    replayed = replayed_topic(dlq)
    if replayed in topics:
        for msg in read_topic(bootstrap_servers, replayed, topics[replayed], overrides, timeout):
            record = ReplayRecord.from_value(msg.value)
            if record is not None and record.state in (PENDING, DONE):
                state.add_replay(record)
    parked = parked_topic(dlq)
    if parked in topics:
        for msg in read_topic(bootstrap_servers, parked, topics[parked], overrides, timeout):
            entry = _parked(msg)
            if entry is not None:
                state.parked.setdefault(entry.letter.source or entry.letter.at, entry)
    return state


def _parked(msg: StoredMessage) -> Parked | None:
    """The parked copy as the dead letter it was (its ``.dlq`` coordinates restored)."""
    try:
        of = Coordinates.parse(_text(msg.header(PARK_OF)))
    except ValueError:
        return None
    letter = replace(DeadLetter.from_message(msg), at=of)
    return Parked(letter, _text(msg.header(PARK_REASON)), _time(msg.header(PARK_AT)))
