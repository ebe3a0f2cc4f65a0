"""``payrecon webhooks consume``: each Stripe event becomes its order status update and ledger
events once; redeliveries and restarts produce nothing new; the rest is dead-lettered."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pipelines import webhooks
from pipelines.broker import EmbeddedBroker
from pipelines.stripe_events import ConsumeCounts, StripeEventsConsumer, Topics
from schemas.dead_letter import HEADER_PREFIX
from tests.kafka_helpers import produce
from tests.webhook_helpers import (
    body_of,
    charge_refunded,
    official,
    payment_intent_succeeded,
    read_topic,
    stripe_event,
)
from transforms.ledger_validation import check_event

# Tansu makes a joining member wait about half the session timeout; keep it short here.
FAST_GROUP = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "300"}


@pytest.fixture
def topics(broker: EmbeddedBroker, create_topic: Callable[..., str]) -> Topics:
    events = create_topic(partitions=2)
    for output in (f"{events}.status", f"{events}.ledger", f"{events}.dlq"):
        create_topic(partitions=2, name=output)
    return Topics(events, f"{events}.status", f"{events}.ledger")


def publish_events(bootstrap: str, topic: str, bodies: list[bytes]) -> None:
    """As the receiver does: keyed by event id, timestamped by ``created``."""
    records = []
    for body in bodies:
        try:
            event = json.loads(body)
            records.append((event["id"].encode(), body, event["created"] * 1000))
        except ValueError:
            records.append((None, body, 1_795_000_000_000))
    produce(bootstrap, topic, records, linger_ms=5)


def consume(broker: EmbeddedBroker, topics: Topics, consumer_class=StripeEventsConsumer, **run):
    consumer = consumer_class(
        broker.bootstrap_servers, topics, group_id=f"g.{topics.events}", kafka_config=FAST_GROUP
    )
    return consumer.run(idle_timeout_s=run.pop("idle_timeout_s", 0.5), **run)


def values(broker: EmbeddedBroker, topic: str) -> list[dict]:
    return [json.loads(m.value()) for m in read_topic(broker.bootstrap_servers, topic)]


def test_succeeded_and_refunded_events_each_become_one_status_and_one_ledger_event(
    broker: EmbeddedBroker, topics: Topics, capsys
):
    succeeded, refunded = payment_intent_succeeded("ord_7"), charge_refunded("ord_8")
    publish_events(broker.bootstrap_servers, topics.events, [body_of(succeeded), body_of(refunded)])

    code = webhooks.main(
        [
            "consume",
            *("--bootstrap-servers", broker.bootstrap_servers),
            *("--topic", topics.events, "--status-topic", topics.status),
            *("--ledger-topic", topics.ledger, "--group-id", f"g.{topics.events}"),
            *(f"--kafka-config=session.timeout.ms={FAST_GROUP['session.timeout.ms']}",),
            *(f"--kafka-config=heartbeat.interval.ms={FAST_GROUP['heartbeat.interval.ms']}",),
            *("--idle-timeout", "0.5"),
        ]
    )

    assert code == 0
    assert (
        "read 2 events: 2 mapped, 0 duplicates skipped, 0 dead-lettered" in capsys.readouterr().out
    )
    statuses = {s["source_event_id"]: s for s in values(broker, topics.status)}
    assert {e: s["status"] for e, s in statuses.items()} == {
        succeeded["id"]: "paid",
        refunded["id"]: "refunded",
    }
    ledger = sorted(values(broker, topics.ledger), key=lambda e: e["event_type"])
    assert [
        (e["event_type"], e["stripe_object_id"], e["amount"], e["order_id"]) for e in ledger
    ] == [
        ("charge.succeeded", "ch_1MoS6tLgUG5tbmjctfClmUOq", 1099, "ord_7"),
        ("refund.succeeded", "re_1MoqxHLgUG5tbmjcYO7PFWn6", 100, "ord_8"),
    ]
    assert all(isinstance(check_event(e), int) for e in ledger)
    keys = {m.key() for m in read_topic(broker.bootstrap_servers, topics.ledger)}
    assert keys == {b"ord_7", b"ord_8"}


def test_event_delivered_twice_is_processed_once(broker: EmbeddedBroker, topics: Topics):
    body = body_of(payment_intent_succeeded("ord_9"))
    publish_events(broker.bootstrap_servers, topics.events, [body, body])

    counts = consume(broker, topics)

    assert (counts.read, counts.mapped, counts.duplicates) == (2, 1, 1)
    assert counts.balanced
    assert len(read_topic(broker.bootstrap_servers, topics.status)) == 1
    assert len(read_topic(broker.bootstrap_servers, topics.ledger)) == 1


class Crash(Exception):
    pass


class CrashesBeforeCommit(StripeEventsConsumer):
    """Writes its outputs, then dies where it would commit the group's offsets."""

    def _commit(self, batch):
        raise Crash


