"""SIGKILL of ``payrecon gateway`` at random points, many times, then a run to the end: every
request is paid exactly once and has a result, whatever the kills interrupted (issue 9).

The gateway runs as ``python -m pipelines.gateway`` against localstripe behind the fault
proxy, which slows a share of the calls (held responses, 429s, responses lost after Stripe
applied the request) so that kills land while payments are in flight. Each kill waits until
the consumer has paid something, then a seeded random moment (``PAYRECON_KILL_SEED`` replays
one). ``PAYRECON_KILL_ROUNDS`` (default 1; ``make faults`` sets more) repeats the four kills.
Then one bounded run finishes the work, and:

* none lost: every request has a result, and nothing was dead-lettered;
* none paid twice: one PaymentIntent per request in localstripe, and the proxy forwarded each
  idempotency key to Stripe once (a replayed key is answered from the proxy's record);
* results may be published more than once (at least once, by design), but always with the
  same payment.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipelines import gateway
from tests.faults.kill_helpers import KILL_ROUNDS
from tests.gateway_helpers import (
    PI_PATH,
    GatewayTopics,
    encode,
    gateway_argv,
    json_values,
    payment_request,
    publish,
    spawn_gateway,
    wait_for,
)
from tests.stripe_proxy import StripeProxy, drop_response, hang_response, rate_limited

if TYPE_CHECKING:
    from pipelines.broker import EmbeddedBroker
    from tests.stripe_fixtures import LocalStripe

pytestmark = pytest.mark.slow
pytest_plugins = ("tests.stripe_fixtures",)

REQUESTS = 80  # localstripe lists at most 100 objects a page
KILLS_PER_ROUND = 4


def _paid_more(localstripe: LocalStripe, before: int, process) -> Callable[[], bool]:
    """True once the gateway paid one more request (or all were paid), or it ended."""
    return lambda: (
        localstripe.count(PI_PATH) > min(before, REQUESTS - 1) or process.poll() is not None
    )


def test_killed_gateways_then_a_last_run_pay_every_request_exactly_once(
    broker: EmbeddedBroker,
    topic_name: str,
    stripe_proxy: StripeProxy,
    localstripe: LocalStripe,
    stripe_api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    seed = int(os.environ.get("PAYRECON_KILL_SEED") or random.SystemRandom().randrange(10**6))
    draw = random.Random(seed)
    topics = GatewayTopics(topic_name)
    requests = [payment_request(i) for i in range(REQUESTS)]
    publish(broker.bootstrap_servers, topics.requests, map(encode, requests))
    slow = [hang_response(0.4), rate_limited(retry_after=0.2), drop_response()]
    stripe_proxy.chaos(0.4, slow, seed=seed, path=PI_PATH)
    # Two calls at a time at most: the work outlasts the kills.
    argv = gateway_argv(broker.bootstrap_servers, topics, stripe_proxy.url,
                        "--concurrency", "2", "--max-concurrency", "2")  # fmt: skip

    paid_at_kill = []
    for kill in range(KILL_ROUNDS * KILLS_PER_ROUND):
        before = localstripe.count(PI_PATH)
        process = spawn_gateway(argv, stripe_api_key, tmp_path / f"kill-{kill}.log")
        try:
            wait_for(_paid_more(localstripe, before, process), 60, "the gateway to pay")
            time.sleep(draw.uniform(0.0, 1.0))
        finally:
            process.kill()
            process.wait(timeout=10)
        paid_at_kill.append(localstripe.count(PI_PATH))
    context = f"seed {seed}, PaymentIntents at each kill: {paid_at_kill}"
    assert paid_at_kill[0] < REQUESTS, f"{context}: the first kill hit no work"

    assert gateway.main([*argv, "--idle-timeout", "1.5"]) == 0, context

    payments = defaultdict(set)
    for result in json_values(broker.bootstrap_servers, topics.results):
        payments[result["request_id"]].add(result["payment_intent_id"])
    assert set(payments) == {r["request_id"] for r in requests}, f"{context}: results lost"
    assert all(len(ids) == 1 for ids in payments.values()), f"{context}: a request paid twice"
    listed = localstripe.get(PI_PATH, {"limit": 100})["data"]
    intents = Counter(i["metadata"]["payrecon_request_id"] for i in listed)
    assert intents == Counter(r["request_id"] for r in requests), context
    applied = Counter(r.idempotency_key for r in stripe_proxy.requests_to(PI_PATH) if r.forwarded)
    assert set(applied.values()) == {1}, f"{context}: a key reached Stripe twice"
    assert json_values(broker.bootstrap_servers, f"{topics.requests}.dlq") == [], context
    print(f"{context}: {len(paid_at_kill)} kills survived, {REQUESTS} paid once")
