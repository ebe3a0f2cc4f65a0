"""Payments as Stripe PaymentIntents, through :class:`~transforms.stripe_api.StripeClient`.

With a ``payment_method`` the PaymentIntent is created and confirmed in one call; without,
it is created for the customer to confirm (``requires_action``). The idempotency key goes
on the POST, so a response lost after Stripe created the PaymentIntent is replayed by
Stripe on the next attempt instead of charging twice. A card decline (HTTP 402 or a
``card_error``) is a ``failed`` result, not an error: the request was processed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from transforms.gateways.base import (
    GatewayConfigError,
    GatewayError,
    GatewayResult,
    GatewaySettings,
    PaymentGateway,
)
from transforms.payment_requests import PaymentRequest
from transforms.retry import RetryPolicy, classify
from transforms.stripe_api import RequestRecord, StripeClient, StripeRequestError

API_KEY_ENV = "STRIPE_API_KEY"
# One attempt per call: the consumer's retry policy (with its concurrency controller) is
# the one in force, never two stacked.
SINGLE_ATTEMPT = RetryPolicy(max_attempts=1, deadline_s=None)
_STATUSES = {"succeeded": "succeeded", "processing": "processing", "canceled": "failed"}


class StripeGateway(PaymentGateway):
    name = "stripe"

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        api_base: str | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
    ):
        self._calls = threading.local()  # the last HTTP attempt of each worker thread
        self._client = StripeClient(
            api_key,
            api_base=api_base,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            retry=SINGLE_ATTEMPT,
            on_request=self._observe,
        )

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> StripeGateway:
        key = settings.stripe_api_key
        if key is None or not key.get_secret_value().strip():
            raise GatewayConfigError(f"the stripe gateway needs ${API_KEY_ENV} (a secret key)")
        try:
            return cls(
                key,
                api_base=settings.stripe_api_base,
                connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s,
            )
        except ValueError as exc:
            raise GatewayConfigError(f"--stripe-api-base: {exc}") from None

    def close(self) -> None:
        self._client.close()

    def _observe(self, record: RequestRecord) -> None:
        self._calls.last = record

    def create_payment(self, request: PaymentRequest, idempotency_key: str) -> GatewayResult:
        self._calls.last = None
        try:
            intent = self._client.create_payment_intent(
                request.amount,
                request.currency,
                idempotency_key=idempotency_key,
                payment_method=request.payment_method,
                confirm=request.payment_method is not None,
                customer=request.customer_id,
                metadata={
                    **request.metadata,
                    "order_id": request.order_id,
                    "payrecon_request_id": request.request_id,
                },
                extra_params={"payment_method_types": [request.payment_method_type]},
            )
        except StripeRequestError as exc:
            if exc.status == 402 or exc.error_type == "card_error":
                return GatewayResult(
                    status="failed",
                    payment_intent_id=exc.payment_intent_id,
                    charge_id=exc.charge_id,
                    error_code=exc.code or "card_declined",
                    http_status=exc.status,
                    request_id=exc.request_id,
                )
            raise _gateway_error(exc) from None
        last: RequestRecord | None = self._calls.last
        return result_of_intent(
            intent,
            http_status=last.status if last else None,
            request_id=last.request_id if last else None,
        )


def result_of_intent(
    intent: Mapping[str, Any], *, http_status: int | None = None, request_id: str | None = None
) -> GatewayResult:
    """A PaymentIntent as a result: ``requires_payment_method`` after a failed attempt is
    ``failed``; every other status that waits for someone is ``requires_action``."""
    status = str(intent["status"])
    last_error = intent.get("last_payment_error") or {}
    next_action = intent.get("next_action") or {}
    mapped = _STATUSES.get(status)
    if mapped is None:
        failed = status == "requires_payment_method" and bool(last_error)
        mapped = "failed" if failed else "requires_action"
    charge = intent.get("latest_charge")
    return GatewayResult(
        status=mapped,
        payment_intent_id=intent.get("id"),
        charge_id=charge.get("id") if isinstance(charge, Mapping) else charge,
        error_code=last_error.get("code") or next_action.get("type"),
        gateway_status=status,
        http_status=http_status,
        request_id=request_id,
    )


def _gateway_error(exc: StripeRequestError) -> GatewayError:
    verdict = classify(exc)
    misconfigured = exc.status in (401, 403)
    hint = f"; check the key in ${API_KEY_ENV}" if misconfigured else ""
    return GatewayError(
        f"{exc}{hint}",
        transient=verdict.transient,
        reason=verdict.reason,
        http_status=exc.status,
        error_code=exc.code,
        request_id=exc.request_id,
        retry_after_s=verdict.retry_after_s,
        misconfigured=misconfigured,
    )
