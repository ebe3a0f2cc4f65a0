"""``payrecon dlq list`` and ``show``: what is in a dead-letter topic, as text or JSON.

Counts are of dead letters (messages on the ``.dlq`` topic) and of the distinct source
messages they stand for: a window read twice dead-letters the same message twice, and it is
the message that gets replayed or parked, once. Bytes are printed so that nothing is lost and
a terminal is safe: UTF-8 text when it is printable, JSON-escaped when it holds control
characters, base64 when it is not UTF-8, always with the byte length.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.dlq_replay import Coordinates
from transforms.dlq_letters import DeadLetter, DlqState, Status

_LABELS = {Status.REPLAY_PENDING: "pending"}
_COLUMNS = ("dead letters", "messages", *(_LABELS.get(s, s.value) for s in Status), "failed again")
_WIDTH = max(len(c) for c in _COLUMNS) + 2


@dataclass
class Counts:
    """Dead letters and distinct messages, the messages by status."""

    dead_letters: int = 0
    messages: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    failed_again: int = 0

    def row(self) -> list[int]:
        statuses = [self.by_status.get(s.value, 0) for s in Status]
        return [self.dead_letters, self.messages, *statuses, self.failed_again]

    def as_json(self) -> dict[str, int]:
        return {
            "dead_letters": self.dead_letters,
            "messages": self.messages,
            **{s.value: self.by_status.get(s.value, 0) for s in Status},
            "failed_again": self.failed_again,
        }


@dataclass
class TopicSummary:
    """Everything ``list`` says about one ``.dlq`` topic."""

    topic: str
    partitions: int
    total: Counts = field(default_factory=Counts)
    by_reason: dict[str, Counts] = field(default_factory=dict)
    by_job: Counter[str] = field(default_factory=Counter)
    oldest: datetime | None = None
    newest: datetime | None = None

    @classmethod
    def of(cls, topic: str, partitions: int, letters: list[DeadLetter], state: DlqState):
        summary = cls(topic, partitions)
        seen: set[Coordinates] = set()
        for letter in letters:
            counts = summary.by_reason.setdefault(letter.reason, Counts())
            summary.by_job[letter.job or "?"] += 1
            stamp = letter.dead_lettered_at
            if stamp is not None:
                summary.oldest = min(summary.oldest or stamp, stamp)
                summary.newest = max(summary.newest or stamp, stamp)
            identity = letter.source or letter.at
            first = identity not in seen
            seen.add(identity)
            for c in (counts, summary.total):
                c.dead_letters += 1
                if first:
                    c.messages += 1
                    c.by_status[state.status(letter).value] += 1
                    c.failed_again += state.replay_that_failed(letter) is not None
        summary.by_reason = dict(sorted(summary.by_reason.items()))
        return summary

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": self.partitions,
            **self.total.as_json(),
            "oldest_dead_lettered_at": _iso(self.oldest),
            "newest_dead_lettered_at": _iso(self.newest),
            "by_reason": {r: c.as_json() for r, c in self.by_reason.items()},
            "by_job": dict(sorted(self.by_job.items())),
        }

    def render(self) -> str:
        n = self.total
        lines = [
            f"{self.topic}: {n.dead_letters:,} dead letters of {n.messages:,} messages"
            + (f", dead-lettered {_iso(self.oldest)} .. {_iso(self.newest)}" if self.oldest else "")
        ]
        if not n.dead_letters:
            return lines[0]
        width = max(len(r) for r in [*self.by_reason, "reason"]) + 2
        lines.append("  " + "reason".ljust(width) + "".join(c.rjust(_WIDTH) for c in _COLUMNS))
        for reason, counts in [*self.by_reason.items(), ("total", n)]:
            row = "".join(f"{v:,}".rjust(_WIDTH) for v in counts.row())
            lines.append("  " + reason.ljust(width) + row)
        jobs = ", ".join(f"{job} {count:,}" for job, count in sorted(self.by_job.items()))
        lines.append(f"  by job: {jobs}")
        return "\n".join(lines)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _millis_iso(ms: int | None) -> str | None:
    return None if ms is None else _iso(datetime.fromtimestamp(ms / 1000, tz=UTC))


def printable(raw: bytes | None) -> tuple[str, str]:
    """``(description, text)`` of some bytes, exact and safe to print on a terminal."""
    if raw is None:
        return "none", ""
    size = f"{len(raw):,} bytes"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"{size}, not UTF-8, base64", base64.b64encode(raw).decode()
    if text.isprintable():
        return f"{size}, UTF-8", text
    return f"{size}, UTF-8 with control characters, JSON-escaped", json.dumps(text)


def _bytes_json(raw: bytes | None, name: str) -> dict[str, Any]:
    text = None
    if raw is not None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return {
        f"{name}_bytes": None if raw is None else len(raw),
        f"{name}_text": text,
        f"{name}_base64": None if raw is None else base64.b64encode(raw).decode(),
    }


def _status_line(letter: DeadLetter, state: DlqState) -> str:
    status = state.status(letter)
    text = status.value.replace("_", " ")
    record = state.replays.get(letter.source) if letter.source else None
    if record is not None and record.replay is not None:
        text += f" to {record.replay} at {record.at}" + (" (fixed)" if record.fixed else "")
    if status is Status.PARKED:
        parked = state.parked[letter.source or letter.at]
        text += f" at {_iso(parked.parked_at)}: {parked.note}"
    failed = state.replay_that_failed(letter)
    if failed is not None:
        text += f"; this message is a replay of {failed.dead_letter} that failed again"
    return text


def show_json(letter: DeadLetter, state: DlqState) -> dict[str, Any]:
    failed = state.replay_that_failed(letter)
    return {
        "dead_letter": str(letter.at),
        "topic": letter.at.topic,
        "partition": letter.at.partition,
        "offset": letter.at.offset,
        "source": str(letter.source) if letter.source else None,
        "source_timestamp": _millis_iso(letter.source_timestamp_ms),
        "reason": letter.reason,
        "detail": letter.detail,
        "job": letter.job,
        "dead_lettered_at": _iso(letter.dead_lettered_at),
        "status": state.status(letter).value,
        "replay_of": failed.dead_letter if failed else None,
        "headers": [[k, printable(v)[1]] for k, v in letter.headers],
        **_bytes_json(letter.key, "key"),
        **_bytes_json(letter.value, "value"),
    }


def render_letter(letter: DeadLetter, state: DlqState) -> str:
    source = str(letter.source) if letter.source else "unknown"
    stamp = _millis_iso(letter.source_timestamp_ms)
    lines = [
        str(letter.at),
        f"  source      {source}" + (f", timestamp {stamp}" if stamp else ""),
        f"  reason      {letter.reason}",
        f"  detail      {letter.detail}",
        f"  job         {letter.job}, dead-lettered {_iso(letter.dead_lettered_at)}",
        f"  status      {_status_line(letter, state)}",
        "  headers",
        *(f"    {k}: {printable(v)[1]}" for k, v in letter.headers),
    ]
    for name, raw in (("key", letter.key), ("value", letter.value)):
        description, text = printable(raw)
        lines.append(f"  {name:<11} {description}")
        if raw is not None:
            lines.append(text)
    return "\n".join(lines)
