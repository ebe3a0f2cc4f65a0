"""The Stripe gateway: the only module of payrecon that calls the stripe library.

Every job reaches Stripe through :class:`StripeClient` (DESIGN.md's gateway adapter), so
the rules hold everywhere: one retry policy (:mod:`transforms.retry`, with the library's
own retries off so two policies never stack), an idempotency key on every POST that a
retried POST reuses, and an API key that never reaches a log line, an exception or a repr.

Objects come back as plain JSON dicts decoded from the response body with every non-integer
number as an exact :class:`~decimal.Decimal` (the library's own objects hold floats, which
would round ``exchange_rate``). :mod:`transforms.stripe_rows` turns them into Arrow rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

import requests
import stripe
from pydantic import SecretStr

from schemas.currencies import is_known
from transforms.retry import (
    RetriesExhausted,
    RetryPolicy,
    Timing,
    Verdict,
    header,
    retry_call,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 100
DEFAULT_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=20.0, deadline_s=120.0)
RETRIEVABLE = ("charge", "refund", "dispute", "balance_transaction", "payment_intent")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEPT_HEADERS = ("Retry-After", "Stripe-Should-Retry")


def mask_secret(secret: str) -> str:
    """``sk_test_…abcd``: the key's kind and mode, and at most its last four characters."""
    parts = secret.split("_")
    prefix = "_".join(parts[:2]) + "_" if len(parts) > 2 else ""
    tail = secret[-4:] if len(secret) - len(prefix) >= 12 else ""
    return f"{prefix}…{tail}"


class StripeRequestError(RuntimeError):
    """A Stripe request failed. The message names the operation, the HTTP status, Stripe's
    error type and code and the request id, never the API key.

    ``headers`` keeps only the server's retry hints (``Retry-After``,
    ``Stripe-Should-Retry``), which :func:`transforms.retry.classify` reads. ``transient``
    is set for failures without an HTTP status (timeouts, dropped connections).
    ``charge_id`` and ``payment_intent_id`` name the objects a declined payment left behind
    (Stripe's error body carries them), so a failed payment can still be traced.
    """

    transient: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        transient: bool | None = None,
        reason: str | None = None,
        charge_id: str | None = None,
        payment_intent_id: str | None = None,
    ):
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.error_type = error_type
        self.code = code
        self.request_id = request_id
        self.headers = dict(headers or {})
        if transient is not None:
            self.transient = transient
        self.reason = reason or (f"http_{status}" if status else None)
        self.charge_id = charge_id
        self.payment_intent_id = payment_intent_id

    def _fields(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "status": self.status,
            "error_type": self.error_type,
            "code": self.code,
            "request_id": self.request_id,
            "headers": self.headers,
            "reason": self.reason,
            "charge_id": self.charge_id,
            "payment_intent_id": self.payment_intent_id,
        }


class StripePermanentError(StripeRequestError):
    """Stripe refused the request for good (a 4xx other than 429, a card decline, an
    idempotency conflict): raised at once, never retried; the caller dead-letters it."""

    transient = False


