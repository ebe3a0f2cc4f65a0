"""Which dead letters a ``payrecon dlq`` command acts on, and the fixes a replay applies.

A selection is a conjunction of filters over one ``.dlq`` topic: ``--offset`` (with
``--partition``), ``--reason``, ``--older-than``, ``--failed-again``; ``--all`` selects
everything explicitly, so that no command replays or parks a whole topic by omission.

A fixes file (``replay --fixed-file``) holds one JSON object per line naming a dead letter by
its place on the ``.dlq`` topic and the value to replay instead of the original:
``{"partition": 0, "offset": 5, "value": {...}}``. ``value`` is a JSON object or array
(replayed as its compact JSON text) or a string (replayed as its UTF-8 bytes);
``value_base64`` gives raw bytes instead. ``topic`` may be given and must then be the
``.dlq`` topic. ``partition`` may be left out when the topic has one partition.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pipelines.options import UsageError
from schemas.dead_letter import Reason
from schemas.dlq_replay import Coordinates
from transforms.dlq_letters import DeadLetter, DlqState

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FIX_KEYS = {"topic", "partition", "offset", "value", "value_base64"}


def duration(text: str) -> timedelta:
    """argparse type: ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` to a timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 30m, 12h or 7d (units: s m h d w)"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class Selection:
    """Filters over one ``.dlq`` topic; every given filter must match."""

    topic: str
    offsets: frozenset[int] = frozenset()
    partition: int | None = None
    reason: str | None = None
    older_than: timedelta | None = None
    failed_again: bool = False
    everything: bool = False
    extra: frozenset[Coordinates] = field(default_factory=frozenset)  # from a fixes file

    @property
    def filtered(self) -> bool:
        """Whether any filter was given (``--all`` and a fixes file are not filters)."""
        return bool(
            self.offsets
            or self.reason is not None
            or self.older_than is not None
            or self.partition is not None
            or self.failed_again
        )

    @property
    def asked(self) -> bool:
        """Whether anything was asked for at all."""
        return self.filtered or self.everything or bool(self.extra)

    def describe(self) -> str:
        """The selection as the flags that made it, e.g. ``--reason not_json --older-than 7d``."""
        parts = [f"--offset {o}" for o in sorted(self.offsets)]
        if self.partition is not None:
            parts.append(f"--partition {self.partition}")
        if self.reason is not None:
            parts.append(f"--reason {self.reason}")
        if self.older_than is not None:
            parts.append(f"--older-than {self.older_than}")
        if self.failed_again:
            parts.append("--failed-again")
        return " ".join(parts) or "--all"

    def check(self, partitions: int) -> None:
        """Usage errors that need the topic's partition count."""
        if self.partition is not None and not 0 <= self.partition < partitions:
            raise UsageError(
                f"--partition {self.partition}: {self.topic} has partitions 0..{partitions - 1}"
            )
        if self.offsets and self.partition is None and partitions > 1:
            raise UsageError(
                f"--offset needs --partition: {self.topic} has {partitions} partitions"
            )

    def matches(self, letter: DeadLetter, state: DlqState, now: datetime) -> bool:
        if letter.at in self.extra:
            return True
        if not self.filtered:
            return self.everything
        if self.partition is not None and letter.at.partition != self.partition:
            return False
        if self.offsets and letter.at.offset not in self.offsets:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.older_than is not None and (
            letter.dead_lettered_at is None or now - letter.dead_lettered_at < self.older_than
        ):
            return False
        return not self.failed_again or state.replay_that_failed(letter) is not None

    def check_found(self, letters: list[DeadLetter]) -> None:
        """Every ``--offset`` asked for and every fix must name a dead letter of ``letters``
        (the whole topic), and ``--reason`` a known reason or one found there."""
        places = {letter.at for letter in letters}
        wanted = {Coordinates(self.topic, self.partition or 0, o) for o in self.offsets} | set(
            self.extra
        )
        missing = sorted(wanted - places)
        if missing:
            where = ", ".join(str(m) for m in missing[:5])
            raise UsageError(f"no dead letter at {where} (see `payrecon dlq show`)")
        if (
            self.reason is not None
            and self.reason not in {r.value for r in Reason}
            and not any(letter.reason == self.reason for letter in letters)
        ):
            known = ", ".join(r.value for r in Reason)
            raise UsageError(f"--reason {self.reason!r} is not a reason; one of: {known}")


def load_fixes(path: Path, topic: str, partitions: int) -> dict[Coordinates, bytes]:
    """The fixes file as ``{dlq coordinates: value to replay}``; raises UsageError naming the
    line that is wrong."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--fixed-file {str(path)!r}: {exc}") from None
    fixes: dict[Coordinates, bytes] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"--fixed-file {path.name} line {number}"
        at, value = _fix(line, topic, partitions, where)
        if at in fixes and fixes[at] != value:
            raise UsageError(f"{where}: a second, different fix for {at}")
        fixes[at] = value
    if not fixes:
        raise UsageError(f"--fixed-file {str(path)!r} holds no fix")
    return fixes


def _fix(line: str, topic: str, partitions: int, where: str) -> tuple[Coordinates, bytes]:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected an object with partition, offset and value")
    unknown = sorted(set(raw) - _FIX_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_FIX_KEYS)}")
    if raw.get("topic", topic) != topic:
        raise UsageError(f"{where}: topic {raw['topic']!r} is not {topic}")
    partition = raw.get("partition", 0 if partitions == 1 else None)
    offset = raw.get("offset")
    if not isinstance(partition, int) or not isinstance(offset, int) or isinstance(offset, bool):
        raise UsageError(f"{where}: partition and offset must be whole numbers")
    return Coordinates(topic, partition, offset), _fixed_value(raw, where)


def _fixed_value(raw: dict, where: str) -> bytes:
    if ("value" in raw) == ("value_base64" in raw):
        raise UsageError(f"{where}: give exactly one of value and value_base64")
    if "value_base64" in raw:
        try:
            return base64.b64decode(raw["value_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise UsageError(f"{where}: value_base64 is not base64") from None
    value = raw["value"]
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    raise UsageError(f"{where}: value must be a JSON object, an array or a string")
