"""``payrecon dlq replay``: put dead letters back on their source topic, each one once.

A replay produces the dead letter's original key and value (or the fix given for it) to the
source topic *and partition*, with the original message timestamp, so it lands where the
original was, in the same time window, and a rerun of that window's job picks it up. It
carries ``payrecon.replay.of`` (the dead letter), ``.source`` (the message that failed),
``.at`` and ``.fixed`` headers.

Once: every dead letter of a source message is one failure, replayed at most once. Each
replay is recorded in ``<dlq>.replayed`` (compacted, keyed by the source coordinates)
before and after the produce:

1. ``pending`` with ``scan_from``, the target partition's end before the produce;
2. the replay itself, produced and acknowledged;
3. ``done`` with the replay's offset.

A run that dies between 1 and 3 leaves ``pending``. The next replay of that dead letter
looks for a message with its ``payrecon.replay.source`` header in the target partition from
``scan_from`` on: found, it is recorded ``done`` and not produced again; not found, it is
produced. So a crash (of a run that has ended) never publishes twice and never loses a
replay; ``list`` shows such a dead letter as ``replay_pending`` until then. Not covered:
two replays of the same dead letter *running at the same time* can both publish it; for
that, and for any other redelivery, the consumers dedupe by ``event_id`` (reconcile counts a
second copy as ``redelivered``, never twice).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipelines.options import UsageError
from schemas.dlq_replay import (
    DONE,
    PENDING,
    REPLAY_AT,
    REPLAY_FIXED,
    REPLAY_OF,
    REPLAY_SOURCE,
    Coordinates,
    replayed_topic,
)
from transforms.dlq_io import (
    AcknowledgedProducer,
    Outgoing,
    create_topic,
    end_offsets,
    read_to_end,
)
from transforms.dlq_letters import DeadLetter, DlqState, ReplayRecord, Status
from transforms.kafka_offsets import BrokerUnavailable

COMPACTED = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class Kafka:
    """How to reach the cluster."""

    bootstrap_servers: str
    overrides: dict
    timeout: float


@dataclass(frozen=True)
class Candidate:
    """One source message to replay: the dead letter chosen for it and the bytes to send."""

    letter: DeadLetter
    value: bytes | None
    fixed: bool

    @property
    def source(self) -> Coordinates:
        assert self.letter.source is not None
        return self.letter.source


@dataclass
class ReplayOutcome:
    """What a replay did, per dead letter, for the report."""

    replayed: list[tuple[Candidate, Coordinates]] = field(default_factory=list)
    recovered: list[tuple[Candidate, Coordinates]] = field(default_factory=list)
    already: list[tuple[DeadLetter, ReplayRecord]] = field(default_factory=list)
    parked: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[Candidate, str]] = field(default_factory=list)
    would_replay: list[Candidate] = field(default_factory=list)  # --dry-run
    dry_run: bool = False

    def rows(self) -> list[dict]:
        """One row per dead letter: ``result``, ``dead_letter``, ``to``, ``fixed`` (+``error``)."""
        recovered = "would_record" if self.dry_run else "recovered"
        rows = [
            *(_row("replayed", c.letter, to, c.fixed) for c, to in self.replayed),
            *(_row(recovered, c.letter, to, c.fixed) for c, to in self.recovered),
            *(_row("already_replayed", x, r.replay, r.fixed) for x, r in self.already),
            *(_row("skipped_parked", x, None, False) for x in self.parked),
            *(_row("would_replay", c.letter, _target(c), c.fixed) for c in self.would_replay),
        ]
        return rows + [
            {**_row("failed", c.letter, None, c.fixed), "error": error} for c, error in self.failed
        ]

    def render(self) -> str:
        lines = []
        for row in self.rows():
            notes = [n for n in ("fixed" if row["fixed"] else "", _NOTES.get(row["result"])) if n]
            lines.append(
                f"{row['result'].replace('_', ' '):<17} {row['dead_letter']}"
                + (f" -> {row['to']}" if row["to"] else "")
                + (f"  ({', '.join(notes)})" if notes else "")
                + (f": {row['error']}" if "error" in row else "")
            )
        counts = Counter(row["result"].replace("_", " ") for row in self.rows())
        summary = ", ".join(f"{n} {what}" for what, n in counts.items())
        return "\n".join([*lines, f"replay: {summary or 'nothing selected'}"])


_NOTES = {
    "recovered": "published by an interrupted replay; now recorded",
    "would_record": "published by an interrupted replay; would be recorded",
    "skipped_parked": "parked; --include-parked replays it",
    "already_replayed": "nothing done",
    "failed": "not acknowledged; replay again to finish",
}


def _target(candidate: Candidate) -> str:
    return f"{candidate.source.topic}/{candidate.source.partition}"


def _row(result: str, letter: DeadLetter, to: Coordinates | str | None, fixed: bool) -> dict:
    return {
        "result": result,
        "dead_letter": str(letter.at),
        "to": None if to is None else str(to),
        "fixed": fixed,
    }


def choose(
    letters: Iterable[DeadLetter],
    state: DlqState,
    fixes: dict[Coordinates, bytes],
    topics: dict[str, int],
    include_parked: bool,
    outcome: ReplayOutcome,
) -> tuple[list[Candidate], list[Candidate]]:
    """Split the selected dead letters into (new replays, pending ones to resolve).

    One candidate per source message, the fixed dead letter preferred; already replayed and
    (unless ``include_parked``) parked ones go to ``outcome``. Raises UsageError, before
    anything is written, for a dead letter that cannot be replayed.
    """
    by_source: dict[Coordinates, Candidate] = {}
    for letter in sorted(letters, key=lambda x: x.at):
        if letter.source is None:
            raise UsageError(f"{letter.at} has no payrecon.dlq headers: it cannot be replayed")
        partitions = topics.get(letter.source.topic, 0)
        if letter.source.partition >= partitions:
            raise UsageError(
                f"{letter.at}: its source topic {letter.source.topic} "
                + ("does not exist" if not partitions else f"has only {partitions} partitions")
            )
        fix = fixes.get(letter.at)
        known = by_source.get(letter.source)
        if known is not None:
            if fix is not None and known.fixed and known.value != fix:
                raise UsageError(f"{known.letter.at} and {letter.at} are one message, fixed twice")
            if fix is None or known.fixed:
                continue
        by_source[letter.source] = Candidate(
            letter, fix if fix is not None else letter.value, fix is not None
        )
    new, pending = [], []
    for source, candidate in sorted(by_source.items()):
        status = state.status(candidate.letter)
        if status is Status.REPLAYED:
            outcome.already.append((candidate.letter, state.replays[source]))
        elif status is Status.REPLAY_PENDING:
            pending.append(candidate)
        elif status is Status.PARKED and not include_parked:
            outcome.parked.append(candidate.letter)
        else:
            new.append(candidate)
    return new, pending


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _record(
    candidate: Candidate, state: str, scan_from: int, offset: int | None = None
) -> ReplayRecord:
    return ReplayRecord(
        state=state,
        source=str(candidate.source),
        dead_letter=str(candidate.letter.at),
        target_topic=candidate.source.topic,
        target_partition=candidate.source.partition,
        scan_from=scan_from,
        fixed=candidate.fixed,
        value_sha256=hashlib.sha256(candidate.value or b"").hexdigest(),
        at=_now(),
        replayed_offset=offset,
    )


def _place(candidate: Candidate) -> tuple[str, int]:
    return candidate.source.topic, candidate.source.partition


def replay_message(candidate: Candidate, at: str) -> Outgoing:
    """The replay of ``candidate``: original key, partition and timestamp, provenance headers."""
    letter = candidate.letter
    headers = (
        (REPLAY_OF, str(letter.at).encode()),
        (REPLAY_SOURCE, str(candidate.source).encode()),
        (REPLAY_AT, at.encode()),
        (REPLAY_FIXED, b"true" if candidate.fixed else b"false"),
    )
    return Outgoing(
        topic=candidate.source.topic,
        partition=candidate.source.partition,
        key=letter.key,
        value=candidate.value,
        headers=headers,
        timestamp_ms=letter.source_timestamp_ms,
    )


class Replayer:
    """Replays candidates of one ``.dlq`` topic with the pending/done protocol above.

    The steps are separate methods so that a test can stop between any two of them, as a
    crash would.
    """

    def __init__(self, kafka: Kafka, dlq: str):
        self.kafka = kafka
        self.dlq = dlq
        self.producer = AcknowledgedProducer(kafka.bootstrap_servers, kafka.overrides)

    def record(self, records: list[ReplayRecord]) -> None:
        """Write replay states to ``<dlq>.replayed``; raises unless all were acknowledged."""
        if not records:
            return
        k = self.kafka
        topic = replayed_topic(self.dlq)
        create_topic(
            k.bootstrap_servers, topic, config=COMPACTED, overrides=k.overrides, timeout=k.timeout
        )
        messages = [Outgoing(topic, 0, r.source.encode(), r.to_value()) for r in records]
        deliveries = self.producer.send(messages, k.timeout)
        errors = [d.error for d in deliveries if d.offset is None]
        if errors:
            raise BrokerUnavailable(f"recording replays in {topic}: {errors[:3]}")

    def resolve(self, pending: list[Candidate], state: DlqState) -> tuple[list, list[Candidate]]:
        """Pending replays: ``([(candidate, where it landed)], [candidates never produced])``."""
        k = self.kafka
        wanted = {str(c.source).encode(): c for c in pending}
        starts: dict[tuple[str, int], int] = {}
        for c in pending:
            place = (c.source.topic, c.source.partition)
            scan_from = state.replays[c.source].scan_from
            starts[place] = min(starts.get(place, scan_from), scan_from)
        found: dict[Coordinates, Coordinates] = {}
        for topic in sorted({t for t, _ in starts}):
            offsets = {p: o for (t, p), o in starts.items() if t == topic}
            for msg in read_to_end(k.bootstrap_servers, topic, offsets, k.overrides, k.timeout):
                candidate = wanted.get(msg.header(REPLAY_SOURCE) or b"")
                if candidate is not None and candidate.source not in found:
                    found[candidate.source] = Coordinates(topic, msg.partition, msg.offset)
        landed = [(c, found[c.source]) for c in pending if c.source in found]
        return landed, [c for c in pending if c.source not in found]

    def mark_pending(self, candidates: list[Candidate]) -> dict[tuple[str, int], int]:
        """Step 1: record where each replay's partition ends, before producing anything.

        Returns those ends, ``{(topic, partition): offset}``."""
        k = self.kafka
        ends: dict[tuple[str, int], int] = {}
        for topic in sorted({c.source.topic for c in candidates}):
            parts = sorted({c.source.partition for c in candidates if c.source.topic == topic})
            found = end_offsets(k.bootstrap_servers, topic, parts, k.overrides, k.timeout)
            ends.update(((topic, p), end) for p, end in found.items())
        self.record([_record(c, PENDING, ends[_place(c)]) for c in candidates])
        return ends

    def publish(
        self, candidates: list[Candidate], ends: dict[tuple[str, int], int], outcome: ReplayOutcome
    ) -> list[ReplayRecord]:
        """Step 2: produce the replays; returns the ``done`` records of the acknowledged ones."""
        at = _now()
        messages = [replay_message(c, at) for c in candidates]
        deliveries = self.producer.send(messages, self.kafka.timeout)
        done = []
        for candidate, delivery in zip(candidates, deliveries, strict=True):
            if delivery.offset is None:
                outcome.failed.append((candidate, delivery.error or "not acknowledged"))
                continue
            landed = Coordinates(candidate.source.topic, delivery.partition, delivery.offset)
            outcome.replayed.append((candidate, landed))
            done.append(_record(candidate, DONE, ends[_place(candidate)], delivery.offset))
        return done

    def run(
        self,
        new: list[Candidate],
        pending: list[Candidate],
        state: DlqState,
        outcome: ReplayOutcome,
    ) -> ReplayOutcome:
        """Resolve pending replays, then replay the rest; step 3 records what landed."""
        landed, never_produced = self.resolve(pending, state) if pending else ([], [])
        outcome.recovered.extend(landed)
        todo = never_produced + new
        if outcome.dry_run:
            outcome.would_replay.extend(todo)
            return outcome
        done = [
            _record(c, DONE, state.replays[c.source].scan_from, where.offset) for c, where in landed
        ]
        if todo:
            ends = self.mark_pending(todo)
            done += self.publish(todo, ends, outcome)
        self.record(done)
        return outcome
