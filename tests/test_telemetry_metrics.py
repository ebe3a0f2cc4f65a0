"""What ``payrecon telemetry`` computes from decoded records: counts, metrics, request rows,
conversion, and which messages it refuses."""

from __future__ import annotations

import random
from datetime import timedelta

import polars as pl
import pyarrow as pa

from schemas.kafka_message import KAFKA_MESSAGE
from schemas.payments import PAYMENT_RESULT_V1, PAYMENT_TELEMETRY_V1
from tests.telemetry_helpers import START, Record, attempt, request_of, result, traffic
from transforms.latency_sketch import bucket_expr, quantile
from transforms.payment_decode import decode_payment_batch
from transforms.payment_request_facts import conversion_rollup, reduce_requests, request_partials
from transforms.telemetry_counts import minute_counts
from transforms.telemetry_metrics import window_metrics


def messages(records: list[Record], topic: str = "payments.telemetry") -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"topic": topic, "partition": 0, "offset": i, "timestamp": r.at, "key": r.key,
             "value": r.value}
            for i, r in enumerate(records)
        ],
        schema=KAFKA_MESSAGE,
    )  # fmt: skip


def decoded(records: list[Record], kind: str) -> pa.Table:
    schema = PAYMENT_TELEMETRY_V1 if kind == "telemetry" else PAYMENT_RESULT_V1
    batch = decode_payment_batch(messages([r for r in records if r.kind == kind]), schema, job="t")
    assert batch.dead_letters.num_rows == 0, batch.dead_letters.column("detail").to_pylist()
    return batch.events


def test_latency_percentiles_are_within_one_percent_of_the_exact_ones():
    rng = random.Random(3)
    latencies = [rng.lognormvariate(5, 1) for _ in range(20_000)]
    buckets = (
        pl.DataFrame({"ms": latencies})
        .group_by(bucket_expr(pl.col("ms")).alias("b"))
        .agg(pl.len())
        .rows()
    )
    counts = dict(buckets)
    exact = sorted(latencies)
    for q in (0.5, 0.95, 0.99):
        truth = exact[round(q * (len(exact) - 1))]
        assert abs(quantile(counts, q) - truth) <= 0.01 * truth  # type: ignore[operator]


def test_window_metrics_give_rates_as_fractions_and_revenue_in_minor_units():
    counts = {
        "attempts": 10, "http_429": 2, "reason:http_429": 2, "reason:timeout": 1,
        "latency:100": 10, "results": 4, "status:succeeded": 3, "status:failed": 1,
        "decline:card_declined": 1, "succeeded:jpy": 2, "revenue:jpy": 1500,
        "succeeded:usd": 1, "revenue:usd": 999,
    }  # fmt: skip
    metrics = {(m["metric"], m["dimension"]): m for m in window_metrics(counts)}
    assert metrics[("rate_429", "*")]["value"] == 0.2
    assert metrics[("error_rate", "*")]["value"] == 0.3
    assert metrics[("error_rate", "timeout")]["value"] == 0.1
    assert metrics[("conversion", "*")]["value"] == 0.75
    assert metrics[("decline_rate", "card_declined")]["value"] == 0.25
    assert metrics[("revenue", "jpy")] | {} == {
        "metric": "revenue", "dimension": "jpy", "value": None, "events": 2, "amount": 1500,
    }  # fmt: skip
    assert metrics[("latency_p99", "*")]["events"] == 10


def test_counts_of_a_minute_are_kept_per_gateway_and_for_all_gateways():
    rng = random.Random(2)
    request = request_of(0, rng, START)
    calls = [
        attempt(request, START + timedelta(seconds=1), 1, "retry", http_status=429,
                reason="http_429", latency_ms=10.0),
        attempt(request, START + timedelta(seconds=2), 2, "success", http_status=200,
                latency_ms=30.0),
    ]  # fmt: skip
    (everything, stripe) = sorted(minute_counts(decoded(calls, "telemetry"), "at"))
    assert everything.gateway == "*" and stripe.gateway == "stripe"
    assert everything.counts == stripe.counts
    assert stripe.counts["attempts"] == 2 and stripe.counts["http_429"] == 1
    assert stripe.counts["reason:http_429"] == 1 and stripe.counts["outcome:success"] == 1


