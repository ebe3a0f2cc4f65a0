"""Stripe webhook test helpers: events built from Stripe's official example objects, signed
the way Stripe signs them, and a receiver served by uvicorn on a free port.

Events are Stripe's example event (``fixtures3.json``, resource ``event``) with ``type`` and
``data.object`` replaced by Stripe's example object of the right kind; only ids, metadata and
the fields an event type implies (a refunded charge is ``refunded``) are changed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import uvicorn
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from starlette.applications import Starlette

REFERENCE = Path("/work/shared/reference/stripe/fixtures3.json")
SECRET = "whsec_test_payrecon_0123456789abcdef"


@cache
def _resources() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())["resources"]


def official(kind: str) -> dict[str, Any]:
    """A fresh copy of Stripe's example object of ``kind`` (``charge``, ``refund`` ...)."""
    return copy.deepcopy(_resources()[kind])


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex[:24]}"


def stripe_event(
    event_type: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """Stripe's example event, of ``event_type``, about ``obj``."""
    event = official("event")
    event["id"] = event_id or new_event_id()
    event["type"] = event_type
    event["data"] = {"object": obj}
    if created is not None:
        event["created"] = created
    return event


def with_order(obj: dict[str, Any], order_id: str | None) -> dict[str, Any]:
    if order_id is not None:
        obj["metadata"] = {**obj.get("metadata", {}), "order_id": order_id}
    return obj


def payment_intent_succeeded(order_id: str | None = "ord_1001", **kw: Any) -> dict[str, Any]:
    """The example event's own PaymentIntent: succeeded, 1099 usd, latest charge ch_...fClmUOq."""
    pi = with_order(official("event")["data"]["object"], order_id)
    return stripe_event("payment_intent.succeeded", pi, **kw)


def charge_refunded(order_id: str | None = "ord_1001", **kw: Any) -> dict[str, Any]:
    """The example charge (100 usd), fully refunded by the example refund."""
    charge = with_order(official("charge"), order_id)
    refund = official("refund")
    charge.update(captured=True, amount_captured=100, refunded=True, amount_refunded=100)
    charge["refunds"]["data"] = [refund]
    charge["refunds"]["total_count"] = 1
    return stripe_event("charge.refunded", charge, **kw)


def dispute_created(order_id: str | None = "ord_1001", **kw: Any) -> dict[str, Any]:
    return stripe_event("charge.dispute.created", with_order(official("dispute"), order_id), **kw)


def body_of(event: dict[str, Any]) -> bytes:
    """The request body, pretty-printed as Stripe sends it."""
    return json.dumps(event, indent=2).encode()


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``,
    computed here independently of the stripe library that the receiver verifies with."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a free port in a thread; yields its base URL and shuts
    it down (lifespan included) at exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every message of ``topic``, read to the end of each partition (short polls, so an
    empty or small topic is read in well under a second)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "webhook-test-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, ended = [], set()
        deadline = time.monotonic() + timeout_s
        while len(ended) < len(partitions):
            assert time.monotonic() < deadline, f"{topic} was not read to its end in time"
            for msg in consumer.consume(500, timeout=0.05):
                if msg.error() is None:
                    messages.append(msg)
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition())
        return messages
    finally:
        consumer.close()
