"""``payrecon gateway`` under faults: a consumer killed mid-payment, a share of Stripe calls
failing every way they can, a 429 surge, SIGTERM. Whatever happens, each request is paid
once (count the PaymentIntents in localstripe) and ends as one result or dead letter.

Kills are real: the consumer runs as ``python -m pipelines.gateway`` and gets SIGKILL.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pipelines import gateway
from pipelines.broker import EmbeddedBroker
from tests.gateway_helpers import (
    PI_PATH,
    GatewayTopics,
    encode,
    gateway_argv,
    json_values,
    payment_request,
    publish,
    spawn_gateway,
    wait_for,
)
from tests.stripe_proxy import (
    StripeProxy,
    drop,
    drop_response,
    hang,
    hang_response,
    rate_limited,
    server_error,
)

if TYPE_CHECKING:
    from tests.stripe_fixtures import LocalStripe

pytest_plugins = ("tests.stripe_fixtures",)


@pytest.fixture
def topics(topic_name: str) -> GatewayTopics:
    return GatewayTopics(topic_name)


@pytest.fixture(autouse=True)
def api_key(stripe_api_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    return stripe_api_key


def _restart(broker: EmbeddedBroker, topics: GatewayTopics, proxy: StripeProxy) -> int:
    """A bounded in-process run of the same consumer group."""
    argv = gateway_argv(broker.bootstrap_servers, topics, proxy.url, "--idle-timeout", "1.5")
    return gateway.main(argv)


def _kill(process: Any) -> int:
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=10)


def _intents_by_request(localstripe: LocalStripe) -> Counter:
    listed = localstripe.get(PI_PATH, {"limit": 100})["data"]
    return Counter(intent["metadata"]["payrecon_request_id"] for intent in listed)


def test_a_consumer_killed_after_stripe_answered_pays_once_after_a_restart(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    api_key: str,
    tmp_path: Path,
) -> None:
    request = payment_request(1)
    publish(broker.bootstrap_servers, topics.requests, [encode(request)])
    # Stripe creates the PaymentIntent; its answer is held back until the kill.
    stripe_proxy.inject(hang_response(60), path=PI_PATH)
    argv = gateway_argv(
        broker.bootstrap_servers, topics, stripe_proxy.url, "--stripe-timeout", "60"
    )
    process = spawn_gateway(argv, api_key, tmp_path / "killed.log")
    try:
        wait_for(
            lambda: any(r.forwarded for r in stripe_proxy.requests_to(PI_PATH, "POST")),
            what="Stripe to create the PaymentIntent",
        )
        assert _kill(process) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    assert localstripe.count(PI_PATH) == 1
    assert json_values(broker.bootstrap_servers, topics.results) == []

    assert _restart(broker, topics, stripe_proxy) == 0

    (result,) = json_values(broker.bootstrap_servers, topics.results)
    assert localstripe.count(PI_PATH) == 1
    assert result["payment_intent_id"] == localstripe.get(PI_PATH)["data"][0]["id"]
    assert result["request_id"] == request["request_id"]
    posts = stripe_proxy.requests_to(PI_PATH, "POST")
    assert [(p.fault, p.forwarded, p.replayed) for p in posts] == [
        ("hang_response", True, False),
        (None, False, True),
    ]


def test_results_published_before_a_crash_are_published_again_with_the_same_payments(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    api_key: str,
    tmp_path: Path,
) -> None:
    requests = [payment_request(i) for i in range(4)]
    publish(broker.bootstrap_servers, topics.requests, map(encode, requests))
    argv = gateway_argv(broker.bootstrap_servers, topics, stripe_proxy.url)
    process = spawn_gateway([*argv, "--commit-interval", "3600"], api_key, tmp_path / "k.log")
    try:
        wait_for(
            lambda: len(json_values(broker.bootstrap_servers, topics.results)) == 4,
            what="four results",
        )
        _kill(process)  # after publishing, before committing
    finally:
        if process.poll() is None:
            process.kill()

    assert _restart(broker, topics, stripe_proxy) == 0

    results = json_values(broker.bootstrap_servers, topics.results)
    assert len(results) == 8  # at least once: each result twice, keyed by its request
    intents = {(r["request_id"], r["payment_intent_id"]) for r in results}
    assert len(intents) == 4  # ... with the same PaymentIntent both times
    assert _intents_by_request(localstripe) == Counter(r["request_id"] for r in requests)


def test_under_thirty_percent_faults_every_request_is_paid_exactly_once(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests = [payment_request(i) for i in range(40)]
    publish(broker.bootstrap_servers, topics.requests, map(encode, requests))
    faults = [
        rate_limited(retry_after=0.2),
        server_error(500),
        hang(1.0),
        hang_response(1.0),
        drop(),
        drop_response(),
    ]
    stripe_proxy.inject(drop_response(), rate_limited(retry_after=0.2), hang(1.0), path=PI_PATH)
    stripe_proxy.chaos(0.3, faults, seed=11, path=PI_PATH)
    argv = gateway_argv(broker.bootstrap_servers, topics, stripe_proxy.url, "--idle-timeout", "1.5")
    flags = ["--stripe-timeout", "0.5", "--max-attempts", "12", "--increase-after", "4"]

    assert gateway.main([*argv, *flags]) == 0

    assert "counts: 40 in = 40 results + 0 dead letters + 0 unfinished" in capsys.readouterr().out
    results = json_values(broker.bootstrap_servers, topics.results)
    assert sorted(r["request_id"] for r in results) == sorted(r["request_id"] for r in requests)
    assert len({r["payment_intent_id"] for r in results}) == 40
    assert _intents_by_request(localstripe) == Counter(r["request_id"] for r in requests)
    applied = Counter(r.idempotency_key for r in stripe_proxy.requests_to(PI_PATH) if r.forwarded)
    assert set(applied.values()) == {1}
    events = json_values(broker.bootstrap_servers, topics.telemetry)
    retries = [e for e in events if e["outcome"] == "retry"]
    assert {"http_429", "http_500", "timeout", "connection"} <= {e["reason"] for e in retries}
    for throttled in (e for e in retries if e["reason"] == "http_429"):
        assert throttled["retry_after_ms"] == 200
        assert throttled["backoff_ms"] >= 200  # Retry-After honoured
    controller = [e for e in events if e["kind"] == "controller"]
    assert {"decrease", "increase"} <= {e["outcome"] for e in controller}


def test_a_429_surge_halves_the_concurrency_and_it_grows_back(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
) -> None:
    requests = [payment_request(i) for i in range(24)]
    publish(broker.bootstrap_servers, topics.requests, map(encode, requests))
    stripe_proxy.inject(*[rate_limited(retry_after=0.3)] * 8, path=PI_PATH)
    argv = gateway_argv(broker.bootstrap_servers, topics, stripe_proxy.url, "--idle-timeout", "1.5")
    flags = ["--concurrency", "8", "--max-concurrency", "8", "--increase-after", "3"]

    assert gateway.main([*argv, *flags]) == 0

    assert localstripe.count(PI_PATH) == 24
    events = json_values(broker.bootstrap_servers, topics.telemetry)
    changes = sorted((e for e in events if e["kind"] == "controller"), key=lambda e: e["at"])
    first = changes[0]
    assert (first["outcome"], first["previous_concurrency"], first["concurrency"]) == (
        "decrease",
        8,
        4,
    )
    assert first["reason"] == "http_429"
    assert changes[-1]["outcome"] == "increase"  # grown back once the surge passed
    throttled = [e for e in events if e["kind"] == "attempt" and e["reason"] == "http_429"]
    assert len(throttled) == 8
    assert all(e["backoff_ms"] >= 300 for e in throttled)


def test_sigterm_stops_at_once_and_leaves_a_request_waiting_to_retry_uncommitted(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    api_key: str,
    tmp_path: Path,
) -> None:
    requests = [payment_request(i) for i in range(3)]
    publish(broker.bootstrap_servers, topics.requests, map(encode, requests))
    stripe_proxy.inject(rate_limited(retry_after=60), path=PI_PATH)  # one waits a minute
    log = tmp_path / "stopped.log"
    process = spawn_gateway(
        gateway_argv(broker.bootstrap_servers, topics, stripe_proxy.url), api_key, log
    )
    try:
        wait_for(
            lambda: len(json_values(broker.bootstrap_servers, topics.results)) == 2,
            what="the two requests that were not throttled",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert "stopped: signal" in output
    assert "counts: 3 in = 2 results + 0 dead letters + 1 unfinished" in output

    assert _restart(broker, topics, stripe_proxy) == 0

    results = json_values(broker.bootstrap_servers, topics.results)
    assert {r["request_id"] for r in results} == {r["request_id"] for r in requests}
    assert _intents_by_request(localstripe) == Counter(r["request_id"] for r in requests)
