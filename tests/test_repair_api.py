"""``payrecon repair`` asking the Stripe API (localstripe) what is true about an object."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import duckdb

from pipelines.repair import main as repair
from tests.kafka_helpers import consume_all, new_topic, produce

if TYPE_CHECKING:
    from tests.stripe_fixtures import LocalStripe

pytest_plugins = ("tests.stripe_fixtures",)


def sql(tmp_path, query: str) -> list[tuple]:
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def discrepancy(kind: str, object_id: str, **fields) -> bytes:
    return json.dumps(
        {
            "discrepancy_id": f"d-{kind}-{object_id}",
            "run_id": "rcn_test",
            "kind": kind,
            "severity": "high",
            "stripe_object_id": object_id,
            "order_id": fields.get("order_id"),
            "ledger_amount": fields.get("ledger_amount"),
            "stripe_amount": fields.get("stripe_amount"),
            "currency": fields.get("currency"),
        }
    ).encode()


def run(broker, base: str, tmp_path, localstripe: LocalStripe, monkeypatch, key: str) -> int:
    monkeypatch.setenv("STRIPE_API_KEY", key)
    return repair(
        [
            "--bootstrap-servers", broker.bootstrap_servers,
            "--discrepancies-topic", base, "--repairs-topic", f"{base}.repairs",
            "--review-topic", f"{base}.review", "--group-id", f"g-{base}",
            "--stripe-source", "api", "--stripe-api-base", localstripe.url,
            "--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}",
        ]
    )  # fmt: skip


def test_a_charge_missing_in_the_ledger_is_repaired_from_the_api(
    broker, tmp_path, localstripe, monkeypatch, stripe_api_key
):
    charge = localstripe.create_charge(4200, "jpy", order_id="ord_api_1")
    base = new_topic(broker.bootstrap_servers, partitions=1, prefix="recon.discrepancies")
    now_ms = int(time.time() * 1000)
    produce(broker.bootstrap_servers, base,
            [(b"k", discrepancy("missing_in_ledger", charge["id"]), now_ms)])  # fmt: skip

    assert run(broker, base, tmp_path, localstripe, monkeypatch, stripe_api_key) == 0

    [event] = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers,
                                                          f"{base}.repairs")]  # fmt: skip
    assert (event["event_type"], event["amount"], event["currency"]) == (
        "charge.succeeded",
        4200,
        "jpy",
    )
    assert (event["stripe_object_id"], event["order_id"]) == (charge["id"], "ord_api_1")
    assert event["metadata"] == {"payrecon.repair_of": f"d-missing_in_ledger-{charge['id']}"}


def test_an_object_stripe_does_not_know_goes_to_review(
    broker, tmp_path, localstripe, monkeypatch, stripe_api_key
):
    base = new_topic(broker.bootstrap_servers, partitions=1, prefix="recon.discrepancies")
    now_ms = int(time.time() * 1000)
    produce(broker.bootstrap_servers, base,
            [(b"k", discrepancy("amount_mismatch", "ch_unknown_to_stripe"), now_ms)])  # fmt: skip

    assert run(broker, base, tmp_path, localstripe, monkeypatch, stripe_api_key) == 0

    assert sql(tmp_path, "SELECT action, repair_event_ids FROM recon_repairs") == [("review", "[]")]
    [review] = [json.loads(m.value()) for m in consume_all(broker.bootstrap_servers,
                                                           f"{base}.review")]  # fmt: skip
    assert review["reason"] == "Stripe has no object ch_unknown_to_stripe"
