"""Fuzzing ``payrecon webhooks serve`` through its ASGI app: arbitrary bodies, signatures,
headers, methods and paths are answered below 500 (4xx, or a redirect for a trailing slash;
never a 5xx while the broker is up, never an exception), only deliveries signed with the
endpoint's secret are accepted, and every accepted event is on the topic exactly once, byte
for byte.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.applications import Starlette

from pipelines.webhook_app import WEBHOOK_PATH, ReceiverConfig, create_app
from pipelines.webhook_publisher import AckedPublisher
from tests.faults.fuzz_inputs import count, fuzz_settings, message_values
from tests.faults.test_fuzz_stripe_events import VALID
from tests.kafka_helpers import new_topic
from tests.webhook_helpers import SECRET, read_topic, sign

# How the Stripe-Signature header of a delivery is made.
SIGNED = ("valid", "valid+junk", "future")
SIGNATURES = (*SIGNED, "absent", "forged", "too_old", "junk")
latin1 = st.text(st.characters(max_codepoint=255), max_size=60)


@dataclass(frozen=True)
class Delivery:
    method: str
    path: str
    body: bytes
    chunks: int
    signature: str
    junk: str
    headers: tuple[tuple[bytes, bytes], ...]

    def signature_header(self) -> bytes | None:
        now = int(time.time())
        header = {
            "valid": lambda: sign(self.body),
            "valid+junk": lambda: sign(self.body) + "," + self.junk,
            "future": lambda: sign(self.body, timestamp=now + 10**9),
            "absent": lambda: None,
            "forged": lambda: sign(self.body, secret="whsec_someone_else"),
            "too_old": lambda: sign(self.body, timestamp=now - 3600),
            "junk": lambda: self.junk,
        }[self.signature]()
        return None if header is None else header.encode("latin-1")


def _with_fresh_id(event: dict, suffix: str) -> dict:
    return {**event, "id": f"evt_{suffix}"}


events = st.builds(_with_fresh_id, st.sampled_from(VALID), st.uuids().map(lambda u: u.hex[:24]))
pretty = st.builds(lambda e: json.dumps(e, indent=2).encode(), events)
extra_headers = st.lists(
    st.tuples(
        st.sampled_from([b"content-length", b"content-type", b"x-forwarded-for", b"x-junk"]),
        latin1.map(lambda t: t.encode("latin-1")),
    ),
    max_size=3,
)
deliveries = st.builds(
    Delivery,
    method=st.sampled_from(["POST"] * 8 + ["GET", "PUT"]),
    path=st.sampled_from([WEBHOOK_PATH] * 8 + ["/healthz", WEBHOOK_PATH + "/", "/x"]),
    body=pretty | message_values(events),
    chunks=st.integers(1, 3),
    signature=st.sampled_from(SIGNATURES),
    junk=latin1,
    headers=extra_headers.map(tuple),
)


@dataclass
class Answer:
    status: int
    body: bytes


async def call(app: Starlette, delivery: Delivery) -> Answer:
    """One HTTP request through the ASGI interface, as uvicorn would make it."""
    headers = list(delivery.headers)
    signature = delivery.signature_header()
    if signature is not None:
        headers.append((b"stripe-signature", signature))
    body = delivery.body
    step = max(1, len(body) // delivery.chunks)
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": delivery.method,
        "scheme": "http",
        "path": delivery.path,
        "raw_path": delivery.path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }

    async def receive() -> dict:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], content)


@dataclass
class Receiver:
    app: Starlette
    loop: asyncio.AbstractEventLoop
    topic: str
    bootstrap: str
    accepted: dict[str, bytes] = field(default_factory=dict)  # event id -> body published


@pytest.fixture
def receiver(broker) -> Iterator[Receiver]:
    topic = new_topic(broker.bootstrap_servers, partitions=2, prefix="webhooks.fuzz")
    publisher = AckedPublisher(broker.bootstrap_servers, topic, ack_timeout_s=10.0)
    app = create_app(publisher, ReceiverConfig(SecretStr(SECRET)))
    loop = asyncio.new_event_loop()
    publisher.start()
    try:
        yield Receiver(app, loop, topic, broker.bootstrap_servers)
    finally:
        publisher.close()
        loop.close()


def test_any_delivery_is_answered_below_500_and_each_accepted_event_lands_once(receiver):
    @fuzz_settings(fast=600, faults=8000)
    @given(deliveries)
    def deliver(delivery: Delivery) -> None:
        count("webhook receiver")
        answer = receiver.loop.run_until_complete(call(receiver.app, delivery))

        assert answer.status < 500, (answer, delivery)
        if answer.status == 200 and delivery.path == WEBHOOK_PATH:
            assert delivery.signature in SIGNED, (answer, delivery)
            reply = json.loads(answer.body)
            if not reply["duplicate"]:
                assert reply["id"] not in receiver.accepted
                receiver.accepted[reply["id"]] = delivery.body
            else:
                assert reply["id"] in receiver.accepted

    deliver()

    messages = read_topic(receiver.bootstrap, receiver.topic)
    published = {m.key().decode(): m.value() for m in messages}
    assert len(messages) == len(published), "an event was published twice"
    assert published == receiver.accepted


def test_a_signature_that_is_not_ascii_is_a_400_not_a_500(receiver):
    """Found by the fuzzer: the stripe library compares signatures with
    ``hmac.compare_digest``, which raises TypeError on non-ASCII text: a 500, where a
    forged delivery should get a 400."""
    body = json.dumps(VALID[0]).encode()
    delivery = Delivery("POST", WEBHOOK_PATH, body, 1, "junk", "t=1,v1=\xe9", ())

    answer = receiver.loop.run_until_complete(call(receiver.app, delivery))

    assert answer.status == 400 and json.loads(answer.body)["error"] == "bad_signature"


def test_a_content_length_of_non_ascii_digits_is_not_a_500(receiver):
    """Found by the fuzzer: ``"²".isdigit()`` is true and ``int("²")`` raises ValueError.
    (uvicorn's parsers refuse such a header before the app sees it; the app does not rely
    on that.)"""
    body = json.dumps(VALID[0]).encode()
    delivery = Delivery("POST", WEBHOOK_PATH, body, 1, "valid", "", ((b"content-length", b"\xb2"),))

    answer = receiver.loop.run_until_complete(call(receiver.app, delivery))

    assert answer.status == 200
