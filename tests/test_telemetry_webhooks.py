"""``payrecon telemetry`` reads ``stripe.events``: webhooks per minute and type, and coverage."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.kafka_helpers import consume_all
from tests.telemetry_helpers import START, Record, Topics, traffic
from tests.test_telemetry_job import table
from tests.webhook_helpers import body_of, dispute_created, payment_intent_succeeded
from transforms.warehouse.duckdb_sink import DuckDBWarehouse

DROPPED_FROM = START + timedelta(minutes=5)


def webhooks_of(records: list[Record], *, dropped_from=DROPPED_FROM) -> list[Record]:
    """A ``payment_intent.succeeded`` event per succeeded payment, created when its result
    was decided, except for the payments decided from ``dropped_from`` on (never delivered)."""
    events = []
    for r in records:
        if r.kind != "results" or r.at >= dropped_from:
            continue
        paid = json.loads(r.value)
        if paid["status"] != "succeeded":
            continue
        event = payment_intent_succeeded(paid["order_id"], created=int(r.at.timestamp()))
        events.append(Record("stripe_events", event["id"].encode(), body_of(event), r.at))
    return events


def test_webhook_coverage_falls_to_zero_in_the_minutes_whose_webhooks_were_dropped(
    broker, tmp_path
):
    topics = Topics(broker.bootstrap_servers)
    records = traffic(300, seed=11)
    dispute = dispute_created(created=int(START.timestamp()) + 30)
    events = [
        *webhooks_of(records),
        Record("stripe_events", dispute["id"].encode(), body_of(dispute), START),
        Record("stripe_events", b"evt_bad", b'{"object": "event"}', START),
    ]
    topics.publish(records + events)
    assert topics.run(tmp_path / "w.duckdb", "webhooks") == 0

    minute_coverage = "metric = 'webhook_coverage' AND gateway = '*' AND window_seconds = 60"
    coverage = table(tmp_path / "w.duckdb", "telemetry_minutely", "window_start", minute_coverage)
    before = [r["value"] for r in coverage if r["window_start"] < DROPPED_FROM]
    after = [r["value"] for r in coverage if r["window_start"] >= DROPPED_FROM]
    assert before and after
    assert set(before) == {1.0} and set(after) == {0.0}
    counted = table(tmp_path / "w.duckdb", "telemetry_minutely", "dimension",
                    "metric = 'webhook_events' AND gateway = 'stripe' AND window_seconds = 3600 "
                    f"AND window_start = TIMESTAMP '{START:%Y-%m-%d %H:%M:%S}+00:00'")  # fmt: skip
    assert {r["dimension"]: r["value"] for r in counted} == {
        "*": len(events) - 1,
        "payment_intent.succeeded": len(events) - 2,
        "charge.dispute.created": 1,
    }

    with DuckDBWarehouse(tmp_path / "w.duckdb") as w:
        (health,) = w.query_arrow("SELECT * FROM recon_health WHERE job = 'telemetry'").to_pylist()
    assert health["records_in"] == len(records) + len(events)
    assert health["records_out"] + health["dead_letters"] == health["records_in"]
    assert health["dead_letters_by_reason"] == '{"missing_field": 1}'
    (dead,) = consume_all(broker.bootstrap_servers, f"{topics.stripe_events}.dlq")
    assert dead.value() == b'{"object": "event"}'
