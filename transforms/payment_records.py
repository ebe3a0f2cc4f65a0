"""The gateway consumer's output messages: payment results and telemetry, as Kafka records.

Each record is ``(key, value)`` bytes; the values are JSON objects of
``schemas.payments.PAYMENT_RESULT_V1`` and ``PAYMENT_TELEMETRY_V1`` (every required field
present, null where it does not apply; an optional one, added to v1 later, only when it
applies, so a reader of the older v1 sees what it knows; times RFC 3339 UTC with
microseconds).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.fields import is_required
from schemas.payments import PAYMENT_TELEMETRY_V1
from transforms.gateways.base import GatewayResult
from transforms.payment_requests import PaymentRequest


def rfc3339(moment: datetime) -> str:
    """``2026-11-20T10:00:00.123456Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def result_record(
    request: PaymentRequest,
    result: GatewayResult,
    *,
    gateway: str,
    attempts: int,
    processed_at: datetime,
) -> tuple[bytes, bytes]:
    """The payment result of ``request``, keyed by its ``request_id``."""
    value = {
        "request_id": request.request_id,
        "order_id": request.order_id,
        "status": result.status,
        "payment_intent_id": result.payment_intent_id,
        "charge_id": result.charge_id,
        "amount": request.amount,
        "currency": request.currency,
        "error_code": result.error_code,
        "gateway_status": result.gateway_status,
        "gateway": gateway,
        "idempotency_key": request.idempotency_key,
        "attempts": attempts,
        "processed_at": rfc3339(processed_at),
    }
    return request.request_id.encode(), _encode(value)


@dataclass(frozen=True)
class TelemetryEvent:
    """One payment telemetry v1 event; see ``schemas.payments`` for each field."""

    kind: str
    outcome: str
    consumer_id: str
    concurrency: int
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    request_id: str | None = None
    order_id: str | None = None
    gateway: str | None = None
    attempt: int | None = None
    latency_ms: float | None = None
    http_status: int | None = None
    reason: str | None = None
    error_code: str | None = None
    stripe_request_id: str | None = None
    backoff_ms: float | None = None
    retry_after_ms: float | None = None
    previous_concurrency: int | None = None
    ceiling: int | None = None
    amount: int | None = None
    currency: str | None = None
    payment_method_type: str | None = None
    card_brand: str | None = None
    country: str | None = None

    @classmethod
    def attempt_of(cls, request: PaymentRequest, **fields: Any) -> TelemetryEvent:
        """An ``attempt`` event with the request's identity and cohort fields."""
        return cls(
            kind="attempt",
            request_id=request.request_id,
            order_id=request.order_id,
            amount=request.amount,
            currency=request.currency,
            payment_method_type=request.payment_method_type,
            card_brand=request.card_brand,
            country=request.country,
            **fields,
        )

    def record(self) -> tuple[bytes, bytes]:
        """Keyed by the request, or by the consumer for controller events."""
        value = {
            f.name: getattr(self, f.name)
            for f in PAYMENT_TELEMETRY_V1
            if is_required(f) or getattr(self, f.name) is not None
        }
        value["at"] = rfc3339(self.at)
        return (self.request_id or self.consumer_id).encode(), _encode(value)


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
