"""The loop closed: a 429 storm through the fault proxy shows in the gateway's telemetry, the
real ``payrecon telemetry`` job scores it against seeded normal history and publishes an
alert, and the running gateway slows down by itself (lower concurrency ceiling, longer
backoff) and recovers step by step once the alerts stop, paying every request once."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from pipelines import gateway
from pipelines.gateway_summary import GatewaySummary
from pipelines.gateway_worker import Paid, PaymentWorker
from pipelines.telemetry import main as telemetry
from tests.gateway_helpers import (
    PI_PATH,
    GatewayTopics,
    encode,
    gateway_argv,
    json_values,
    payment_request,
    publish,
    wait_for,
)
from tests.kafka_helpers import new_topic, produce
from tests.stripe_proxy import StripeProxy, rate_limited
from tests.telemetry_helpers import traffic
from transforms.aimd import AimdController
from transforms.gateways import GatewaySettings, build_gateway
from transforms.gateways.routing import Routes
from transforms.payment_records import TelemetryEvent
from transforms.payment_requests import DEFAULT_MAX_PAYLOAD_BYTES
from transforms.retry import RetryPolicy, Timing

if TYPE_CHECKING:
    from pipelines.broker import EmbeddedBroker
    from tests.stripe_fixtures import LocalStripe

pytest_plugins = ("tests.stripe_fixtures",)
TEN_MIN = timedelta(minutes=10)
BASE_BACKOFF_MS = 50.0  # gateway_argv's --backoff-base 0.05


class RunningGateway:
    """``payrecon gateway`` in a thread of the test, until :meth:`stop`."""

    def __init__(self, argv: list[str]):
        job, settings, names = gateway.job_from_args(gateway.build_parser().parse_args(argv))
        self.stopping = threading.Event()
        self.summary: GatewaySummary | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(job, settings, names))
        self._thread.start()

    def _run(self, *args: Any) -> None:
        try:
            self.summary = gateway.run_gateway(*args, self.stopping)
        except BaseException as exc:
            self.failure = exc

    def alive(self) -> bool:
        """True while it runs; raises what stopped it, so a wait does not outlast it."""
        if self.failure is not None:
            raise self.failure
        return self._thread.is_alive()

    def stop(self) -> GatewaySummary:
        self.stopping.set()
        self._thread.join(timeout=60)
        if self.failure is not None:
            raise self.failure
        assert self.summary is not None
        return self.summary


def _controller_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    events = [e for e in json_values(bootstrap, topic) if e.get("kind") == "controller"]
    return sorted(events, key=lambda e: e["at"])


def _recovered(bootstrap: str, topic: str) -> bool:
    """A recovery step brought the ceiling and the backoff back to their configured values."""
    return any(
        (e["reason"], e["ceiling"], e["backoff_ms"]) == ("recovered", 8, BASE_BACKOFF_MS)
        for e in _controller_events(bootstrap, topic)
    )


def _seed_normal_history(bootstrap: str, topic: str) -> None:
    """40 normal minutes of gateway calls, ending 6 minutes ago: the model's baseline."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=46)
    calls = [r for i in range(4) for r in traffic(300, seed=30 + i, start=start + i * TEN_MIN)
             if r.kind == "telemetry"]  # fmt: skip
    produce(bootstrap, topic, [(r.key, r.value, r.timestamp_ms) for r in calls])


def _run_telemetry(bootstrap: str, topics: GatewayTopics, alerts: str, warehouse: Path) -> int:
    return telemetry([
        "--bootstrap-servers", bootstrap, "--telemetry-topic", topics.telemetry,
        "--results-topic", topics.results, "--alerts-topic", alerts,
        "--group-id", f"tel.{topics.requests}", "--warehouse", f"duckdb:///{warehouse}",
    ])  # fmt: skip


