"""The one transient/permanent classification and the backoff policy (STYLE.md §14)."""

from __future__ import annotations

import email.utils
from email.message import Message
from urllib.error import HTTPError

import pytest
import requests

from transforms.kafka_offsets import BrokerUnavailable
from transforms.retry import (
    RetriesExhausted,
    RetryPolicy,
    Timing,
    Verdict,
    classify,
    parse_retry_after,
    retry_call,
)

NOW = 1_795_000_000.0


class FakeClock:
    """Sleeps are recorded and advance the clock at once; the jitter draw is fixed."""

    def __init__(self, start: float, jitter: float = 0.5):
        self.now = start
        self.sleeps: list[float] = []
        self.jitter = jitter

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def timing(self) -> Timing:
        return Timing(self.sleep, lambda: self.now, lambda: self.now, lambda: self.jitter)


class HttpFailure(Exception):
    """An HTTP client error as most libraries shape it: a status and the headers."""

    def __init__(self, status: int, headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status}")
        self.http_status = status
        self.headers = headers or {}


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_timeouts_rate_limits_and_server_errors_are_transient(status: int) -> None:
    assert classify(HttpFailure(status), now=NOW) == Verdict(True, f"http_{status}")


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 422])
def test_other_client_errors_are_permanent(status: int) -> None:
    assert classify(HttpFailure(status), now=NOW) == Verdict(False, f"http_{status}")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError("read timed out"), "timeout"),
        (ConnectionResetError("reset by peer"), "connection"),
        (BrokerUnavailable("no metadata"), "broker_unavailable"),
    ],
)
def test_network_failures_and_an_unavailable_broker_are_transient(
    exc: Exception, reason: str
) -> None:
    assert classify(exc, now=NOW) == Verdict(True, reason)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (requests.ConnectionError("refused"), "connection"),
        (requests.ReadTimeout("read timed out"), "timeout"),
        (HTTPError("http://x", 503, "Service Unavailable", Message(), None), "http_503"),
    ],
)
def test_http_client_network_errors_are_transient_without_adapters(
    exc: Exception, reason: str
) -> None:
    assert classify(exc, now=NOW) == Verdict(True, reason)


def test_a_tls_certificate_error_is_permanent() -> None:
    assert classify(requests.exceptions.SSLError("bad cert"), now=NOW).transient is False


@pytest.mark.parametrize("exc", [ValueError("bad amount"), KeyError("order_id")])
def test_bad_data_is_permanent_and_named(exc: Exception) -> None:
    assert classify(exc, now=NOW) == Verdict(False, type(exc).__name__)


def test_an_exception_can_declare_itself_transient() -> None:
    class Declared(Exception):
        transient = True
        reason = "lock_timeout"

    assert classify(Declared(), now=NOW) == Verdict(True, "lock_timeout")


def test_stripe_should_retry_true_forces_a_retry_of_a_client_error() -> None:
    exc = HttpFailure(409, {"stripe-should-retry": "true"})
    assert classify(exc, now=NOW) == Verdict(True, "stripe_should_retry")


def test_stripe_should_retry_false_forbids_retrying_a_server_error() -> None:
    exc = HttpFailure(500, {"Stripe-Should-Retry": "false", "Retry-After": "3"})
    assert classify(exc, now=NOW) == Verdict(False, "stripe_should_not_retry")


def test_retry_after_in_seconds_is_read_from_the_headers() -> None:
    exc = HttpFailure(429, {"Retry-After": "7"})
    assert classify(exc, now=NOW).retry_after_s == 7.0


def test_retry_after_as_an_http_date_is_measured_from_now() -> None:
    date = email.utils.formatdate(NOW + 12, usegmt=True)
    assert parse_retry_after(date, now=NOW) == 12.0


@pytest.mark.parametrize(("value", "expected"), [("-3", 0.0), ("soon", None), ("", None)])
def test_odd_retry_after_values_mean_now_or_nothing(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_a_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after(email.utils.formatdate(NOW - 60, usegmt=True), now=NOW) == 0.0


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    assert [policy.backoff_s(n, 0.999999) for n in (1, 2, 3, 4)] == pytest.approx(
        [1.0, 2.0, 4.0, 5.0], abs=1e-4
    )
    assert policy.backoff_s(3, 0.25) == 1.0
    assert policy.backoff_s(3, 0.0) == 0.0


def test_a_slowed_policy_waits_longer_but_never_past_its_cap() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0)
    slowed = policy.slowed(4.0)
    assert [slowed.backoff_s(n, 0.5) for n in (1, 2)] == [2.0, 2.5]
    assert policy.slowed(1.0) is policy


def test_a_server_retry_after_longer_than_the_backoff_wins() -> None:
    policy = RetryPolicy(base_delay_s=0.1)
    verdict = Verdict(True, "http_429", retry_after_s=4.0)
    assert policy.next_delay(1, verdict, elapsed_s=0.0, jitter=0.5) == 4.0


def test_no_retry_after_max_attempts_or_past_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_s=1.0, deadline_s=10.0)
    transient = Verdict(True, "http_503")
    assert policy.next_delay(3, transient, elapsed_s=0.0, jitter=0.5) is None
    assert policy.next_delay(1, transient, elapsed_s=9.8, jitter=0.5) is None
    late = Verdict(True, "http_429", retry_after_s=30.0)
    assert policy.next_delay(1, late, elapsed_s=0.0, jitter=0.5) is None


def test_a_permanent_failure_is_never_delayed() -> None:
    assert RetryPolicy().next_delay(1, Verdict(False, "http_400"), 0.0, 0.5) is None


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay_s": -1.0}, {"deadline_s": 0.0}]
)
def test_a_nonsensical_policy_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_retry_call_retries_transient_failures_then_returns() -> None:
    clock = FakeClock(start=NOW, jitter=0.5)
    outcomes: list[Exception | str] = [TimeoutError(), HttpFailure(503), "done"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = RetryPolicy(base_delay_s=1.0)
    assert retry_call(flaky, policy, timing=clock.timing()) == "done"
    assert clock.sleeps == [0.5, 1.0]


def test_retry_call_raises_a_permanent_failure_at_once() -> None:
    clock = FakeClock(start=NOW)
    calls = []

    def bad() -> None:
        calls.append(1)
        raise HttpFailure(404)

    with pytest.raises(HttpFailure):
        retry_call(bad, RetryPolicy(), timing=clock.timing())
    assert calls == [1]
    assert clock.sleeps == []


def test_retry_call_gives_up_with_the_last_failure_when_retries_run_out() -> None:
    clock = FakeClock(start=NOW, jitter=0.5)
    seen: list[tuple[int, str, float]] = []

    def down() -> None:
        raise HttpFailure(503, {"Retry-After": "2"})

    def on_retry(attempts: int, exc: BaseException, verdict: Verdict, delay: float) -> None:
        seen.append((attempts, verdict.reason, delay))

    with pytest.raises(RetriesExhausted) as raised:
        retry_call(down, RetryPolicy(max_attempts=3), timing=clock.timing(), on_retry=on_retry)
    assert raised.value.attempts == 3
    assert isinstance(raised.value.last, HttpFailure)
    assert classify(raised.value) == Verdict(True, "http_503")  # still a dependency outage
    assert seen == [(1, "http_503", 2.0), (2, "http_503", 2.0)]
    assert clock.sleeps == [2.0, 2.0]
