"""Paying one payment request: decode it, choose its gateway, call it under the retry policy.

:meth:`PaymentWorker.process` runs on the consumer's worker threads and returns what became
of one message: :class:`Paid` (a result to publish, a decline included), :class:`DeadLettered`
(a poison pill, or a request the gateway refuses for good) or :class:`Abandoned` (the
consumer is stopping; the message is not committed and is paid again, idempotently, after
a restart). It raises :class:`GatewayUnavailable` when transient failures outlast the retry
policy and :class:`GatewayMisconfigured` when the gateway refuses the consumer itself.

Every call to a gateway is reported as an ``attempt`` telemetry event (latency, HTTP status,
error code, request id, the backoff before the next attempt) and feeds the AIMD controller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from schemas.dead_letter import Reason
from transforms.aimd import AimdController
from transforms.gateways import GatewayError, GatewayResult, PaymentGateway
from transforms.gateways.routing import Routes
from transforms.ledger_validation import Invalid
from transforms.payment_records import TelemetryEvent
from transforms.payment_requests import PaymentRequest, parse_request
from transforms.retry import RetryPolicy, Timing, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paid:
    request: PaymentRequest
    result: GatewayResult
    gateway: str
    attempts: int


@dataclass(frozen=True)
class DeadLettered:
    reason: str
    detail: str


@dataclass(frozen=True)
class Abandoned:
    attempts: int


Outcome = Paid | DeadLettered | Abandoned


class GatewayUnavailable(RuntimeError):
    """Transient failures outlasted the retry policy (exit code 3)."""


class GatewayMisconfigured(RuntimeError):
    """The gateway refuses this consumer (a bad API key): exit code 2."""


class PaymentWorker:
    """Thread-safe: one instance serves every worker thread.

    ``emit`` receives each telemetry event; ``stopping`` set means finish nothing new:
    a request waiting to retry is abandoned at once. ``backoff()`` is the factor on the
    policy's base delay now in force (telemetry alerts raise it).
    """

    def __init__(
        self,
        gateways: Mapping[str, PaymentGateway],
        routes: Routes,
        policy: RetryPolicy,
        controller: AimdController,
        emit: Callable[[TelemetryEvent], None],
        stopping: threading.Event,
        *,
        consumer_id: str,
        max_payload_bytes: int,
        timing: Timing | None = None,
        backoff: Callable[[], float] = lambda: 1.0,
    ):
        self._gateways = gateways
        self._routes = routes
        self._policy = policy
        self._controller = controller
        self._emit = emit
        self._stopping = stopping
        self._consumer_id = consumer_id
        self._max_payload_bytes = max_payload_bytes
        self._timing = timing or Timing()
        self._backoff = backoff

    def process(self, value: bytes | None, admitted: int | None = None) -> Outcome:
        """``admitted`` is the controller's ticket when the consumer admitted the message:
        a 429 to its first call is then counted against the limit it was admitted under."""
        if self._stopping.is_set():
            return Abandoned(0)
        request = parse_request(value, self._max_payload_bytes)
        if isinstance(request, Invalid):
            return DeadLettered(request.reason.value, request.detail)
        name = self._routes.choose(request)
        if name not in self._gateways:
            runs = ", ".join(self._gateways)
            detail = f"gateway {name[:40]!r} is not run by this consumer (it runs: {runs})"
            return DeadLettered(Reason.UNKNOWN_GATEWAY.value, detail)
        return self._pay(request, name, admitted)

    def _pay(self, request: PaymentRequest, name: str, admitted: int | None) -> Outcome:
        gateway = self._gateways[name]
        first_started = self._timing.monotonic()
        attempt = 0
        while True:
            attempt += 1
            ticket = self._controller.ticket() if attempt > 1 or admitted is None else admitted
            started = self._timing.monotonic()
            try:
                result = gateway.create_payment(request, request.idempotency_key)
            except GatewayError as exc:
                latency_ms = (self._timing.monotonic() - started) * 1000
                step = self._after_failure(request, name, attempt, exc, ticket, first_started)
                self._emit(self._failure_event(request, name, attempt, exc, latency_ms, step))
                if isinstance(step, Exception):
                    raise step from exc
                if isinstance(step, DeadLettered):
                    return step
                if self._stopping.wait(step):
                    return Abandoned(attempt)
                continue
            latency_ms = (self._timing.monotonic() - started) * 1000
            self._controller.on_success()
            self._emit(
                self._attempt(
                    request,
                    name,
                    attempt,
                    "success",
                    latency_ms=latency_ms,
                    http_status=result.http_status,
                    error_code=result.error_code,
                    stripe_request_id=result.request_id,
                )
            )
            return Paid(request, result, name, attempt)

    def _after_failure(
        self,
        request: PaymentRequest,
        name: str,
        attempt: int,
        exc: GatewayError,
        ticket: int,
        first_started: float,
    ) -> float | DeadLettered | RuntimeError:
        """The wait before the next attempt, the dead letter, or the error that stops the
        consumer."""
        if exc.misconfigured:
            return GatewayMisconfigured(f"gateway {name!r} refuses this consumer: {exc}")
        if not exc.transient:
            return DeadLettered(Reason.GATEWAY_REJECTED.value, f"{exc.reason}: {exc}"[:1000])
        self._controller.on_failure(ticket, exc.reason)
        verdict = Verdict(True, exc.reason, exc.retry_after_s)
        elapsed = self._timing.monotonic() - first_started
        policy = self._policy.slowed(self._backoff())
        delay = policy.next_delay(attempt, verdict, elapsed, self._timing.jitter())
        if delay is None:
            return GatewayUnavailable(
                f"gateway {name!r} gave no result for request {request.request_id} after "
                f"{attempt} attempt(s) in {elapsed:.1f}s; last: {exc}"
            )
        log.info("request %s: %s; retrying in %.2fs", request.request_id, exc.reason, delay)
        return delay

    def _failure_event(
        self,
        request: PaymentRequest,
        name: str,
        attempt: int,
        exc: GatewayError,
        latency_ms: float,
        step: float | DeadLettered | RuntimeError,
    ) -> TelemetryEvent:
        if isinstance(step, float):
            outcome = "retry"
        elif isinstance(step, GatewayUnavailable):
            outcome = "give_up"
        else:
            outcome = "permanent"
        return self._attempt(
            request,
            name,
            attempt,
            outcome,
            latency_ms=latency_ms,
            http_status=exc.http_status,
            reason=exc.reason,
            error_code=exc.error_code,
            stripe_request_id=exc.request_id,
            backoff_ms=step * 1000 if isinstance(step, float) else None,
            retry_after_ms=None if exc.retry_after_s is None else exc.retry_after_s * 1000,
        )

    def _attempt(
        self, request: PaymentRequest, name: str, attempt: int, outcome: str, **fields
    ) -> TelemetryEvent:
        return TelemetryEvent.attempt_of(
            request,
            outcome=outcome,
            consumer_id=self._consumer_id,
            concurrency=self._controller.limit,
            gateway=name,
            attempt=attempt,
            **fields,
        )