def test_request_rows_are_the_same_whatever_batches_their_records_came_in():
    records = traffic(60, seed=11)
    whole = pa.concat_tables(
        [
            request_partials(decoded(records, "telemetry"), "telemetry"),
            request_partials(decoded(records, "results"), "results"),
        ]
    )
    once = reduce_requests(whole, "run")
    shuffled = list(records)
    random.Random(4).shuffle(shuffled)
    halves = [shuffled[:30], shuffled[30:]]
    partial_rows = [
        reduce_requests(
            pa.concat_tables(
                [request_partials(decoded(h, "telemetry"), "telemetry")]
                + ([request_partials(decoded(h, "results"), "results")]
                   if any(r.kind == "results" for r in h) else [])
            ),
            "run",
        )
        for h in halves
    ]  # fmt: skip
    merged_later = reduce_requests(
        pa.concat_tables([t.drop_columns(["day", "run_id"]) for t in partial_rows]), "run"
    )
    assert merged_later.equals(once)
    assert once.num_rows == 60


def test_a_request_takes_its_cohort_from_telemetry_and_its_outcome_from_its_result():
    rng = random.Random(5)
    request = request_of(1, rng, START)  # FR, card, mastercard
    records = [
        attempt(request, START, 1, "retry", reason="timeout", latency_ms=5000.0),
        attempt(request, START + timedelta(seconds=2), 2, "success", latency_ms=80.0),
        result(request, START + timedelta(seconds=3), "succeeded", 2),
    ]
    rows = reduce_requests(
        pa.concat_tables(
            [
                request_partials(decoded(records, "telemetry"), "telemetry"),
                request_partials(decoded(records, "results"), "results"),
            ]
        ),
        "run",
    ).to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert (row["country"], row["payment_method_type"], row["card_brand"]) == (
        "FR", "card", "mastercard",
    )  # fmt: skip
    assert (row["status"], row["calls"], row["first_call_at"]) == ("succeeded", 2, START)
    assert row["day"] == START.date()


def test_conversion_is_successes_over_attempts_per_day_and_cohort():
    facts = pa.table(
        {
            "day": [START.date()] * 4,
            "country": ["US", "US", "US", None],
            "payment_method_type": ["card"] * 4,
            "card_brand": ["visa", "visa", "visa", None],
            "status": ["succeeded", "failed", None, "dead_lettered"],
        }
    )
    rows = conversion_rollup(facts, "run").to_pylist()
    assert [(r["country"], r["card_brand"], r["attempts"], r["successes"], r["failures"],
             r["pending"], r["conversion"]) for r in rows] == [
        ("?", "?", 1, 0, 1, 0, 0.0),
        ("US", "visa", 3, 1, 1, 1, 1 / 3),
    ]  # fmt: skip


def test_invalid_payment_messages_are_dead_lettered_with_their_reason():
    good = traffic(1, seed=1)[0]
    bad_values = {
        b"not json": "not_json",
        b"[1]": "not_an_object",
        b'{"event_id": "e"}': "missing_field",
        good.value.replace(b'"kind":"attempt"', b'"kind":"other"'): "wrong_type",
        good.value.replace(b'"at":"2026', b'"at":"x2026'): "bad_timestamp",
        good.value.replace(b'"currency":"', b'"currency":"x'): "unknown_currency",
    }
    batch = [good] + [Record("telemetry", b"k", v, good.at) for v in bad_values]
    out = decode_payment_batch(messages(batch), PAYMENT_TELEMETRY_V1, job="telemetry")
    assert out.events.num_rows == 1
    assert out.dead_letters.column("reason").to_pylist() == list(bad_values.values())
    assert out.dead_letters.column("value").to_pylist() == list(bad_values)