def test_a_429_storm_alert_slows_the_gateway_down_and_it_recovers_paying_each_request_once(
    broker: EmbeddedBroker,
    topic_name: str,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    stripe_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    bootstrap, topics = broker.bootstrap_servers, GatewayTopics(topic_name)
    alerts = new_topic(bootstrap, partitions=1, prefix="alerts")
    storm = [payment_request(i) for i in range(60)]
    after = [payment_request(100 + i) for i in range(20)]
    _seed_normal_history(bootstrap, topics.telemetry)
    stripe_proxy.chaos(0.5, [rate_limited(retry_after=0.05)], seed=5, path=PI_PATH)
    publish(bootstrap, topics.requests, map(encode, storm))
    flags = ["--concurrency", "8", "--max-concurrency", "8", "--increase-after", "3",
             "--max-attempts", "30", "--alerts-topic", alerts, "--alert-cooldown", "1",
             "--alert-quiet", "1"]  # fmt: skip
    running = RunningGateway([*gateway_argv(bootstrap, topics, stripe_proxy.url), *flags])
    try:
        wait_for(
            lambda: running.alive() and len(json_values(bootstrap, topics.results)) == len(storm),
            timeout=60,
            what="the storm's requests to be paid",
        )
        stripe_proxy.clear_faults()  # the storm is over
        throttled = len([r for r in stripe_proxy.requests_to(PI_PATH) if r.fault])
        assert _run_telemetry(bootstrap, topics, alerts, tmp_path / "w.duckdb") == 0
        wait_for(
            lambda: running.alive() and _recovered(bootstrap, topics.telemetry),
            timeout=30,
            what="the gateway to slow down on the alert and recover",
        )
        publish(bootstrap, topics.requests, map(encode, after))
        wait_for(
            lambda: (
                running.alive()
                and len(json_values(bootstrap, topics.results)) == len(storm) + len(after)
            ),
            what="the requests sent after the storm to be paid",
        )
    finally:
        summary = running.stop()

    published = [a for a in json_values(bootstrap, alerts) if a["metric"] == "rate_429"]
    assert any(a["dims"] == "gateway=stripe" for a in published), published
    changes = _controller_events(bootstrap, topics.telemetry)
    by_alert = [e for e in changes if e["reason"] == "alert:rate_429"]
    assert len(by_alert) == 1, "one storm, one slow-down (the cooldown holds the others)"
    (cut,) = by_alert
    slowed = (cut["outcome"], cut["ceiling"], cut["backoff_ms"])
    assert slowed == ("decrease", 4, 2 * BASE_BACKOFF_MS)  # ceiling 8 halved, backoff doubled
    assert cut["concurrency"] <= 4
    recovery = [e for e in changes if e["reason"] == "recovered"]
    assert all(e["at"] > cut["at"] and e["outcome"] == "increase" for e in recovery)
    assert [(e["ceiling"], e["backoff_ms"]) for e in recovery] == [
        (6, BASE_BACKOFF_MS),  # a quarter of --max-concurrency per quiet period
        (8, BASE_BACKOFF_MS),
    ]
    assert summary.governor == {"alert:rate_429": 1, "recovered": 2}
    assert summary.alerts["cut"] == 1
    assert summary.ceiling_and_backoff == (8, 1.0)

    requests = storm + after
    assert summary.consumed == summary.results_out == len(requests)
    assert summary.dead_lettered == summary.unfinished == 0
    results = json_values(bootstrap, topics.results)
    assert sorted(r["request_id"] for r in results) == sorted(r["request_id"] for r in requests)
    listed = localstripe.get(PI_PATH, {"limit": 100})["data"]
    paid = Counter(intent["metadata"]["payrecon_request_id"] for intent in listed)
    assert paid == Counter(r["request_id"] for r in requests)  # one PaymentIntent each
    applied = Counter(r.idempotency_key for r in stripe_proxy.requests_to(PI_PATH) if r.forwarded)
    assert set(applied.values()) == {1}
    assert throttled >= 40  # the storm: about as many 429s as requests
    assert len([r for r in stripe_proxy.requests_to(PI_PATH) if r.fault]) == throttled


def test_unreadable_stale_and_foreign_alerts_neither_stop_nor_slow_the_gateway(
    broker: EmbeddedBroker,
    topic_name: str,
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    bootstrap, topics = broker.bootstrap_servers, GatewayTopics(topic_name)
    alerts = new_topic(bootstrap, partitions=1, prefix="alerts")
    now = datetime.now(UTC)

    def alert(metric: str, dims: str, ended: datetime) -> bytes:
        value = {"alert_id": f"anom_{metric}_{dims}_{ended:%H%M%S}", "metric": metric,
                 "dims": dims, "window_end": ended.isoformat(), "severity": "critical"}  # fmt: skip
        return json.dumps(value).encode()

    publish(bootstrap, alerts, [
        b"not json",
        alert("rate_429", "gateway=adyen", now),
        alert("error_rate", "gateway=stripe", now),
        alert("rate_429", "gateway=stripe", now - timedelta(hours=1)),
    ])  # fmt: skip
    requests = [payment_request(i) for i in range(5)]
    publish(bootstrap, topics.requests, map(encode, requests))
    argv = gateway_argv(bootstrap, topics, stripe_proxy.url, "--idle-timeout", "1.5")

    assert gateway.main([*argv, "--alerts-topic", alerts]) == 0

    out = capsys.readouterr().out
    assert "counts: 5 in = 5 results + 0 dead letters + 0 unfinished" in out
    assert (
        "telemetry alerts: 4 read (other_gateway 1, other_metric 1, stale 1, unreadable 1)" in out
    )
    changes = _controller_events(bootstrap, topics.telemetry)
    assert not [e for e in changes if e["reason"].startswith("alert:")]


@pytest.mark.parametrize(("factor", "backoff_ms"), [(1.0, 25.0), (4.0, 100.0)])
def test_the_retry_path_waits_the_backoff_the_alerts_set(
    stripe_proxy: StripeProxy, stripe_api_key: str, factor: float, backoff_ms: float
) -> None:
    settings = GatewaySettings(SecretStr(stripe_api_key), stripe_proxy.url, 2.0, 2.0)
    stripe = build_gateway("stripe", settings)
    events: list[TelemetryEvent] = []
    worker = PaymentWorker(
        {"stripe": stripe}, Routes("stripe", {}), RetryPolicy(base_delay_s=0.05),
        AimdController(), events.append, threading.Event(), consumer_id="c1",
        max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES, timing=Timing(jitter=lambda: 0.5),
        backoff=lambda: factor,
    )  # fmt: skip
    stripe_proxy.inject(rate_limited(retry_after=None), path=PI_PATH)
    try:
        outcome = worker.process(encode(payment_request(1)))
    finally:
        stripe.close()

    assert isinstance(outcome, Paid) and outcome.attempts == 2
    (retry,) = [e for e in events if e.outcome == "retry"]
    assert retry.backoff_ms == pytest.approx(backoff_ms)  # jitter 0.5 x 0.05 s x factor
