"""``payrecon webhooks serve``: a signed Stripe event lands on its topic exactly once, and only
after the broker acknowledged it; unsigned, forged and replayed deliveries never reach Kafka."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from pydantic import SecretStr

from pipelines import webhooks
from pipelines.broker import EmbeddedBroker
from pipelines.webhook_app import WEBHOOK_PATH, ReceiverConfig, create_app
from pipelines.webhook_publisher import AckedPublisher
from schemas.stripe_event import HEADER_EVENT_TYPE, HEADER_SIGNATURE
from tests.webhook_helpers import (
    SECRET,
    body_of,
    charge_refunded,
    payment_intent_succeeded,
    read_topic,
    serving,
    sign,
)


@dataclass
class Receiver:
    url: str
    topic: str
    bootstrap: str

    def deliver(self, body: bytes, signature: str | None) -> requests.Response:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return requests.post(self.url + WEBHOOK_PATH, data=body, headers=headers, timeout=30)

    def messages(self) -> list:
        return read_topic(self.bootstrap, self.topic)


def receiver_app(bootstrap: str, topic: str, ack_timeout_s: float = 5.0, **config):
    publisher = AckedPublisher(
        bootstrap,
        topic,
        ack_timeout_s=ack_timeout_s,
        kafka_config={"reconnect.backoff.max.ms": 200},
    )
    return create_app(publisher, ReceiverConfig(SecretStr(SECRET), **config))


@pytest.fixture
def receiver(broker: EmbeddedBroker, create_topic: Callable[..., str]) -> Iterator[Receiver]:
    topic = create_topic(partitions=2)
    with serving(receiver_app(broker.bootstrap_servers, topic)) as url:
        yield Receiver(url, topic, broker.bootstrap_servers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- valid deliveries --------------------------------------------------------------------------


def test_signed_event_lands_once_byte_for_byte_keyed_by_event_id(receiver: Receiver):
    event = payment_intent_succeeded()
    body = body_of(event)
    signature = sign(body)

    response = receiver.deliver(body, signature)

    assert response.status_code == 200
    assert response.json() == {"received": True, "id": event["id"], "duplicate": False}
    [message] = receiver.messages()
    assert message.key() == event["id"].encode()
    assert message.value() == body
    assert message.timestamp()[1] == event["created"] * 1000
    headers = dict(message.headers())
    assert headers[HEADER_SIGNATURE] == signature.encode()
    assert headers[HEADER_EVENT_TYPE] == b"payment_intent.succeeded"


def test_event_delivered_twice_lands_once(receiver: Receiver):
    body = body_of(charge_refunded())

    first = receiver.deliver(body, sign(body))
    # Stripe's retry carries a new timestamp and signature.
    again = receiver.deliver(body, sign(body, timestamp=int(time.time()) - 5))

    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert len(receiver.messages()) == 1


def test_concurrent_deliveries_of_one_event_publish_it_once(receiver: Receiver):
    body = body_of(payment_intent_succeeded())
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: receiver.deliver(body, sign(body)), range(4)))

    assert [r.status_code for r in responses] == [200] * 4
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert len(receiver.messages()) == 1


def test_healthz_answers(receiver: Receiver):
    assert requests.get(receiver.url + "/healthz", timeout=10).json() == {"status": "ok"}


# -- deliveries that are not Stripe's: 4xx, nothing published ------------------------------------


def test_unsigned_delivery_is_rejected_and_not_published(receiver: Receiver):
    body = body_of(payment_intent_succeeded())

    response = receiver.deliver(body, None)

    assert response.status_code == 400
    assert response.json()["error"] == "missing_signature"
    assert receiver.messages() == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda body: (body, sign(body, secret="whsec_someone_else")), id="wrong-secret"
        ),
        pytest.param(
            lambda body: (body.replace(b"1099", b"9999"), sign(body)),
            id="body-changed-after-signing",
        ),
        pytest.param(lambda body: (body, "t=1,v1=deadbeef"), id="made-up-signature"),
        pytest.param(lambda body: (body, "v1=" + sign(body).split("v1=")[1]), id="no-timestamp"),
        pytest.param(lambda body: (body, sign(body).replace("v1=", "v0=")), id="other-scheme"),
    ],
)
def test_forged_delivery_is_rejected_and_not_published(receiver: Receiver, forge):
    body, signature = forge(body_of(payment_intent_succeeded()))

    response = receiver.deliver(body, signature)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert receiver.messages() == []


def test_replayed_delivery_signed_before_the_tolerance_is_rejected(receiver: Receiver):
    body = body_of(payment_intent_succeeded())
    stale = sign(body, timestamp=int(time.time()) - 301)  # a genuine signature, 301 s old

    response = receiver.deliver(body, stale)

    assert response.status_code == 400
    assert response.json()["error"] == "too_old"
    assert receiver.messages() == []


def test_a_delivery_signed_ahead_of_the_tolerance_is_rejected(receiver: Receiver):
    body = body_of(payment_intent_succeeded())
    ahead = sign(body, timestamp=int(time.time()) + 3600)  # would be replayable for an hour

    response = receiver.deliver(body, ahead)

    assert response.status_code == 400
    assert response.json()["error"] == "from_the_future"
    assert receiver.messages() == []


def test_signed_body_that_is_not_a_stripe_event_is_rejected(receiver: Receiver):
    body = b'{"hello": "world"}'

    response = receiver.deliver(body, sign(body))

    assert response.status_code == 400
    assert response.json()["error"] == "not_a_stripe_event"
    assert receiver.messages() == []


def test_body_over_the_limit_is_refused(broker: EmbeddedBroker, create_topic):
    topic = create_topic()
    app = receiver_app(broker.bootstrap_servers, topic, max_body_bytes=1_000)
    with serving(app) as url:
        body = body_of(payment_intent_succeeded())
        response = Receiver(url, topic, broker.bootstrap_servers).deliver(body, sign(body))
    assert response.status_code == 413
    assert read_topic(broker.bootstrap_servers, topic) == []


# -- a broker that does not acknowledge: 503, never 200 --------------------------------------


def test_unacknowledged_event_gets_503_and_is_not_remembered_as_delivered():
    app = receiver_app(f"127.0.0.1:{free_port()}", "stripe.events", ack_timeout_s=0.5)
    body = body_of(payment_intent_succeeded())
    with serving(app) as url:
        receiver = Receiver(url, "stripe.events", "")
        first = receiver.deliver(body, sign(body))
        retry = receiver.deliver(body, sign(body))

    assert (first.status_code, retry.status_code) == (503, 503)
    assert first.json()["error"] == "not_acknowledged"


def test_stripe_retry_after_a_broker_outage_lands_the_event_once():
    port = free_port()
    event = payment_intent_succeeded()
    body = body_of(event)
    with serving(receiver_app(f"127.0.0.1:{port}", "stripe.events", ack_timeout_s=1.0)) as url:
        receiver = Receiver(url, "stripe.events", f"127.0.0.1:{port}")
        assert receiver.deliver(body, sign(body)).status_code == 503
        with EmbeddedBroker(port=port) as late_broker:  # producing creates the topic
            deadline = time.monotonic() + 20
            while (status := receiver.deliver(body, sign(body)).status_code) == 503:
                assert time.monotonic() < deadline, "the receiver never reached the broker"
            assert status == 200
            [message] = read_topic(late_broker.bootstrap_servers, "stripe.events")
    assert message.value() == body


# -- the command line ------------------------------------------------------------------------


def test_serve_without_a_signing_secret_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv(webhooks.SECRET_ENV, raising=False)

    code = webhooks.main(["serve", "--bootstrap-servers", "127.0.0.1:1"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and webhooks.SECRET_ENV in err


def test_serve_with_an_unreachable_broker_exits_3(monkeypatch, capsys):
    monkeypatch.setenv(webhooks.SECRET_ENV, SECRET)

    code = webhooks.main(
        ["serve", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--broker-timeout", "1"]
    )

    assert code == 3
    err = capsys.readouterr().err
    assert "broker unavailable" in err and SECRET not in err
