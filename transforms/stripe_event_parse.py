"""Reading Stripe events: the envelope, and typed access to the fields of ``data.object``.

Plain functions over the decoded JSON, shared by the webhook receiver (which only needs the
envelope) and the ``stripe.events`` consumer (:mod:`transforms.stripe_events`). A message
that is not a Stripe event comes back as ``Invalid(reason, detail)``, ready for a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.dead_letter import Reason
from transforms.ledger_validation import Invalid


@dataclass(frozen=True)
class StripeEvent:
    """The envelope of one Stripe event and its ``data.object``."""

    id: str
    type: str
    created: int  # Unix seconds
    livemode: bool
    obj: dict[str, Any]
    # The idempotency key of the API request that caused the event (None for events
    # Stripe starts itself, and for API versions whose ``request`` is a bare id).
    request_idempotency_key: str | None = None

    @property
    def object_kind(self) -> str | None:
        kind = self.obj.get("object")
        return kind if isinstance(kind, str) else None

    @property
    def occurred_at(self) -> str:
        return rfc3339(self.created)


# The last second an RFC 3339 time (a four-digit year) can name. Later ones cannot become a
# ledger event's occurred_at, nor (in milliseconds) a Kafka timestamp once far enough.
MAX_CREATED = 253_402_300_799  # 9999-12-31T23:59:59Z


def created_in_range(unix_seconds: int) -> bool:
    return 0 <= unix_seconds <= MAX_CREATED


def rfc3339(unix_seconds: int) -> str:
    """``2026-11-20T10:00:00Z`` for a Unix time in seconds."""
    return datetime.fromtimestamp(unix_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_event(value: bytes | None) -> StripeEvent | Invalid:
    """The event in a message value (a webhook request body), or why it is not one."""
    if not value:
        return Invalid(Reason.NOT_JSON, "the message has no value")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Invalid(Reason.NOT_JSON, f"not JSON: {str(exc)[:120]}")
    if not isinstance(raw, dict):
        return Invalid(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(raw).__name__}")
    return event_from_json(raw)


def event_from_json(raw: dict[str, Any]) -> StripeEvent | Invalid:
    """Checks the envelope fields of ``schemas.stripe_event.STRIPE_EVENT_ENVELOPE_V1``."""
    event_id, event_type, created = raw.get("id"), raw.get("type"), raw.get("created")
    if raw.get("object") != "event" or not isinstance(event_id, str):
        return Invalid(Reason.MISSING_FIELD, "not a Stripe event: object 'event' with an id")
    if not event_id.startswith("evt_"):
        return Invalid(Reason.WRONG_TYPE, f"id {event_id[:40]!r} is not an event id (evt_...)")
    if not isinstance(event_type, str) or not event_type:
        return Invalid(Reason.MISSING_FIELD, "type is missing or empty")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        return Invalid(Reason.WRONG_TYPE, "created must be Unix seconds")
    if not created_in_range(created):
        return Invalid(Reason.BAD_TIMESTAMP, f"created {created} is after {rfc3339(MAX_CREATED)}")
    data = raw.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return Invalid(Reason.MISSING_FIELD, "data.object is missing or not an object")
    request = raw.get("request")
    key = request.get("idempotency_key") if isinstance(request, dict) else None
    return StripeEvent(
        id=event_id,
        type=event_type,
        created=created,
        livemode=raw.get("livemode") is True,
        obj=obj,
        request_idempotency_key=key if isinstance(key, str) and key else None,
    )


# -- typed access to data.object ---------------------------------------------------------------


def id_of(value: Any) -> str | None:
    """An object id from a field that holds the id or, when expanded, the object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def text(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) and value else None


def whole(obj: dict[str, Any], name: str) -> int | None:
    """An integer field (``amount``, ``created`` ...); None if missing or not an integer."""
    value = obj.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def metadata(obj: dict[str, Any]) -> dict[str, str]:
    """The object's metadata (Stripe's values are always strings; others are dropped)."""
    raw = obj.get("metadata")
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


def listed(obj: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    """The objects of a list field (``{"object": "list", "data": [...]}``); None if absent."""
    value = obj.get(name)
    data = value.get("data") if isinstance(value, dict) else None
    if not isinstance(data, list):
        return None
    return [item for item in data if isinstance(item, dict)]