def test_restart_before_commit_rewrites_identical_records_and_then_commits(
    broker: EmbeddedBroker, topics: Topics
):
    bodies = [body_of(payment_intent_succeeded("ord_10")), body_of(charge_refunded("ord_11"))]
    publish_events(broker.bootstrap_servers, topics.events, bodies)

    with pytest.raises(Crash):
        consume(broker, topics, CrashesBeforeCommit)
    again = consume(broker, topics)
    after_commit = consume(broker, topics)

    assert again.read == 2 and after_commit.read == 0
    for topic in (topics.status, topics.ledger):
        messages = read_topic(broker.bootstrap_servers, topic)
        assert len(messages) == 4  # each record twice: at-least-once ...
        copies = {(m.key(), m.value()) for m in messages}
        assert len(copies) == 2  # ... and byte-identical, so readers dedupe by id
    ids = [e["event_id"] for e in values(broker, topics.ledger)]
    assert len(set(ids)) == 2


def test_unmappable_events_are_dead_lettered_with_their_reason_and_bytes(
    broker: EmbeddedBroker, topics: Topics
):
    unhandled = body_of(stripe_event("customer.created", official("customer")))
    no_order = body_of(payment_intent_succeeded(order_id=None))
    garbage = b"\x00not an event"
    mapped = body_of(charge_refunded("ord_12"))
    publish_events(broker.bootstrap_servers, topics.events, [unhandled, no_order, garbage, mapped])

    counts: ConsumeCounts = consume(broker, topics)

    assert counts.read == 4 == counts.mapped + counts.duplicates + counts.dead_lettered
    assert dict(counts.reasons) == {
        "unhandled_event_type": 1,
        "missing_order_id": 1,
        "not_json": 1,
    }
    letters = read_topic(broker.bootstrap_servers, topics.dead_letters)
    by_reason = {dict(m.headers())[HEADER_PREFIX + "reason"].decode(): m for m in letters}
    assert by_reason["unhandled_event_type"].value() == unhandled
    assert by_reason["missing_order_id"].value() == no_order
    assert by_reason["not_json"].value() == garbage
    headers = dict(by_reason["missing_order_id"].headers())
    assert headers[HEADER_PREFIX + "topic"] == topics.events.encode()
    assert headers[HEADER_PREFIX + "job"] == b"webhooks"
    assert len(read_topic(broker.bootstrap_servers, topics.status)) == 1


def test_stops_after_max_messages_and_commits_only_those(broker: EmbeddedBroker, topics: Topics):
    bodies = [body_of(payment_intent_succeeded(f"ord_{i}")) for i in range(5)]
    publish_events(broker.bootstrap_servers, topics.events, bodies)

    first = consume(broker, topics, max_messages=2, idle_timeout_s=5)
    rest = consume(broker, topics)

    assert (first.read, rest.read) == (2, 3)
    assert len(read_topic(broker.bootstrap_servers, topics.status)) == 5
