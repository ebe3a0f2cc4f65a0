"""Ledger events of another shape, mapped onto ledger event v1 before they are checked.

Users whose services publish ``{"id": ..., "ts": ..., "charge": {"amount_cents": ...}}``
describe the mapping in configuration (``ledger_mapping`` in ``payrecon.yaml``) instead of
forking the decoder. :func:`map_ledger_event` is a pure function the decoder applies to each
parsed JSON object before the v1 checks, so a mapped message that still is not valid v1 is
dead-lettered with the usual reason, and its dead letter keeps the original bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.ledger_event import LEDGER_EVENT_V1

V1_FIELDS = tuple(LEDGER_EVENT_V1.names)


@dataclass(frozen=True)
class LedgerFieldMap:
    """``fields``: source field (``a.b`` reaches into nested objects) -> v1 field;
    ``constants``: v1 field -> a value every event gets (e.g. one currency per topic)."""

    fields: Mapping[str, str] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = mapping_problems(self.fields, self.constants)
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LedgerFieldMap:
        unknown = set(obj) - {"fields", "constants"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; allowed: fields, constants")
        return cls(dict(obj.get("fields") or {}), dict(obj.get("constants") or {}))

    def to_json(self) -> dict[str, Any]:
        return {"fields": dict(self.fields), "constants": dict(self.constants)}

    def __bool__(self) -> bool:
        return bool(self.fields or self.constants)


def mapping_problems(fields: Mapping[str, str], constants: Mapping[str, Any]) -> list[str]:
    """Every reason the mapping cannot produce v1 events, as ``(key, value, allowed)`` text."""
    problems = []
    allowed = ", ".join(V1_FIELDS)
    for source, target in fields.items():
        if target not in V1_FIELDS:
            problems.append(f"fields.{source}: got {target!r}; allowed: a v1 field ({allowed})")
    targets = list(fields.values())
    for target in sorted({t for t in targets if targets.count(t) > 1}):
        sources = sorted(s for s, t in fields.items() if t == target)
        problems.append(f"fields: got {sources} for {target!r}; allowed: one source per v1 field")
    for target in constants:
        if target not in V1_FIELDS:
            problems.append(f"constants.{target}: unknown v1 field; allowed: {allowed}")
        elif target in targets:
            problems.append(
                f"constants.{target}: also mapped from a source field; allowed: one of the two"
            )
    return problems


def _lookup(obj: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def map_ledger_event(obj: Any, mapping: LedgerFieldMap) -> Any:
    """The v1-shaped object for ``obj``: mapped source fields renamed (a missing source
    leaves its v1 field missing, so the check names it), constants set, every other key kept
    as it is. Anything but a JSON object is returned unchanged for the checks to reject."""
    if not mapping or not isinstance(obj, dict):
        return obj
    tops = {source.split(".", 1)[0] for source in mapping.fields}
    mapped = {key: value for key, value in obj.items() if key not in tops}
    for source, target in mapping.fields.items():
        found, value = _lookup(obj, source)
        if found:
            mapped[target] = value
    mapped.update(mapping.constants)
    return mapped
