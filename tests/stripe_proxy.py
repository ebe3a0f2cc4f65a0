"""A fault-injecting HTTP proxy in front of localstripe, with Stripe's idempotency semantics.

localstripe answers every request correctly and ignores ``Idempotency-Key``. This proxy
gives tests the rest of the real Stripe: scripted failures (429 with ``Retry-After``,
5xx, hangs, dropped connections, and the dangerous one, a response lost after the request
was applied) and idempotent POSTs (same key and parameters: the first response is
replayed with ``Idempotent-Replayed: true``; same key, other parameters or endpoint:
400 ``idempotency_error``; same key while the first request is running: 409; keys
expire after ``ttl_s``, 24 h like Stripe's).

Script faults with :meth:`StripeProxy.inject` (the next matching requests, in order) or
:meth:`StripeProxy.chaos` (a seeded random share of matching requests). Every request is
recorded (:attr:`StripeProxy.requests`) with its method, path, idempotency key, the fault
applied, whether it reached localstripe and what the client got; never its credentials.
Like Stripe, every answer carries a fresh ``Request-Id`` (``req_...``); localstripe sends none.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one request.

    ``action``: ``respond`` (answer ``status`` without forwarding), ``hang`` (answer nothing
    for ``seconds``, then close; not forwarded), ``drop`` (close at once; not forwarded),
    ``drop_response`` (forward, so the request is applied and its result stored for
    idempotency, then close without answering), ``hang_response`` (forward, then answer
    nothing for ``seconds`` and close).
    """

    action: str
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None
    seconds: float = 0.0

    @property
    def forwards(self) -> bool:
        return self.action in ("drop_response", "hang_response")


def error_response(
    status: int,
    *,
    error_type: str = "api_error",
    code: str | None = None,
    message: str = "injected by the test proxy",
    retry_after: str | float | None = None,
    should_retry: bool | None = None,
) -> Fault:
    """Answer ``status`` with a Stripe-shaped error body, without forwarding."""
    headers = []
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    if should_retry is not None:
        headers.append(("Stripe-Should-Retry", "true" if should_retry else "false"))
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["code"] = code
    return Fault("respond", status=status, headers=tuple(headers), body={"error": error})


def rate_limited(retry_after: str | float | None = 1, *, should_retry: bool | None = None) -> Fault:
    """429 like Stripe's rate limiter, with ``Retry-After`` (seconds or an HTTP date)."""
    return error_response(
        429,
        error_type="invalid_request_error",
        code="rate_limit",
        message="Too many requests hit the API too quickly.",
        retry_after=retry_after,
        should_retry=should_retry,
    )


def server_error(
    status: int = 500, *, should_retry: bool | None = None, retry_after: str | float | None = None
) -> Fault:
    """A 5xx (500 by default) before the request reached Stripe."""
    return error_response(status, should_retry=should_retry, retry_after=retry_after)


def hang(seconds: float) -> Fault:
    """Accept the request, answer nothing for ``seconds``, close; never forwarded."""
    return Fault("hang", seconds=seconds)


def drop() -> Fault:
    """Close the connection without forwarding or answering."""
    return Fault("drop")


def drop_response() -> Fault:
    """Forward (the request is applied upstream), then close without answering."""
    return Fault("drop_response")


def hang_response(seconds: float) -> Fault:
    """Forward (the request is applied upstream), then stall ``seconds`` and close."""
    return Fault("hang_response", seconds=seconds)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the proxy saw it. ``status`` is what the client got (None: no
    answer); ``forwarded``: it reached localstripe; ``replayed``: answered from the
    idempotency store."""

    method: str
    path: str
    query: str
    idempotency_key: str | None
    fault: str | None
    forwarded: bool
    replayed: bool
    status: int | None


@dataclass(frozen=True)
class _Match:
    method: str | None
    path: str | None

    def __call__(self, method: str, path: str) -> bool:
        method_ok = self.method is None or self.method.upper() == method
        return method_ok and (self.path is None or path.startswith(self.path))


@dataclass
class _Stored:
    """The idempotency record of one key: the request's identity and, once known, the
    response to replay."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]
    created_at: float
    response: tuple[int, list[tuple[str, str]], bytes] | None = None


@dataclass
class _Chaos:
    rate: float
    faults: Sequence[Fault]
    match: _Match
    rng: random.Random


@dataclass
class _State:
    queue: list[tuple[_Match, Fault]] = field(default_factory=list)
    chaos: _Chaos | None = None
    records: list[RecordedRequest] = field(default_factory=list)
    keys: dict[tuple[str, str], _Stored] = field(default_factory=dict)


