"""What every payment gateway implementation provides, and what the consumer gets back.

The gateway consumer (``payrecon gateway``) knows only :class:`PaymentGateway`: it derives
the idempotency key, retries what :class:`GatewayError` says is transient (with backoff and
its concurrency controller), dead-letters what is permanent, and publishes a
:class:`GatewayResult`. An implementation makes exactly one attempt per call and never
retries on its own, so one retry policy is in force.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import SecretStr

from schemas.payments import PAYMENT_STATUSES
from transforms.payment_requests import PaymentRequest


@dataclass(frozen=True)
class GatewayResult:
    """The payment a gateway made (or declined). ``status`` is one of
    :data:`~schemas.payments.PAYMENT_STATUSES`; ``http_status`` and ``request_id`` describe
    the call that produced it (Stripe's ``Request-Id``), for telemetry."""

    status: str
    payment_intent_id: str | None = None
    charge_id: str | None = None
    error_code: str | None = None
    gateway_status: str | None = None
    http_status: int | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        if self.status not in PAYMENT_STATUSES:
            raise ValueError(f"status must be one of {PAYMENT_STATUSES}, got {self.status!r}")


class GatewayError(Exception):
    """One call to a gateway gave no result.

    ``transient``: the same call may succeed later (timeouts, 429, 5xx, dropped
    connections); otherwise the request is dead-lettered with ``reason``. ``misconfigured``:
    the gateway refuses this consumer itself (a bad API key), so no request can succeed and
    the consumer stops instead of dead-lettering every one. ``retry_after_s`` is the wait
    the server asked for.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        reason: str,
        http_status: int | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        misconfigured: bool = False,
    ):
        super().__init__(message)
        self.transient = transient
        self.reason = reason
        self.http_status = http_status
        self.error_code = error_code
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.misconfigured = misconfigured


class GatewayConfigError(ValueError):
    """A gateway cannot be built from the settings given (exit code 2): the message names
    the flag or environment variable and what is allowed."""


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway implementations are built from.

    ``options`` holds ``NAME.KEY`` -> value pairs (``payrecon gateway --gateway-option
    voucher.path=vouchers.jsonl``), so a new implementation takes its settings without a new
    flag. Secrets are typed as secrets.
    """

    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    options: Mapping[str, str] = field(default_factory=dict)

    def option(self, gateway: str, key: str, default: str | None = None) -> str | None:
        return self.options.get(f"{gateway}.{key}", default)


class PaymentGateway(ABC):
    """A way to take payments: Stripe, or a region's local payment method.

    Implementations are registered by name in :mod:`transforms.gateways` and built with
    ``from_settings``. They must be safe to call from several threads at once.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: GatewaySettings) -> PaymentGateway:
        """Build the gateway, or raise :class:`GatewayConfigError`."""

    @abstractmethod
    def create_payment(self, request: PaymentRequest, idempotency_key: str) -> GatewayResult:
        """Pay ``request`` at most once per ``idempotency_key``, in one attempt.

        A repeated call with the same key returns the first call's payment (a response lost
        on the way back is replayed, never paid twice). A decline is a result with status
        ``failed``; a call without a result raises :class:`GatewayError`.
        """

    def close(self) -> None:  # noqa: B027 (most gateways hold nothing to release)
        """Release connections and files."""
