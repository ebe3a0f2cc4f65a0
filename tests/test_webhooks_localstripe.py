"""End to end: localstripe sends its own signed webhook for a PaymentIntent payment to the
receiver; the consumer turns it into the order's status and its ledger event."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import requests
from pydantic import SecretStr

from pipelines.broker import EmbeddedBroker
from pipelines.stripe_events import StripeEventsConsumer, Topics
from pipelines.webhook_app import WEBHOOK_PATH, ReceiverConfig, create_app
from pipelines.webhook_publisher import AckedPublisher
from tests.webhook_helpers import SECRET, read_topic, serving

if TYPE_CHECKING:
    from tests.stripe_fixtures import LocalStripe

pytest_plugins = ("tests.stripe_fixtures",)

FAST_GROUP = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "300"}


@pytest.fixture
def stripe_webhook(localstripe: LocalStripe) -> Iterator[Callable[[str], None]]:
    """``register(url)``: localstripe POSTs its payment_intent events to ``url``, signed with
    ``SECRET``. Its registry outlives the test, so the endpoint is muted at teardown."""
    webhook_id = f"payrecon-{uuid.uuid4().hex[:8]}"
    config_url = f"{localstripe.url}/_config/webhooks/{webhook_id}"

    def register(url: str) -> None:
        events = ["payment_intent.succeeded", "payment_intent.payment_failed"]
        reply = requests.post(
            config_url, json={"url": url, "secret": SECRET, "events": events}, timeout=10
        )
        reply.raise_for_status()

    yield register
    muted = {"url": "http://127.0.0.1:9/", "secret": SECRET, "events": ["payrecon.muted"]}
    requests.post(config_url, json=muted, timeout=10).raise_for_status()


def test_localstripe_payment_webhook_becomes_a_paid_order_and_a_ledger_charge(
    broker: EmbeddedBroker,
    create_topic: Callable[..., str],
    localstripe: LocalStripe,
    stripe_webhook: Callable[[str], None],
):
    events = create_topic(partitions=2)
    topics = Topics(events, f"{events}.status", f"{events}.ledger")
    publisher = AckedPublisher(broker.bootstrap_servers, events)
    app = create_app(publisher, ReceiverConfig(SecretStr(SECRET)))
    with serving(app) as url:
        stripe_webhook(url + WEBHOOK_PATH)
        intent = localstripe.post(
            "/v1/payment_intents",
            {
                "amount": 2500,
                "currency": "eur",
                "payment_method": "pm_card_visa",
                "metadata[order_id]": "ord_ls_1",
            },
        )
        paid = localstripe.post(f"/v1/payment_intents/{intent['id']}/confirm", {})
        delivered = wait_for_messages(broker, events, 1)

    [message] = delivered
    assert json.loads(message.value())["type"] == "payment_intent.succeeded"
    counts = StripeEventsConsumer(
        broker.bootstrap_servers, topics, group_id=f"g.{events}", kafka_config=FAST_GROUP
    ).run(idle_timeout_s=0.5)

    assert (counts.read, counts.mapped) == (1, 1)
    [status] = [json.loads(m.value()) for m in read_topic(broker.bootstrap_servers, topics.status)]
    assert (status["order_id"], status["status"], status["amount"]) == ("ord_ls_1", "paid", 2500)
    [ledger] = [json.loads(m.value()) for m in read_topic(broker.bootstrap_servers, topics.ledger)]
    assert ledger["stripe_object_id"] == paid["latest_charge"]["id"]
    assert (ledger["event_type"], ledger["amount"], ledger["currency"]) == (
        "charge.succeeded",
        2500,
        "eur",
    )


def wait_for_messages(broker: EmbeddedBroker, topic: str, n: int, timeout_s: float = 15) -> list:
    deadline = time.monotonic() + timeout_s
    while len(messages := read_topic(broker.bootstrap_servers, topic)) < n:
        assert time.monotonic() < deadline, f"{topic}: {len(messages)} of {n} messages"
        time.sleep(0.2)
    return messages
