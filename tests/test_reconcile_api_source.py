"""``payrecon reconcile --stripe-source api``: Stripe's side read from the API (localstripe),
the ledger from the broker, every difference named and the rest matched.

localstripe sets every fee to 0 and ``available_on`` = ``created`` (funds available at once),
stamps ``created`` in whole seconds and cannot filter by it (the client filters instead), so
the window is chosen around the objects this test creates, now.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from pipelines.reconcile import main
from tests.kafka_helpers import encode, ledger_event, millis, new_topic, produce

if TYPE_CHECKING:
    from tests.stripe_fixtures import LocalStripe

pytest_plugins = ("tests.stripe_fixtures",)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def created_at(obj: dict) -> datetime:
    return datetime.fromtimestamp(obj["created"], UTC)


@pytest.fixture
def stripe_and_ledger(broker, localstripe: LocalStripe) -> dict:
    """Charges and a refund in localstripe, and a ledger topic that records all but one charge
    (``unrecorded``) and also a charge Stripe never made (``never_made``)."""
    first = localstripe.create_charge(1500, "usd", order_id="ord_api_1")
    second = localstripe.create_charge(2599, "eur", order_id="ord_api_2")
    third = localstripe.create_charge(4200, "jpy", order_id="ord_api_3")
    unrecorded = localstripe.create_charge(999, "usd", order_id="ord_api_4")
    refund = localstripe.refund(first["id"], 500)
    objects = [first, second, third, unrecorded, refund]
    start = min(map(created_at, objects)) - timedelta(minutes=1)
    end = max(map(created_at, objects)) + timedelta(minutes=1)

    def charged(i: int, charge: dict) -> dict:
        return ledger_event(
            i,
            created_at(charge),
            order_id=charge["metadata"]["order_id"],
            stripe_object_id=charge["id"],
            amount=charge["amount"],
            currency=charge["currency"],
        )

    events = [
        charged(1, first),
        charged(2, second),
        charged(3, third),
        ledger_event(
            4,
            created_at(refund),
            event_type="refund.succeeded",
            order_id="ord_api_1",
            stripe_object_id=refund["id"],
            amount=500,
        ),
        ledger_event(5, created_at(first), order_id="ord_api_5", stripe_object_id="ch_never_made"),
    ]
    topic = new_topic(broker.bootstrap_servers, partitions=2, prefix="ledger")
    produce(
        broker.bootstrap_servers,
        topic,
        [
            (e["order_id"].encode(), encode(e), millis(datetime.fromisoformat(e["occurred_at"])))
            for e in events
        ],
    )
    return {
        "topic": topic,
        "window": (start, end),
        "matched": {first["id"], second["id"], third["id"], refund["id"]},
        "unrecorded": unrecorded["id"],
        "never_made": "ch_never_made",
    }


def reconcile_api(broker, case: dict, api_base: str, warehouse: Path) -> int:
    start, end = case["window"]
    return main(
        [
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--window-start",
            rfc3339(start),
            "--window-end",
            rfc3339(end),
            "--ledger-topic",
            case["topic"],
            "--stripe-source",
            "api",
            "--stripe-api-base",
            api_base,
            "--warehouse",
            f"duckdb:///{warehouse}",
            "--discrepancies-topic",
            f"{case['topic']}.discrepancies",
            "--group-id",
            f"g-{warehouse.name}",
            "--buckets",
            "2",
        ]
    )


def rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_api_source_names_the_unrecorded_charge_and_the_charge_stripe_never_made(
    broker, localstripe: LocalStripe, stripe_and_ledger, stripe_api_key, monkeypatch, tmp_path
):
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    warehouse = tmp_path / "w.duckdb"

    assert reconcile_api(broker, stripe_and_ledger, localstripe.url, warehouse) == 0

    found = rows(warehouse, "SELECT kind, stripe_object_id FROM recon_discrepancies")
    assert sorted(found) == [
        ("missing_in_ledger", stripe_and_ledger["unrecorded"]),
        ("missing_in_stripe", stripe_and_ledger["never_made"]),
    ]
    matched = rows(warehouse, "SELECT stripe_object_id, status, stripe_fee FROM recon_matches")
    assert sorted(matched) == sorted((o, "matched", 0) for o in stripe_and_ledger["matched"])
    [(origin, count)] = rows(
        warehouse, "SELECT origin, count(*) FROM fact_balance_transactions GROUP BY origin"
    )
    assert (origin, count) == ("api", 5)


def test_the_api_key_never_reaches_the_jobs_output_or_logs(
    broker,
    localstripe: LocalStripe,
    stripe_and_ledger,
    stripe_api_key,
    monkeypatch,
    tmp_path,
    capfd,
    caplog,
):
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    caplog.set_level(logging.DEBUG)

    assert reconcile_api(broker, stripe_and_ledger, localstripe.url, tmp_path / "w.duckdb") == 0

    out, err = capfd.readouterr()
    assert "run rcn_" in out  # the summary was printed
    assert stripe_api_key not in out + err
    assert stripe_api_key not in caplog.text
