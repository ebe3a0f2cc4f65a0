"""``payrecon repair``: every repairable discrepancy healed, the rest handed to humans.

A generated day with every discrepancy kind is reconciled, repaired from Stripe's export
(the generated day's objects exist only there), and reconciled again: what is left must be
exactly the kinds a machine must not fix (money the ledger claims that Stripe never moved,
and double charges to refund), with the counts adding up at every step.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from pipelines.repair import main as repair
from tests.kafka_helpers import consume_all, produce
from tests.reconcile_helpers import published_day, reconcile_day

UNREPAIRABLE = {"missing_in_stripe", "duplicate_charge"}


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory):
    return published_day(
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("repair-day"),
        events=2500,
        seed=23,
        discrepancy_rate=0.03,
    )


def topics(day: dict) -> dict[str, str]:
    base = day["topic"]
    return {
        "discrepancies": f"{base}.discrepancies",
        "repairs": f"{base}.repairs",
        "review": f"{base}.review",
    }


def run_reconcile(broker, day, warehouse: Path) -> int:
    return reconcile_day(broker.bootstrap_servers, day, warehouse)


def repair_argv(broker, day, warehouse: Path, group: str) -> list[str]:
    t = topics(day)
    return [
        "--bootstrap-servers", broker.bootstrap_servers,
        "--discrepancies-topic", t["discrepancies"], "--repairs-topic", t["repairs"],
        "--review-topic", t["review"], "--group-id", group,
        "--stripe-source", day["stripe"], "--as-of", day["as_of"],
        "--warehouse", f"duckdb:///{warehouse}",
    ]  # fmt: skip


def sql(warehouse: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(query).fetchall()


def latest_run_kinds(warehouse: Path) -> Counter:
    rows = sql(
        warehouse,
        "SELECT d.kind FROM recon_discrepancies d JOIN recon_runs r ON d.run_id = r.run_id "
        "WHERE r.finished_at = (SELECT max(finished_at) FROM recon_runs)",
    )
    return Counter(kind for (kind,) in rows)


@pytest.fixture(scope="module")
def healed(broker, day, tmp_path_factory):
    """Reconcile, repair, reconcile again; returns what each step saw."""
    warehouse = tmp_path_factory.mktemp("repair-wh") / "w.duckdb"
    assert run_reconcile(broker, day, warehouse) == 0
    before = latest_run_kinds(warehouse)
    assert repair(repair_argv(broker, day, warehouse, "repair-1")) == 0
    assert run_reconcile(broker, day, warehouse) == 0
    return {"warehouse": warehouse, "before": before, "after": latest_run_kinds(warehouse)}


def test_a_following_reconcile_reports_only_what_cannot_be_repaired(day, healed):
    expected = Counter(d["kind"] for d in day["key"]["discrepancies"])
    assert healed["before"] == expected
    assert healed["after"] == {k: n for k, n in expected.items() if k in UNREPAIRABLE}


def test_every_discrepancy_is_repaired_or_sent_for_review_and_the_counts_add_up(
    broker, day, healed
):
    actions = sql(
        healed["warehouse"], "SELECT kind, action, count(*) FROM recon_repairs GROUP BY ALL"
    )
    by_kind: dict[str, dict[str, int]] = {}
    for kind, action, n in actions:
        by_kind.setdefault(kind, {})[action] = n
    expected = Counter(d["kind"] for d in day["key"]["discrepancies"])
    for kind, n in expected.items():
        assert by_kind[kind] == {("review" if kind in UNREPAIRABLE else "repaired"): n}, kind
    reviews = consume_all(broker.bootstrap_servers, topics(day)["review"])
    assert len(reviews) == sum(n for k, n in expected.items() if k in UNREPAIRABLE)
    [(records_in, records_out, dead)] = sql(
        healed["warehouse"],
        "SELECT records_in, records_out, dead_letters FROM recon_health WHERE job = 'repair'",
    )
    assert records_in == records_out + dead == sum(expected.values())


def test_a_double_charge_review_names_every_charge_of_the_order(broker, day, healed):
    reviews = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers,
                                                          topics(day)["review"])]  # fmt: skip
    doubles = [r for r in reviews if r["kind"] == "duplicate_charge"]
    assert doubles
    for review in doubles:
        charges = json.loads(review["stripe_objects"])
        assert len({c["object_id"] for c in charges}) >= 2
        assert {c["order_id"] for c in charges} == {review["order_id"]}


def test_repairing_again_publishes_the_same_events_and_changes_nothing(
    broker, day, healed, tmp_path
):
    first = {m.value() for m in consume_all(broker.bootstrap_servers, topics(day)["repairs"])}
    # A new consumer group reads every discrepancy again, as after a crash before the commit.
    assert repair(repair_argv(broker, day, tmp_path / "w2.duckdb", "repair-2")) == 0
    again = consume_all(broker.bootstrap_servers, topics(day)["repairs"])
    assert {m.value() for m in again} == first
    assert run_reconcile(broker, day, healed["warehouse"]) == 0
    assert latest_run_kinds(healed["warehouse"]) == healed["after"]


def test_a_rerun_of_the_same_group_reads_only_what_came_since(
    broker, day, healed, tmp_path, capsys
):
    # Each reconcile since republished the discrepancies it still found (the same ids).
    assert repair(repair_argv(broker, day, tmp_path / "w3.duckdb", "repair-1")) == 0
    capsys.readouterr()
    assert repair(repair_argv(broker, day, tmp_path / "w3.duckdb", "repair-1")) == 0
    assert "discrepancy messages          0" in capsys.readouterr().out


def test_an_unreadable_discrepancy_is_dead_lettered_with_its_bytes(broker, day, tmp_path):
    t = topics(day)
    now_ms = int(time.time() * 1000)
    produce(broker.bootstrap_servers, t["discrepancies"], [(b"k", b"{not json", now_ms)])
    assert repair(repair_argv(broker, day, tmp_path / "w4.duckdb", "repair-1")) == 0
    dead = consume_all(broker.bootstrap_servers, f"{t['discrepancies']}.dlq")
    assert [m.value() for m in dead] == [b"{not json"]
    assert dict(dead[0].headers())["payrecon.dlq.reason"] == b"not_json"
