"""``payrecon gateway`` end to end: the real broker, localstripe behind the fault proxy.

Each test publishes payment requests to its own topics, runs the consumer in-process as a
bounded run (``--idle-timeout``) and reads what it published.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipelines import gateway
from pipelines.broker import EmbeddedBroker
from tests.gateway_helpers import (
    PI_PATH,
    GatewayTopics,
    encode,
    gateway_argv,
    headers_of,
    json_values,
    payment_request,
    publish,
)
from tests.kafka_helpers import consume_all
from tests.stripe_proxy import StripeProxy, error_response, server_error

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


def _run(broker: EmbeddedBroker, topics: GatewayTopics, proxy: StripeProxy, *extra: str) -> int:
    argv = gateway_argv(broker.bootstrap_servers, topics, proxy.url, "--idle-timeout", "1.5")
    return gateway.main([*argv, *extra])


def _committed(bootstrap: str, topic: str, group_id: str, partitions: int = 4) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(wanted, timeout=10)]
    finally:
        consumer.close()


def test_requests_in_equal_results_out_plus_dead_letters(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paid = [payment_request(i) for i in range(6)]
    declined = payment_request(90, payment_method="pm_card_chargeCustomerFail")
    poison = {
        b"{not json": "not_json",
        encode({k: v for k, v in payment_request(91).items() if k != "amount"}): "missing_field",
        encode(payment_request(92, currency="xyz")): "unknown_currency",
        encode(payment_request(93, gateway="paypal")): "unknown_gateway",
        encode(payment_request(94, payment_method="pm_doesnotexist")): "gateway_rejected",
    }
    publish(broker.bootstrap_servers, topics.requests, [*map(encode, paid), encode(declined)])
    publish(broker.bootstrap_servers, topics.requests, poison, key=lambda v: b"k-" + v[:4])

    assert _run(broker, topics, stripe_proxy) == 0

    out = capsys.readouterr().out
    assert "counts: 12 in = 7 results + 5 dead letters + 0 unfinished" in out
    results = {r["request_id"]: r for r in json_values(broker.bootstrap_servers, topics.results)}
    assert set(results) == {r["request_id"] for r in [*paid, declined]}
    assert {results[r["request_id"]]["status"] for r in paid} == {"succeeded"}
    failed = results[declined["request_id"]]
    assert (failed["status"], failed["error_code"]) == ("failed", "card_declined")
    assert localstripe.count(PI_PATH) == 7  # localstripe keeps the declined PaymentIntent
    letters = consume_all(broker.bootstrap_servers, topics.dlq)
    assert {m.value(): headers_of(m)["payrecon.dlq.reason"].decode() for m in letters} == poison
    for letter in letters:
        headers = headers_of(letter)
        assert letter.key() == b"k-" + letter.value()[:4]
        assert headers["payrecon.dlq.topic"].decode() == topics.requests
        assert headers["payrecon.dlq.job"] == b"gateway"
        assert {"payrecon.dlq.partition", "payrecon.dlq.offset"} <= set(headers)


def test_results_are_keyed_by_request_and_telemetry_describes_every_call(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
) -> None:
    requests = [payment_request(i, country="JP", card_brand="jcb") for i in range(3)]
    publish(broker.bootstrap_servers, topics.requests, map(encode, requests))

    assert _run(broker, topics, stripe_proxy) == 0

    for message in consume_all(broker.bootstrap_servers, topics.results):
        result = json.loads(message.value())
        assert message.key() == result["request_id"].encode()
        assert result["idempotency_key"] == f"payrecon-pi-{result['request_id']}"
        assert result["payment_intent_id"].startswith("pi_")
        assert result["charge_id"].startswith("ch_")
    events = json_values(broker.bootstrap_servers, topics.telemetry)
    assert len(events) == 3
    for event in events:
        assert (event["kind"], event["outcome"], event["http_status"]) == (
            "attempt",
            "success",
            200,
        )
        assert event["stripe_request_id"].startswith("req_")
        assert event["latency_ms"] > 0
        assert (event["country"], event["card_brand"], event["payment_method_type"]) == (
            "JP",
            "jcb",
            "card",
        )


def test_a_request_read_again_is_paid_once_and_gets_the_same_payment(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
) -> None:
    request = encode(payment_request(1))
    publish(broker.bootstrap_servers, topics.requests, [request, request])  # sent twice

    assert _run(broker, topics, stripe_proxy) == 0
    assert _run(broker, topics, stripe_proxy, "--group-id", "another-group") == 0

    results = json_values(broker.bootstrap_servers, topics.results)
    assert len(results) == 4
    assert len({r["payment_intent_id"] for r in results}) == 1
    assert localstripe.count(PI_PATH) == 1
    posts = stripe_proxy.requests_to(PI_PATH, "POST")
    assert [p.forwarded for p in posts].count(True) == 1  # the others were replays


def test_local_payment_methods_are_routed_to_the_voucher_gateway(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    tmp_path: Path,
) -> None:
    konbini = [
        payment_request(i, payment_method_type="konbini", currency="jpy", payment_method=None)
        for i in range(3)
    ]
    card = payment_request(9)
    publish(broker.bootstrap_servers, topics.requests, map(encode, [*konbini, card]))
    voucher_flags = ["--route", "konbini=voucher", "--gateway-option"]
    voucher_flags.append(f"voucher.path={tmp_path / 'vouchers.jsonl'}")

    assert _run(broker, topics, stripe_proxy, *voucher_flags) == 0

    results = {r["request_id"]: r for r in json_values(broker.bootstrap_servers, topics.results)}
    for request in konbini:
        result = results[request["request_id"]]
        assert (result["gateway"], result["status"]) == ("voucher", "requires_action")
        assert result["payment_intent_id"].startswith("vch_")
    assert results[card["request_id"]]["gateway"] == "stripe"
    assert len(stripe_proxy.requests_to(PI_PATH, "POST")) == 1


def test_a_key_stripe_refuses_stops_the_consumer_with_exit_2_and_commits_nothing(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish(broker.bootstrap_servers, topics.requests, [encode(payment_request(1))])
    stripe_proxy.inject(error_response(401, error_type="invalid_request_error"), path=PI_PATH)

    assert _run(broker, topics, stripe_proxy, "--group-id", "g-401") == 2

    assert "refuses this consumer" in capsys.readouterr().err
    assert consume_all(broker.bootstrap_servers, topics.dlq) == []
    assert all(
        offset < 0 for offset in _committed(broker.bootstrap_servers, topics.requests, "g-401")
    )


def test_stripe_down_past_the_retries_exits_3_and_a_restart_pays_the_request_once(
    broker: EmbeddedBroker,
    topics: GatewayTopics,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish(broker.bootstrap_servers, topics.requests, [encode(payment_request(1))])
    stripe_proxy.inject(*[server_error(503)] * 3, path=PI_PATH)

    assert _run(broker, topics, stripe_proxy, "--max-attempts", "3") == 3
    assert "gave no result" in capsys.readouterr().err
    assert json_values(broker.bootstrap_servers, topics.results) == []

    assert _run(broker, topics, stripe_proxy) == 0
    assert len(json_values(broker.bootstrap_servers, topics.results)) == 1
    assert localstripe.count(PI_PATH) == 1


def test_an_unreachable_broker_exits_3(
    topics: GatewayTopics, stripe_proxy: StripeProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    argv = gateway_argv(closed, topics, stripe_proxy.url, "--broker-timeout", "1")

    assert gateway.main(argv) == 3
    assert "unavailable" in capsys.readouterr().err