class StripeProxy:
    """The proxy on ``127.0.0.1`` and a free port, forwarding to ``upstream``.

    ``ttl_s`` is how long idempotency keys are kept; ``clock`` (epoch seconds) lets a test
    expire them without waiting.
    """

    def __init__(
        self, upstream: str, *, ttl_s: float = DAY_S, clock: Callable[[], float] = time.time
    ):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StripeProxy:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-proxy"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StripeProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the fault script -------------------------------------------------------------

    def inject(self, *faults: Fault, method: str | None = None, path: str | None = None) -> None:
        """The next requests matching ``method`` and ``path`` (a prefix) get ``faults``,
        one each, in order; other requests pass through untouched."""
        match = _Match(method, path)
        with self._lock:
            self._state.queue.extend((match, fault) for fault in faults)

    def chaos(
        self,
        rate: float,
        faults: Sequence[Fault],
        *,
        seed: int = 0,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """From now on, a share ``rate`` of matching requests (after the injected ones) get
        a fault drawn from ``faults``; seeded, so a run is repeatable."""
        if not 0.0 <= rate <= 1.0 or not faults:
            raise ValueError("chaos needs 0 <= rate <= 1 and at least one fault")
        with self._lock:
            self._state.chaos = _Chaos(
                rate, list(faults), _Match(method, path), random.Random(seed)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._state.queue.clear()
            self._state.chaos = None

    def reset(self) -> None:
        """Forget faults, records and idempotency keys."""
        with self._lock:
            self._state = _State()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.records)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests whose path starts with ``path`` (and of ``method``)."""
        match = _Match(method, path)
        return [r for r in self.requests if match(r.method, r.path)]

    # -- used by the handler ----------------------------------------------------------

    def _next_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, (match, fault) in enumerate(self._state.queue):
                if match(method, path):
                    del self._state.queue[index]
                    return fault
            chaos = self._state.chaos
            if chaos is not None and chaos.match(method, path) and chaos.rng.random() < chaos.rate:
                return chaos.rng.choice(list(chaos.faults))
        return None

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._state.records.append(record)

    @contextlib.contextmanager
    def _idempotent(
        self, scope: str, key: str, method: str, path: str, params: tuple[tuple[str, str], ...]
    ) -> Iterator[tuple[str, _Stored]]:
        """Claim ``key``: yields ("new", record) for a first request (fill in its response),
        ("replay", record) for a repeat, ("mismatch" | "in_use", record) for an error."""
        now = self.clock()
        with self._lock:
            keys = self._state.keys
            for stale in [k for k, s in keys.items() if now - s.created_at > self.ttl_s]:
                del keys[stale]
            stored = keys.get((scope, key))
            if stored is None:
                stored = _Stored(method, path, params, now)
                keys[(scope, key)] = stored
                verdict = "new"
            elif (stored.method, stored.path, stored.params) != (method, path, params):
                verdict = "mismatch"
            elif stored.response is None:
                verdict = "in_use"
            else:
                verdict = "replay"
        try:
            yield verdict, stored
        finally:
            if verdict == "new" and stored.response is None:
                with self._lock:  # never applied: the key may be used again
                    self._state.keys.pop((scope, key), None)


def _handler_for(proxy: StripeProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: StripeProxy
    protocol_version = "HTTP/1.0"  # one request per connection: a drop hits one request

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read records
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        key = self.headers.get("Idempotency-Key")
        fault = self.proxy._next_fault(self.command, parts.path)
        record = {
            "method": self.command,
            "path": parts.path,
            "query": parts.query,
            "idempotency_key": key,
            "fault": fault.action if fault else None,
            "forwarded": False,
            "replayed": False,
        }
        if fault is not None and not fault.forwards:
            if fault.action == "respond":
                headers = [("Content-Type", "application/json"), *fault.headers]
                payload = json.dumps(fault.body or {}).encode()
                self._deliver(record, (fault.status, headers, payload), None)
            else:
                self._deliver(record, None, fault)
            return
        if self.command == "POST" and key:
            response = self._idempotent_post(key, parts.path, body, record)
        else:
            response = self._forward(body)
            record["forwarded"] = True
        self._deliver(record, response, fault)  # drop_response, hang_response: answer lost

    def _deliver(
        self,
        record: dict[str, Any],
        response: tuple[int, list[tuple[str, str]], bytes] | None,
        lost: Fault | None,
    ) -> None:
        """Record the request, then answer it or lose the answer: a test that got its
        answer always finds the record."""
        status = response[0] if response is not None and lost is None else None
        self.proxy._record(RecordedRequest(**record, status=status))
        if lost is not None or response is None:
            self._lose_answer(lost or drop())
        else:
            self._send(*response)

    def _idempotent_post(
        self, key: str, path: str, body: bytes, record: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        params = tuple(sorted(parse_qsl(body.decode(), keep_blank_values=True)))
        scope = hashlib.sha256(self.headers.get("Authorization", "").encode()).hexdigest()
        with self.proxy._idempotent(scope, key, "POST", path, params) as (verdict, stored):
            if verdict == "mismatch":
                message = (
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request."
                )
                return _error(400, "idempotency_error", None, message, [])
            if verdict == "in_use":
                message = "There is currently another in-progress request using this key."
                retry = [("Stripe-Should-Retry", "true")]
                return _error(409, "idempotency_error", "idempotency_key_in_use", message, retry)
            if verdict == "replay":
                assert stored.response is not None
                status, headers, payload = stored.response
                record["replayed"] = True
                return status, [*headers, ("Idempotent-Replayed", "true")], payload
            status, headers, payload = self._forward(body)
            record["forwarded"] = True
            headers = [*headers, ("Idempotency-Key", key)]
            # Stripe stores the result of every request that began executing; 502 is this
            # proxy's own "localstripe unreachable".
            if status not in (400, 401, 403, 409, 429, 502):
                stored.response = (status, headers, payload)
            return status, headers, payload

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.proxy.upstream
        connection = http.client.HTTPConnection(host, port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, kept, payload
        except OSError as exc:
            return _error(502, "api_error", None, f"upstream unreachable: {exc}", [])
        finally:
            connection.close()

    def _lose_answer(self, fault: Fault) -> None:
        if fault.action in ("hang", "hang_response"):
            self.proxy._stopping.wait(fault.seconds)
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have given up first
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("date", "server", "request-id"):
                self.send_header(name, value)
        self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _error(
    status: int, error_type: str, code: str | None, message: str, headers: list[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["code"] = code
    payload = json.dumps({"error": error}).encode()
    return status, [("Content-Type", "application/json"), *headers], payload
