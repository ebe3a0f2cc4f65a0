"""The ASGI app of ``payrecon webhooks serve``: Stripe's webhook deliveries to ``stripe.events``.

``POST /stripe/webhook`` answers:

- 200 once the event is on the topic: the broker acknowledged the request body, published
  byte for byte, keyed by the event id. A delivery of an event acknowledged recently (Stripe
  retries and duplicates deliveries) is answered 200 without publishing it again; one that
  arrives while the same event is being published waits for that outcome.
- 400 for a delivery that is not Stripe's: no ``Stripe-Signature`` header, a signature that
  does not match the endpoint's secret, a signature older than the tolerance (a replay) or
  dated more than the tolerance ahead, or a body that is not a Stripe event. Nothing is
  published. Stripe does not send these.
- 413 for a body over the size limit; 503 when the broker did not acknowledge in time:
  Stripe retries later, so nothing is lost and nothing is claimed that is not durable.

``GET /healthz`` answers 200 while the process serves requests.

Signatures are checked with the stripe library (``WebhookSignature.verify_header``); the
secret is a ``SecretStr`` and is never logged, nor is a body or a signature.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipelines.webhook_publisher import AckedPublisher
from schemas.stripe_event import HEADER_EVENT_TYPE, HEADER_RECEIVED_AT, HEADER_SIGNATURE
from transforms.ledger_validation import Invalid
from transforms.stripe_event_parse import StripeEvent, parse_event

log = logging.getLogger("payrecon.webhooks")

WEBHOOK_PATH = "/stripe/webhook"
DEFAULT_TOLERANCE_S = 300  # the stripe library's default
DEFAULT_MAX_BODY_BYTES = 900_000  # below librdkafka's default message.max.bytes (1,000,000)
DEFAULT_REMEMBERED = 10_000


@dataclass(frozen=True)
class ReceiverConfig:
    secret: SecretStr
    tolerance_s: int = DEFAULT_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    remembered: int = DEFAULT_REMEMBERED  # acknowledged event ids kept to answer duplicates


class _Reject(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def verify_signature(body: bytes, header: str | None, secret: SecretStr, tolerance_s: int) -> None:
    """Raises ``_Reject`` (400) unless ``header`` signs ``body`` recently with ``secret``."""
    if not header:
        raise _Reject(400, "missing_signature", "no Stripe-Signature header")
    if not header.isascii():  # the stripe library would compare it with a TypeError (a 500)
        raise _Reject(400, "bad_signature", "Stripe-Signature is not ASCII")
    key = secret.get_secret_value()
    try:
        stripe.WebhookSignature.verify_header(body, header, key, tolerance_s)
        _refuse_future(header, tolerance_s)
        return
    except UnicodeDecodeError:
        raise _Reject(400, "bad_payload", "the body is not UTF-8") from None
    except stripe.SignatureVerificationError:
        pass
    try:  # the same check without the age limit tells a replay from a forgery
        stripe.WebhookSignature.verify_header(body, header, key)
    except stripe.SignatureVerificationError:
        raise _Reject(400, "bad_signature", "Stripe-Signature does not sign this body") from None
    raise _Reject(400, "too_old", f"signed more than {tolerance_s}s ago: a replay, or a bad clock")


def _refuse_future(header: str, tolerance_s: int) -> None:
    """The stripe library bounds a signature's age only: a genuine signature dated later
    than the tolerance from now (a signer's clock far ahead) would stay replayable until
    then, so it is refused like an old one."""
    stamps = [p[2:] for p in header.split(",") if p.startswith("t=")]
    signed_at = int(stamps[0]) if stamps and stamps[0].isdigit() else 0
    if signed_at > time.time() + tolerance_s:
        raise _Reject(
            400, "from_the_future", f"signed more than {tolerance_s}s ahead of this clock"
        )


class RecentDeliveries:
    """Publishes each event id once while it is remembered (bounded, least recent forgotten).

    Only acknowledged ids are remembered, so a failed publish is tried again on Stripe's
    retry. Concurrent deliveries of one id share a single publish.
    """

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    async def once(
        self, event_id: str, publish: Callable[[], Awaitable[bool]]
    ) -> tuple[bool, bool]:
        """``(acknowledged, duplicate)``."""
        if event_id in self._acked:
            self._acked.move_to_end(event_id)
            return True, True
        pending = self._in_flight.get(event_id)
        if pending is not None:
            return await asyncio.shield(pending), True
        future = asyncio.ensure_future(publish())
        self._in_flight[event_id] = future
        future.add_done_callback(lambda done: self._settled(event_id, done))
        return await asyncio.shield(future), False

    def _settled(self, event_id: str, done: asyncio.Future[bool]) -> None:
        self._in_flight.pop(event_id, None)
        if done.cancelled() or done.exception() is not None or not done.result():
            return
        self._acked[event_id] = None
        while len(self._acked) > self._capacity:
            self._acked.popitem(last=False)


def create_app(publisher: AckedPublisher, config: ReceiverConfig) -> Starlette:
    """The receiver; the app's lifespan starts and closes ``publisher``."""
    deliveries = RecentDeliveries(config.remembered)

    async def receive(request: Request) -> JSONResponse:
        try:
            body, signature, event = await _verified(request, config)
        except _Reject as reject:
            log.info("rejected a delivery (%s): %s", reject.error, reject.detail)
            return JSONResponse({"error": reject.error, "detail": reject.detail}, reject.status)

        async def publish() -> bool:
            return await publisher.publish(
                event.id.encode(),
                body,
                timestamp_ms=event.created * 1000,
                headers=_headers(event, signature),
            )

        acked, duplicate = await deliveries.once(event.id, publish)
        if not acked:
            return JSONResponse(
                {"error": "not_acknowledged", "detail": "the broker did not acknowledge"},
                503,
                headers={"Retry-After": "10"},
            )
        log.info("%s %s %s", "duplicate" if duplicate else "accepted", event.type, event.id)
        return JSONResponse({"received": True, "id": event.id, "duplicate": duplicate})

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        publisher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(publisher.close)

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _verified(request: Request, config: ReceiverConfig) -> tuple[bytes, str, StripeEvent]:
    """The body, its signature and its event; raises ``_Reject`` for anything else."""
    body = await _read_body(request, config.max_body_bytes)
    signature = request.headers.get("stripe-signature")
    verify_signature(body, signature, config.secret, config.tolerance_s)
    assert signature is not None  # verify_signature rejects a missing one
    event = parse_event(body)
    if isinstance(event, Invalid):
        raise _Reject(400, "not_a_stripe_event", event.detail)
    return body, signature, event


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # not "²"
        raise _Reject(413, "too_large", f"body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Reject(413, "too_large", f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _headers(event: StripeEvent, signature: str) -> list[tuple[str, bytes]]:
    received = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        (HEADER_SIGNATURE, signature.encode()),
        (HEADER_EVENT_TYPE, event.type.encode()),
        (HEADER_RECEIVED_AT, received.encode()),
    ]
