"""Which failures are transient, and how long to wait before trying again.

One classification for all of payrecon (STYLE.md §14): a failure that can succeed later
(timeouts, HTTP 429, 5xx, dropped connections, an unavailable broker) is retried with
backoff; one that never will (bad data, any other 4xx) goes to the dead-letter path at once,
with its reason. :func:`classify` says which; :class:`RetryPolicy` says how long to wait;
:func:`retry_call` runs a call under both.

Everything here is pure: the clock, the sleep and the jitter source are injected
(:class:`Timing`), so tests assert exact delays without waiting for them.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any, TypeVar

from transforms.kafka_offsets import BrokerUnavailable

T = TypeVar("T")

# 408 Request Timeout and 429 Too Many Requests are the only 4xx that can succeed later.
TRANSIENT_4XX = frozenset({408, 429})
# HTTP client libraries' network errors that do not derive from the builtin ones
# (requests' ConnectionError/Timeout, httpx's ConnectError/TimeoutException ...).
_TIMEOUT_NAMES = frozenset({"Timeout", "TimeoutException", "ReadTimeout", "ConnectTimeout"})
_CONNECTION_NAMES = frozenset({"ConnectionError", "ConnectError", "NetworkError"})


@dataclass(frozen=True)
class Verdict:
    """What :func:`classify` decided about one failure.

    ``reason`` is machine-readable (``http_429``, ``timeout``, ``connection``,
    ``broker_unavailable``, ``stripe_should_retry``, ``ValueError`` ...) and goes into dead
    letters and logs. ``retry_after_s`` is the wait the server asked for, if it did.
    """

    transient: bool
    reason: str
    retry_after_s: float | None = None


def classify(exc: BaseException, *, now: float | None = None) -> Verdict:
    """Say whether ``exc`` is worth retrying.

    In order: a server's explicit ``Stripe-Should-Retry`` header (``true`` forces a retry,
    ``false`` forbids it); the HTTP status (429, 408 and 5xx are transient, other 4xx
    permanent); an exception's own ``transient`` attribute, when it is a bool; an
    unavailable broker, timeouts and connection errors (transient, TLS errors excepted).
    Anything else is permanent. ``now`` (epoch seconds, default the current time) resolves
    an HTTP-date ``Retry-After``.

    The HTTP status is read from ``status``, ``http_status``, ``status_code`` or ``code``,
    headers from a ``headers`` mapping, and network errors are recognised by class name
    too, so errors of requests, httpx, urllib and google-api-core classify without
    adapters.
    """
    headers = getattr(exc, "headers", None)
    retry_after = None
    if isinstance(headers, Mapping):
        wall = time.time() if now is None else now
        retry_after = parse_retry_after(header(headers, "Retry-After"), now=wall)
        should_retry = (header(headers, "Stripe-Should-Retry") or "").strip().lower()
        if should_retry == "true":
            return Verdict(True, "stripe_should_retry", retry_after)
        if should_retry == "false":
            return Verdict(False, "stripe_should_not_retry")
    status = http_status_of(exc)
    if status is not None:
        transient = status in TRANSIENT_4XX or status >= 500
        return Verdict(transient, f"http_{status}", retry_after if transient else None)
    declared = getattr(exc, "transient", None)
    if isinstance(declared, bool):
        return Verdict(declared, getattr(exc, "reason", None) or type(exc).__name__)
    if isinstance(exc, BrokerUnavailable):
        return Verdict(True, "broker_unavailable")
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "SSL" not in type(exc).__name__:  # a certificate problem does not heal by waiting
        if isinstance(exc, TimeoutError) or names & _TIMEOUT_NAMES:
            return Verdict(True, "timeout")
        if isinstance(exc, ConnectionError) or names & _CONNECTION_NAMES:
            return Verdict(True, "connection")
    return Verdict(False, type(exc).__name__)


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (an int from 100 to 599 in ``status``,
    ``http_status``, ``status_code`` or ``code``)."""
    for name in ("status", "http_status", "status_code", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def header(headers: Mapping[str, Any], name: str) -> str | None:
    """Case-insensitive header lookup in any mapping (dict, requests' or aiohttp's)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    return None if value is None else str(value)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date.

    ``now`` is the current time in epoch seconds (for the date form). A date in the past or
    a negative number means "now" (0.0); an unparseable value is ignored (None).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is taken as such.
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, a cap, and two limits: attempts and a deadline.

    Retry ``n`` (1-based) waits ``uniform(0, min(max_delay_s, base_delay_s * 2**(n-1)))``
    ("full jitter": concurrent clients spread out instead of retrying in lockstep), or the
    server's ``Retry-After`` if that is longer: a server's request to wait is never cut
    short. No retry starts once ``max_attempts`` calls were made, or when waiting would end
    past ``deadline_s`` seconds after the first call (None: no deadline).
    """

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    deadline_s: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("base_delay_s and max_delay_s must not be negative")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive or None, got {self.deadline_s}")

    def slowed(self, factor: float) -> RetryPolicy:
        """The same policy with its base delay multiplied by ``factor`` (telemetry alerts
        slow the retries of an overloaded gateway down); ``max_delay_s`` still caps it."""
        if factor == 1.0:
            return self
        return replace(self, base_delay_s=self.base_delay_s * factor)

    def backoff_s(self, retry: int, jitter: float) -> float:
        """The jittered wait before retry number ``retry`` (1-based); ``jitter`` in [0, 1)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return jitter * ceiling

    def next_delay(
        self, attempts: int, verdict: Verdict, elapsed_s: float, jitter: float
    ) -> float | None:
        """Seconds to wait before the next call, or None to give up.

        ``attempts`` calls were made so far, the first ``elapsed_s`` seconds ago, and the
        last one failed as ``verdict`` says.
        """
        if not verdict.transient or attempts >= self.max_attempts:
            return None
        delay = self.backoff_s(attempts, jitter)
        if verdict.retry_after_s is not None:
            delay = max(delay, verdict.retry_after_s)
        if self.deadline_s is not None and elapsed_s + delay > self.deadline_s:
            return None
        return delay


@dataclass(frozen=True)
class Timing:
    """The effects a retry loop needs; tests pass fakes to run without waiting."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    jitter: Callable[[], float] = random.random


class RetriesExhausted(RuntimeError):
    """A transient failure outlasted the policy: ``last`` is the final failure.

    Still transient (a dependency is down, not the data bad): the caller fails the run
    with exit code 3 or lets its runner retry the work later; it does not dead-letter.
    """

    transient = True

    def __init__(self, last: BaseException, verdict: Verdict, attempts: int, elapsed_s: float):
        super().__init__(
            f"gave up after {attempts} attempt(s) in {elapsed_s:.1f}s ({verdict.reason}): {last}"
        )
        self.last = last
        self.verdict = verdict
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.reason = verdict.reason


OnRetry = Callable[[int, BaseException, Verdict, float], None]


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    classifier: Callable[..., Verdict] = classify,
    timing: Timing | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a failure is permanent, or ``policy`` gives up.

    A permanent failure is re-raised as is, at once. When transient failures outlast the
    policy, :class:`RetriesExhausted` is raised from the last one. ``on_retry(attempts,
    exc, verdict, delay_s)`` is called before each wait (for logs and metrics).
    ``classifier(exc, now=wall_seconds)`` defaults to :func:`classify`.
    """
    timing = timing or Timing()
    started = timing.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as exc:
            verdict = classifier(exc, now=timing.wall())
            if not verdict.transient:
                raise
            elapsed = timing.monotonic() - started
            delay = policy.next_delay(attempts, verdict, elapsed, timing.jitter())
            if delay is None:
                raise RetriesExhausted(exc, verdict, attempts, elapsed) from exc
            if on_retry is not None:
                on_retry(attempts, exc, verdict, delay)
            timing.sleep(delay)