class StripeUnavailable(StripeRequestError):
    """Stripe did not answer usefully within the retry policy (exit code 3 at the command
    line). ``attempts`` requests were made over ``elapsed_s`` seconds."""

    transient = True

    def __init__(self, message: str, *, attempts: int, elapsed_s: float, **fields: Any):
        super().__init__(message, **fields)
        self.attempts = attempts
        self.elapsed_s = elapsed_s


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP attempt, for telemetry: ``reason`` is None when it succeeded."""

    operation: str
    attempt: int
    duration_s: float
    status: int | None
    request_id: str | None
    reason: str | None


class StripeClient:
    """A Stripe API client with payrecon's retry policy and secret hygiene.

    ``api_base`` points it elsewhere than api.stripe.com (localstripe, a test proxy).
    ``timing`` injects the clock, sleep and jitter of the retry loop (tests).
    ``on_request`` receives a :class:`RequestRecord` after every HTTP attempt.
    Not picklable on purpose: build it in a DoFn's ``setup()``, so the key never travels
    in a pipeline graph.
    """

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        api_base: str | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        timing: Timing | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
    ):
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        secret = self._api_key.get_secret_value()
        if not secret.strip():
            raise ValueError("the Stripe API key is empty")
        if api_base is not None and not api_base.startswith(("http://", "https://")):
            raise ValueError(f"api_base must be an http(s) URL, got {api_base!r}")
        self.api_base = (api_base or stripe.DEFAULT_API_BASE).rstrip("/")
        self._retry = retry
        self._timing = timing or Timing()
        self._on_request = on_request
        self._server_filters_created = True
        self._http = stripe.RequestsClient(timeout=(connect_timeout_s, read_timeout_s))
        self._stripe = stripe.StripeClient(
            secret,
            base_addresses={"api": self.api_base},
            max_network_retries=0,  # our policy is the one in force
            http_client=self._http,
        )

    def __repr__(self) -> str:
        masked = mask_secret(self._api_key.get_secret_value())
        return f"StripeClient(api_base={self.api_base!r}, api_key={masked!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("StripeClient is not picklable: create it in DoFn.setup()")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StripeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def list_balance_transactions(
        self,
        created_gte: datetime,
        created_lt: datetime,
        *,
        expand_source: bool = False,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of balance transactions with ``created_gte <= created < created_lt``.

        Newest first, as Stripe lists them, following ``starting_after`` cursors; each page
        is retried on its own. The ``created`` filter is sent to the server and applied
        again here; a server that rejects it (localstripe) is listed unfiltered (with a
        warning) down to the window's start. ``expand_source`` inlines each source object
        (charge, refund, dispute ...). Empty pages are not yielded.
        """
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(
                f"page_size must be 1 to {PAGE_SIZE} (Stripe's limit), got {page_size}"
            )
        gte, lt = epoch_seconds_ceil(created_gte), epoch_seconds_ceil(created_lt)
        params: dict[str, Any] = {"limit": page_size}
        if expand_source:
            params["expand"] = ["data.source"]
        while True:
            page = self._list_page(params, gte, lt)
            objects = page["data"]
            kept = [obj for obj in objects if gte <= obj["created"] < lt]
            if kept:
                yield kept
            if not page.get("has_more") or not objects or objects[-1]["created"] < gte:
                return
            params["starting_after"] = objects[-1]["id"]

    def _list_page(self, params: dict[str, Any], gte: int, lt: int) -> dict[str, Any]:
        service = self._stripe.v1.balance_transactions
        if self._server_filters_created:
            filtered: Any = {**params, "created": {"gte": gte, "lt": lt}}
            try:
                return self._call("list balance transactions", lambda: service.list(filtered))
            except StripePermanentError as exc:
                if not _rejects_created_filter(exc):
                    raise
                log.warning(
                    "%s rejects the created filter on balance transactions (%s); "
                    "listing newest first and filtering here",
                    self.api_base,
                    exc,
                )
                self._server_filters_created = False
        unfiltered: Any = dict(params)
        return self._call("list balance transactions", lambda: service.list(unfiltered))

    def retrieve(self, kind: str, object_id: str, *, expand: Sequence[str] = ()) -> dict[str, Any]:
        """The object ``object_id`` of ``kind`` (one of :data:`RETRIEVABLE`)."""
        v1 = self._stripe.v1
        services: dict[str, Any] = {
            "charge": v1.charges,
            "refund": v1.refunds,
            "dispute": v1.disputes,
            "balance_transaction": v1.balance_transactions,
            "payment_intent": v1.payment_intents,
        }
        if kind not in services:
            raise ValueError(f"cannot retrieve {kind!r}: kind must be one of {RETRIEVABLE}")
        if not object_id:
            raise ValueError(f"cannot retrieve a {kind} without an id")
        params = {"expand": list(expand)} if expand else None
        return self._call(f"retrieve {kind}", lambda: services[kind].retrieve(object_id, params))

    def create_payment_intent(
        self,
        amount: int,
        currency: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        confirm: bool = False,
        customer: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a PaymentIntent, at most once per ``idempotency_key``.

        Every retry of the POST carries the same key, so a response lost after Stripe
        applied the request replays that first result instead of charging twice.
        ``amount`` is in minor units of ``currency`` (lowercase ISO 4217).
        """
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"amount must be a positive integer of minor units, got {amount!r}")
        if not is_known(currency):
            raise ValueError(f"currency must be lowercase ISO 4217, got {currency!r}")
        if not idempotency_key or len(idempotency_key) > 255:
            raise ValueError("idempotency_key must be 1 to 255 characters")
        params: Any = {"amount": amount, "currency": currency}
        optional = {"payment_method": payment_method, "customer": customer}
        params.update({k: v for k, v in optional.items() if v is not None})
        if confirm:
            params["confirm"] = True
        if metadata:
            params["metadata"] = dict(metadata)
        params.update(extra_params or {})
        options: Any = {"idempotency_key": idempotency_key}
        service = self._stripe.v1.payment_intents
        return self._call("create payment intent", lambda: service.create(params, options))

    def _call(self, operation: str, request: Callable[[], Any]) -> dict[str, Any]:
        """Run one API call under the retry policy; decode the body exactly."""
        attempts = 0

        def attempt() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            started = self._timing.monotonic()
            try:
                obj = request()
            except stripe.StripeError as exc:
                error = _request_error(exc, operation, self._api_key.get_secret_value())
                self._record(operation, attempts, started, error.status, error.request_id, error)
                raise error from None
            response = obj.last_response
            if response is None:
                raise ValueError(f"Stripe {operation}: the library returned no response body")
            self._record(operation, attempts, started, response.code, response.request_id, None)
            return decode_json(response.body)

        try:
            return retry_call(attempt, self._retry, timing=self._timing, on_retry=self._log_retry)
        except RetriesExhausted as exc:
            last = exc.last
            if not isinstance(last, StripeRequestError):
                raise
            message = f"{last} (gave up after {exc.attempts} attempts in {exc.elapsed_s:.1f}s)"
            raise StripeUnavailable(
                message, attempts=exc.attempts, elapsed_s=exc.elapsed_s, **last._fields()
            ) from None
        except StripeRequestError as exc:
            raise StripePermanentError(str(exc), **exc._fields()) from None

    def _record(
        self,
        operation: str,
        attempt: int,
        started: float,
        status: int | None,
        request_id: str | None,
        error: StripeRequestError | None,
    ) -> None:
        if self._on_request is None:
            return
        duration = self._timing.monotonic() - started
        reason = None if error is None else error.reason or "error"
        self._on_request(RequestRecord(operation, attempt, duration, status, request_id, reason))

    def _log_retry(self, attempts: int, exc: BaseException, verdict: Verdict, delay: float) -> None:
        log.warning(
            "%s (%s), attempt %d of %d; retrying in %.2fs",
            exc,
            verdict.reason,
            attempts,
            self._retry.max_attempts,
            delay,
        )


def _request_error(exc: stripe.StripeError, operation: str, secret: str) -> StripeRequestError:
    """payrecon's view of a stripe library error, with the key masked out of every text."""
    if isinstance(exc, stripe.APIConnectionError):
        cause = exc.__cause__
        tls = isinstance(cause, requests.exceptions.SSLError)
        timeout = isinstance(cause, requests.exceptions.Timeout)
        reason = "tls" if tls else "timeout" if timeout else "connection"
        detail = f"{type(cause).__name__}: {cause}" if cause else exc.user_message
        message = _scrub(f"Stripe {operation}: {reason} error ({detail})", secret)
        return StripeRequestError(message, operation=operation, transient=not tls, reason=reason)
    status = exc.http_status
    error = exc.error
    error_type = getattr(error, "type", None)
    code = exc.code or getattr(error, "code", None)
    headers = exc.headers or {}
    kept = {name: value for name in _KEPT_HEADERS if (value := header(headers, name)) is not None}
    described = " ".join(str(p) for p in (error_type, code and f"({code})") if p)
    text = exc.user_message or "no error message"
    request_id = f" [request {exc.request_id}]" if exc.request_id else ""
    message = f"Stripe {operation}: HTTP {status} {described}: {text}{request_id}"
    intent = getattr(error, "payment_intent", None)
    return StripeRequestError(
        _scrub(message.replace("  ", " "), secret),
        operation=operation,
        status=status,
        error_type=error_type,
        code=code,
        request_id=exc.request_id,
        headers=kept,
        charge_id=getattr(error, "charge", None),
        payment_intent_id=intent.get("id") if isinstance(intent, Mapping) else intent,
    )


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, mask_secret(secret)) if secret else text


def _rejects_created_filter(exc: StripePermanentError) -> bool:
    """True when a server says it cannot filter balance transactions by ``created``
    (localstripe: "Unexpected created"); real Stripe supports the filter."""
    text = str(exc)
    return exc.status == 400 and (
        "Unexpected created" in text or "unknown parameter: created" in text
    )


def decode_json(body: str) -> dict[str, Any]:
    """A Stripe JSON body with non-integer numbers as exact Decimals, never floats."""
    decoded = json.loads(body, parse_float=Decimal)
    if not isinstance(decoded, dict):
        raise ValueError(f"expected a JSON object from Stripe, got {type(decoded).__name__}")
    return decoded


def epoch_seconds_ceil(moment: datetime) -> int:
    """The first whole epoch second at or after ``moment`` (timezone-aware), exactly.

    Stripe's ``created`` is whole seconds: ``created >= t`` and ``created < t`` are the same
    tests against ``ceil(t)``.
    """
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no timezone; payrecon times are UTC")
    delta = moment - _EPOCH
    return delta.days * 86_400 + delta.seconds + (1 if delta.microseconds else 0)
