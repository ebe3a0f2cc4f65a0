"""``payrecon repair`` asking the Stripe API through a storm of 429s, 5xx, timeouts and
dropped connections (issue 9): every discrepancy ends as it does without faults, and only
what Stripe never answered is dead-lettered.

localstripe holds the charges, the fault proxy (tests/stripe_proxy.py) sits in front of it,
and the job's Stripe client has the production retry policy on a fake clock, so waits
(``Retry-After`` included) cost no time; timeouts are real, with a short read timeout.
A storm that a retry outlasts must change nothing: the same ``recon_repairs`` rows, the same
records on ``ledger.repairs`` and ``recon.review`` as a run without faults, no dead letter,
and counts that add up. When Stripe stays down past the retries, every discrepancy it was
asked about is dead-lettered as ``stripe_unavailable`` with its bytes (``payrecon dlq
replay`` sends it back), none is repaired wrongly, and in = out + dead letters still holds.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from pipelines.repair_run import STRIPE_UNAVAILABLE, RepairRequest, run_repair
from tests.kafka_helpers import consume_all, new_topic, produce
from tests.stripe_proxy import drop, drop_response, hang, hang_response, rate_limited, server_error
from tests.test_repair_api import discrepancy
from transforms.repair_truth import ApiTruth
from transforms.stripe_api import DEFAULT_RETRY, StripeClient

pytest_plugins = ("tests.stripe_fixtures",)
pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 0.5
STORM = (
    rate_limited(retry_after=2),
    server_error(500),
    server_error(502),
    server_error(503),
    hang(READ_TIMEOUT_S * 3),
    hang_response(READ_TIMEOUT_S * 3),
    drop(),
    drop_response(),
)
STORM_RATE = 0.4
KINDS = ("missing_in_ledger", "amount_mismatch", "status_mismatch")
# recon_repairs columns a second run cannot repeat (its clock, and its group's run id)
CLOCKS = {"repaired_at", "repair_run_id"}


@pytest.fixture
def discrepancies(broker, localstripe) -> dict:
    """A topic of discrepancies about localstripe's charges (repairable), and about objects
    Stripe does not know (for review)."""
    ids = []
    for n in range(12):
        charge = localstripe.create_charge(1000 + 7 * n, ("usd", "eur", "jpy")[n % 3],
                                           order_id=f"ord_storm_{n}")  # fmt: skip
        ids.append((KINDS[n % 3], charge["id"]))
    ids += [("amount_mismatch", f"ch_unknown_{n}") for n in range(3)]
    topic = new_topic(broker.bootstrap_servers, partitions=2, prefix="recon.discrepancies")
    now_ms = int(time.time() * 1000)
    records = [(oid.encode(), discrepancy(kind, oid, order_id=f"ord_{oid}"), now_ms)
               for kind, oid in ids]  # fmt: skip
    produce(broker.bootstrap_servers, topic, records)
    return {"topic": topic, "objects": [oid for _, oid in ids]}


def repair(broker, discrepancies, proxy, key, fake_clock, tmp_path: Path, label: str) -> int:
    client = StripeClient(
        key, api_base=proxy.url, read_timeout_s=READ_TIMEOUT_S, timing=fake_clock.timing()
    )
    base = discrepancies["topic"]
    request = RepairRequest(
        bootstrap_servers=broker.bootstrap_servers,
        kafka_overrides={},
        broker_timeout=30.0,
        discrepancies_topic=base,
        repairs_topic=f"{base}.{label}.repairs",
        review_topic=f"{base}.{label}.review",
        group_id=f"g-{base}-{label}",
        warehouse=f"duckdb:///{tmp_path / label}.duckdb",
        stripe_source="api",
    )
    return run_repair(request, ApiTruth(client))


def outputs(broker, discrepancies, tmp_path: Path, label: str) -> dict:
    base = discrepancies["topic"]
    with duckdb.connect(str(tmp_path / f"{label}.duckdb"), read_only=True) as con:
        cursor = con.execute("SELECT * FROM recon_repairs")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        [health] = con.execute(
            "SELECT records_in, records_out, dead_letters, dead_letters_by_reason "
            "FROM recon_health WHERE job = 'repair'"
        ).fetchall()
    repairs = {r["discrepancy_id"]: {k: v for k, v in r.items() if k not in CLOCKS} for r in rows}
    return {
        "repairs": repairs,
        "health": health,
        "records": {
            name: sorted(
                (m.key(), m.value())
                for m in consume_all(broker.bootstrap_servers, f"{base}.{label}.{name}")
            )
            for name in ("repairs", "review")
        },
    }


def dead_letters(broker, discrepancies) -> list:
    return consume_all(broker.bootstrap_servers, f"{discrepancies['topic']}.dlq")


def unanswered(proxy, objects: list[str]) -> set[str]:
    """The objects whose last request got a fault: the client gave up on them."""
    last = {}
    for r in proxy.requests:
        for oid in objects:
            if r.path.rstrip("/").endswith(oid):
                last[oid] = r
    return {oid for oid, r in last.items() if r.fault is not None}


def test_a_storm_the_retries_outlast_changes_nothing(
    broker, discrepancies, localstripe, stripe_proxy, stripe_api_key, fake_clock, tmp_path
):
    args = (broker, discrepancies, stripe_proxy, stripe_api_key, fake_clock, tmp_path)
    assert repair(*args, "calm") == 0
    calm = outputs(broker, discrepancies, tmp_path, "calm")
    assert not dead_letters(broker, discrepancies)
    before = len(stripe_proxy.requests)

    # Every kind of fault once, in a row (the first object's five attempts all fail, so it
    # is dead-lettered; the next one succeeds on its fourth), then a random share.
    stripe_proxy.inject(*STORM, path="/v1/")
    stripe_proxy.chaos(STORM_RATE, STORM, seed=19, path="/v1/")
    assert repair(*args, "storm") == 0
    storm = outputs(broker, discrepancies, tmp_path, "storm")

    requests = stripe_proxy.requests[before:]
    faults = Counter(r.fault for r in requests if r.fault)
    print(f"injected Stripe faults: {sum(faults.values())} {dict(faults)}")
    assert set(faults) == {fault.action for fault in STORM}
    gave_up = unanswered(stripe_proxy, discrepancies["objects"])
    dead = dead_letters(broker, discrepancies)
    assert {m.key().decode() for m in dead} == gave_up
    assert len(dead) == len(gave_up)
    for oid, row in storm["repairs"].items():
        if row["stripe_object_id"] in gave_up:
            assert row["action"] == "dead_lettered"
        else:
            assert row == calm["repairs"][oid]
    n = len(discrepancies["objects"])
    assert storm["health"][:3] == (n, n - len(gave_up), len(gave_up))
    answered = {
        name: [(k, v) for k, v in records if json.loads(v)["stripe_object_id"] not in gave_up]
        for name, records in calm["records"].items()
    }
    assert storm["records"] == answered  # each repair published once, as without faults
    assert Counter(row["action"] for row in calm["repairs"].values()) == {
        "repaired": 12,
        "review": 3,
    }


def test_stripe_down_past_the_retries_dead_letters_each_discrepancy_once(
    broker, discrepancies, stripe_proxy, stripe_api_key, fake_clock, tmp_path
):
    stripe_proxy.chaos(1.0, (server_error(503),), seed=3, path="/v1/")
    args = (broker, discrepancies, stripe_proxy, stripe_api_key, fake_clock, tmp_path)
    assert repair(*args, "down") == 0

    down = outputs(broker, discrepancies, tmp_path, "down")
    n = len(discrepancies["objects"])
    assert down["health"] == (n, 0, n, json.dumps({STRIPE_UNAVAILABLE: n}))
    assert {row["action"] for row in down["repairs"].values()} == {"dead_lettered"}
    assert down["records"] == {"repairs": [], "review": []}
    dead = dead_letters(broker, discrepancies)
    sent = {(m.key(), m.value()) for m in consume_all(broker.bootstrap_servers,
                                                      discrepancies["topic"])}  # fmt: skip
    assert {(m.key(), m.value()) for m in dead} == sent
    assert len(dead) == n
    reasons = {dict(m.headers())["payrecon.dlq.reason"] for m in dead}
    assert reasons == {STRIPE_UNAVAILABLE.encode()}
    # Each object was asked as often as the retry policy allows, no more.
    asked = Counter(r.path.rsplit("/", 1)[-1] for r in stripe_proxy.requests)
    assert asked == {oid: DEFAULT_RETRY.max_attempts for oid in discrepancies["objects"]}
    print(f"injected Stripe faults: {len(stripe_proxy.requests)} (503 to every request)")
