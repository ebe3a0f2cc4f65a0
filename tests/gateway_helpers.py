"""Helpers for the ``payrecon gateway`` tests: requests, topics, flags, reading outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kafka_helpers import consume_all, produce

PI_PATH = "/v1/payment_intents"
ROOT = Path(__file__).resolve().parents[1]
# Tansu's group join waits about half the session timeout: keep it short in tests.
FAST_GROUP = [
    "--kafka-config",
    "session.timeout.ms=2000",
    "--kafka-config",
    "heartbeat.interval.ms=500",
]


def payment_request(order: int | str, **overrides: Any) -> dict[str, Any]:
    """A valid card payment request v1 (a fresh request_id each call)."""
    request = {
        "request_id": str(uuid.uuid4()),
        "order_id": f"ord_{order}",
        "amount": 1000 + (order if isinstance(order, int) else 0),
        "currency": "usd",
        "payment_method_type": "card",
        "payment_method": "pm_card_visa",
        "country": "US",
        "card_brand": "visa",
        "created_at": "2026-11-20T10:00:00Z",
    }
    request.update(overrides)
    return request


def encode(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode()


@dataclass(frozen=True)
class GatewayTopics:
    requests: str

    @property
    def results(self) -> str:
        return f"{self.requests}.results"

    @property
    def telemetry(self) -> str:
        return f"{self.requests}.telemetry"

    @property
    def dlq(self) -> str:
        return f"{self.requests}.dlq"

    def flags(self) -> list[str]:
        return [
            "--requests-topic",
            self.requests,
            "--results-topic",
            self.results,
            "--telemetry-topic",
            self.telemetry,
        ]


def publish(
    bootstrap: str, topic: str, values: Iterable[bytes], key: Callable | None = None
) -> int:
    """Each value as one message (keyed by ``key(value)`` when given)."""
    now = int(time.time() * 1000)
    return produce(bootstrap, topic, [(key(v) if key else None, v, now) for v in values])


def gateway_argv(
    bootstrap: str,
    topics: GatewayTopics,
    stripe_api_base: str,
    *extra: str,
    group_id: str | None = None,
) -> list[str]:
    """Flags of a bounded, fast gateway run against the test broker and proxy."""
    return [
        "--bootstrap-servers",
        bootstrap,
        *topics.flags(),
        "--group-id",
        group_id or f"g.{topics.requests}",
        "--stripe-api-base",
        stripe_api_base,
        "--stripe-timeout",
        "2",
        "--backoff-base",
        "0.05",
        "--backoff-max",
        "0.5",
        "--commit-interval",
        "0.2",
        "--broker-timeout",
        "20",
        *FAST_GROUP,
        *extra,
    ]


def json_values(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in consume_all(bootstrap, topic)]


def headers_of(message: Any) -> dict[str, bytes]:
    return dict(message.headers() or [])


def spawn_gateway(argv: list[str], api_key: str, log: Path) -> subprocess.Popen:
    """``python -m pipelines.gateway`` in a subprocess, output to ``log``."""
    env = {**os.environ, "STRIPE_API_KEY": api_key, "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.gateway", *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
