"""``payrecon dlq park``: set aside dead letters that keep failing, so replays leave them be.

Parking copies a dead letter, key, value and ``payrecon.dlq.*`` headers byte for byte, to
``<dlq>.parked`` with ``payrecon.park.reason``, ``.of`` (its ``.dlq`` coordinates) and
``.at`` headers. That copy is the mark: ``list`` counts the message as parked and ``replay``
skips it unless ``--include-parked``. One acknowledged write, so a crash leaves a dead letter
either parked or not; parking it again is a no-op (two parks racing may both write a copy,
which is harmless: a parked message is counted once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipelines.dlq_replay import Kafka
from schemas.dlq_replay import PARK_AT, PARK_OF, PARK_REASON, Coordinates, parked_topic
from transforms.dlq_io import AcknowledgedProducer, Outgoing, create_topic
from transforms.dlq_letters import DeadLetter, DlqState, Status
from transforms.kafka_offsets import BrokerUnavailable


@dataclass
class ParkOutcome:
    parked: list[DeadLetter] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)
    replayed: list[DeadLetter] = field(default_factory=list)  # nothing left to park
    dry_run: bool = False

    def rows(self) -> list[dict]:
        """One row per dead letter: ``result``, ``dead_letter``, ``reason``."""
        parked = "would_park" if self.dry_run else "parked"
        return [
            {"result": result, "dead_letter": str(letter.at), "reason": letter.reason}
            for result, letters in (
                (parked, self.parked),
                ("already_parked", self.already),
                ("already_replayed", self.replayed),
            )
            for letter in letters
        ]

    def render(self) -> str:
        rows = self.rows()
        lines = [
            f"{r['result'].replace('_', ' '):<17} {r['dead_letter']}  ({r['reason']})" for r in rows
        ]
        verb = "would park" if self.dry_run else "parked"
        lines.append(
            f"park: {len(self.parked)} {verb}, {len(self.already)} already parked, "
            f"{len(self.replayed)} replayed (not parked)"
        )
        return "\n".join(lines)


def choose_to_park(letters: Iterable[DeadLetter], state: DlqState) -> ParkOutcome:
    """One dead letter per message; already parked or replayed ones are reported, not parked."""
    outcome = ParkOutcome()
    seen: set[Coordinates] = set()
    for letter in sorted(letters, key=lambda x: x.at):
        identity = letter.source or letter.at
        if identity in seen:
            continue
        seen.add(identity)
        status = state.status(letter)
        if state.is_parked(letter):
            outcome.already.append(letter)
        elif status in (Status.REPLAYED, Status.REPLAY_PENDING):
            outcome.replayed.append(letter)
        else:
            outcome.parked.append(letter)
    return outcome


def park(kafka: Kafka, dlq: str, outcome: ParkOutcome, note: str) -> None:
    """Copy ``outcome.parked`` to ``<dlq>.parked``; raises unless every copy was acknowledged."""
    if not outcome.parked:
        return
    topic = parked_topic(dlq)
    create_topic(kafka.bootstrap_servers, topic, overrides=kafka.overrides, timeout=kafka.timeout)
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()
    messages = [
        Outgoing(
            topic=topic,
            partition=0,
            key=letter.key,
            value=letter.value,
            headers=(
                *letter.headers,
                (PARK_REASON, note.encode()),
                (PARK_OF, str(letter.at).encode()),
                (PARK_AT, at),
            ),
        )
        for letter in outcome.parked
    ]
    producer = AcknowledgedProducer(kafka.bootstrap_servers, kafka.overrides)
    deliveries = producer.send(messages, kafka.timeout)
    errors = [d.error for d in deliveries if d.offset is None]
    if errors:
        raise BrokerUnavailable(f"parking in {topic}: {len(errors)} not acknowledged: {errors[:3]}")
