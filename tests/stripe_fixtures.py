"""Stripe test infrastructure: localstripe in a subprocess, the fault proxy, a fake clock.

A test module uses them with ``pytest_plugins = ("tests.stripe_fixtures",)`` (import this
module's classes for annotations under ``TYPE_CHECKING`` only, so pytest imports it first,
as a plugin, and rewrites its asserts). One localstripe serves the session (each xdist
worker has its own); the ``localstripe`` fixture empties it before each test, so tests never
see each other's objects. Every process and thread started here is stopped at teardown.

Facts about localstripe 1.15 that shape these tests (read in its source):

* it pickles its whole state to the fixed file ``/tmp/localstripe.pickle`` after every
  write, and reloads it at start unless ``--from-scratch``: tests would share state across
  runs and pay an O(store) write per request. The launcher below disables both and binds
  ``127.0.0.1`` on a port the OS picks (race-free: the child reports it);
* ``DELETE /_config/data`` empties the store;
* ``GET /v1/balance_transactions`` accepts only ``limit``, ``starting_after`` and
  ``expand`` (``created``, ``type``, ``payout`` are rejected with 400 "Unexpected ...");
  it lists newest first; every fee is 0, ``fee_details`` empty, ``available_on`` =
  ``created``, ``exchange_rate`` 1.0, ``status`` ``available``;
* card charges (``POST /v1/charges`` with ``source=pm_card_visa``) and refunds create their
  balance transaction synchronously; there are no disputes, payouts' transactions or
  report runs; PaymentIntents confirm with ``pm_card_visa`` and do not copy their metadata
  to the charge;
* ``Idempotency-Key`` is ignored (the proxy implements it).
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.stripe_proxy import StripeProxy
from transforms.retry import Timing

START_TIMEOUT_S = 30.0
SEED_KEY = "sk_test_seed_only_not_secret"

# Runs localstripe's aiohttp app without its state file, on a port the OS chooses.
_LAUNCHER = """
import socket
import localstripe.resources as resources
resources.Store.dump_to_disk = lambda self: None
from aiohttp import web
from localstripe import server
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(server.app, sock=sock, access_log=None, print=None, handle_signals=True)
"""


class LocalStripe:
    """A localstripe server in a subprocess, with seeding helpers that call it directly
    (not through payrecon's client, whose behaviour is what the tests check)."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._session = requests.Session()
        self._session.auth = (SEED_KEY, "")

    def start(self) -> LocalStripe:
        with self.log_path.open("w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER], stdout=subprocess.PIPE, stderr=log, text=True
            )
        port = self._read_port()
        self.url = f"http://127.0.0.1:{port}"
        self._wait_until_answering()
        return self

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], START_TIMEOUT_S)
        line = self._process.stdout.readline().strip() if ready else ""
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"localstripe did not start; see {self.log_path}")
        return int(line)

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if self._session.get(f"{self.url}/v1/balance", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"localstripe is not answering; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._session.close()
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def reset(self) -> None:
        """Forget every object (``DELETE /_config/data``)."""
        self._session.delete(f"{self.url}/_config/data", timeout=10).raise_for_status()

    def post(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
        response = self._session.post(f"{self.url}{path}", data=data, timeout=10)
        response.raise_for_status()
        return response.json()

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._session.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def create_charge(
        self, amount: int, currency: str = "usd", *, order_id: str | None = None
    ) -> dict[str, Any]:
        """A succeeded card charge (and its balance transaction)."""
        data: dict[str, Any] = {"amount": amount, "currency": currency, "source": "pm_card_visa"}
        if order_id is not None:
            data["metadata[order_id]"] = order_id
        return self.post("/v1/charges", data)

    def refund(self, charge_id: str, amount: int | None = None) -> dict[str, Any]:
        """A refund of ``charge_id`` (and its negative balance transaction)."""
        data: dict[str, Any] = {"charge": charge_id}
        if amount is not None:
            data["amount"] = amount
        return self.post("/v1/refunds", data)

    def count(self, path: str) -> int:
        """How many objects a list endpoint holds (``/v1/payment_intents`` ...)."""
        return int(self.get(path, {"limit": 1})["total_count"])


class FakeClock:
    """A :class:`~transforms.retry.Timing` whose sleeps are recorded and advance time
    instantly; ``jitter`` is a fixed draw so delays are exact."""

    def __init__(self, start: float = 1_795_000_000.0, jitter: float = 0.5):
        self.now = start
        self.jitter_value = jitter
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def timing(self) -> Timing:
        return Timing(
            sleep=self.sleep,
            monotonic=lambda: self.now,
            wall=lambda: self.now,
            jitter=lambda: self.jitter_value,
        )


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """One localstripe for the session; prefer ``localstripe`` (empty for each test)."""
    server = LocalStripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> LocalStripe:
    """The session's localstripe, emptied for this test."""
    localstripe_server.reset()
    return localstripe_server


@pytest.fixture
def stripe_proxy(localstripe: LocalStripe) -> Iterator[StripeProxy]:
    """A fresh fault proxy (no faults, no records, no keys) in front of ``localstripe``."""
    with StripeProxy(localstripe.url) as proxy:
        yield proxy


@pytest.fixture
def stripe_api_key() -> str:
    """A test secret key no other test uses; assert it never leaks."""
    return f"sk_test_{uuid.uuid4().hex}{uuid.uuid4().hex}"


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
