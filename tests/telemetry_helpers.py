"""Synthetic gateway traffic for the ``payrecon telemetry`` tests.

Records are encoded with the gateway's own encoders (``transforms.payment_records``), so the
tests read exactly what ``payrecon gateway`` publishes.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from pipelines.telemetry import main as telemetry
from tests.kafka_helpers import new_topic, produce
from transforms.cohort_conversion import COHORT, COUNT_SCHEMA
from transforms.gateways.base import GatewayResult
from transforms.payment_records import TelemetryEvent, result_record
from transforms.payment_requests import PaymentRequest
from transforms.warehouse.duckdb_sink import DuckDBWarehouse

START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
COHORTS = [("US", "card", "visa"), ("FR", "card", "mastercard"), ("JP", "konbini", None)]
# The tables two runs over the same messages must agree on, by (order, filter). A cohort that
# a later batch empties keeps a row of zeros (loads only upsert), as when a request's result
# came before its telemetry: compare the cohorts that have requests.
TABLES = {
    "telemetry_minutely": ("window_start, window_end, gateway, metric, dimension", "TRUE"),
    "fact_payment_requests": ("request_id", "TRUE"),
    "payment_conversion": ("day, country, payment_method_type, card_brand", "attempts > 0"),
}


@dataclass(frozen=True)
class Record:
    """One message to produce: ``kind`` is ``telemetry``, ``results`` or ``stripe_events``."""

    kind: str
    key: bytes
    value: bytes
    at: datetime

    @property
    def timestamp_ms(self) -> int:
        return int(self.at.timestamp() * 1000)


def request_of(i: int, rng: random.Random, at: datetime) -> PaymentRequest:
    country, method, brand = COHORTS[i % len(COHORTS)]
    return PaymentRequest(
        request_id=str(uuid.UUID(int=rng.getrandbits(128))),
        order_id=f"ord_{i}",
        amount=500 + 25 * (i % 40),
        currency="jpy" if country == "JP" else "eur" if country == "FR" else "usd",
        payment_method_type=method,
        created_at_micros=int(at.timestamp() * 1_000_000),
        country=country,
        card_brand=brand,
    )


def attempt(request: PaymentRequest, at: datetime, n: int, outcome: str, **fields) -> Record:
    event = TelemetryEvent.attempt_of(
        request,
        outcome=outcome,
        consumer_id="gw-1",
        concurrency=8,
        gateway="stripe",
        attempt=n,
        at=at,
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{request.request_id}/{n}")),
        **fields,
    )
    key, value = event.record()
    return Record("telemetry", key, value, at)


def result(request: PaymentRequest, at: datetime, status: str, calls: int, **fields) -> Record:
    key, value = result_record(
        request,
        GatewayResult(status=status, payment_intent_id=f"pi_{request.order_id}", **fields),
        gateway="stripe",
        attempts=calls,
        processed_at=at,
    )
    return Record("results", key, value, at)


def traffic(
    requests: int, *, seed: int = 7, start: datetime = START, seconds: float = 600
) -> list[Record]:
    """Calls and results of ``requests`` payments over ``seconds`` (ten minutes): some retried
    after a 429 or a timeout, most succeeding, some declined, some waiting for the customer,
    some dead-lettered; latencies between 20 ms and 2 s."""
    rng = random.Random(seed)
    records: list[Record] = []
    for i in range(requests):
        at = start + timedelta(seconds=rng.uniform(0, seconds))
        request = request_of(i, rng, at)
        calls = 1
        if rng.random() < 0.15:
            reason, status = rng.choice([("http_429", 429), ("timeout", None)])
            records.append(
                attempt(request, at, 1, "retry", latency_ms=rng.uniform(20, 2000),
                        http_status=status, reason=reason, backoff_ms=200.0)
            )  # fmt: skip
            at += timedelta(milliseconds=400)
            calls = 2
        if rng.random() < 0.03:
            records.append(
                attempt(request, at, calls, "permanent", latency_ms=35.0, http_status=400,
                        reason="http_400", error_code="resource_missing")
            )  # fmt: skip
            continue
        latency = rng.uniform(20, 2000)
        done = at + timedelta(milliseconds=latency)
        roll = rng.random()
        if roll < 0.8:
            records.append(attempt(request, at, calls, "success", latency_ms=latency,
                                   http_status=200))  # fmt: skip
            records.append(result(request, done, "succeeded", calls, charge_id=f"ch_{i}"))
        elif roll < 0.92:
            records.append(attempt(request, at, calls, "success", latency_ms=latency,
                                   http_status=402, error_code="card_declined"))  # fmt: skip
            records.append(result(request, done, "failed", calls, error_code="card_declined"))
        else:
            records.append(attempt(request, at, calls, "success", latency_ms=latency,
                                   http_status=200))  # fmt: skip
            records.append(result(request, done, "requires_action", calls))
    return records


def storm_429(requests: int, *, seed: int, start: datetime, seconds: int = 300) -> list[Record]:
    """A 429 storm: ``requests`` payments over ``seconds`` whose first call is answered 429
    and whose retry succeeds (half of all calls are 429s)."""
    rng = random.Random(seed)
    records: list[Record] = []
    for i in range(requests):
        at = start + timedelta(seconds=rng.uniform(0, seconds))
        request = request_of(10_000 + i, rng, at)
        records.append(
            attempt(request, at, 1, "retry", latency_ms=rng.uniform(20, 200), http_status=429,
                    reason="http_429", backoff_ms=500.0)
        )  # fmt: skip
        retry_at = at + timedelta(milliseconds=600)
        records.append(attempt(request, retry_at, 2, "success", latency_ms=300.0,
                               http_status=200))  # fmt: skip
        done = retry_at + timedelta(milliseconds=300)
        records.append(result(request, done, "succeeded", 2, charge_id=f"ch_s{i}"))
    return records


def declines(requests: int, *, seed: int, start: datetime, cohort: int, seconds: int = 600):
    """``requests`` payments of one cohort (``COHORTS[cohort]``) over ``seconds``, every one
    declined on its first call: the cohort's issuer or network refusing cards."""
    rng = random.Random(seed)
    records: list[Record] = []
    for i in range(requests):
        at = start + timedelta(seconds=rng.uniform(0, seconds))
        request = request_of(len(COHORTS) * (7_000 + i) + cohort, rng, at)
        done = at + timedelta(milliseconds=300)
        records.append(attempt(request, at, 1, "success", latency_ms=300.0, http_status=402,
                               error_code="card_declined"))  # fmt: skip
        records.append(result(request, done, "failed", 1, error_code="card_declined"))
    return records


MONDAY = datetime(2026, 11, 16, tzinfo=UTC)
# Cohort traffic as minute counts (``transforms.cohort_conversion.COUNT_SCHEMA``), for the
# cohort test over weeks, where generating every request would be slow. (country, payment
# method, card brand): decided requests a minute at the daily peak, and conversion. The last
# cohort is tiny: a request every two minutes or so.
COHORT_TRAFFIC = {
    ("US", "card", "visa"): (40.0, 0.86),
    ("US", "card", "mastercard"): (20.0, 0.84),
    ("FR", "card", "visa"): (12.0, 0.80),
    ("JP", "konbini", "?"): (6.0, 0.72),
    ("DE", "sepa_debit", "?"): (15.0, 0.92),
    ("BR", "card", "elo"): (0.5, 0.95),
}
US_VISA, BR_ELO = ("US", "card", "visa"), ("BR", "card", "elo")
Incident = dict[tuple[str, str, str], tuple[int, float]]


def cohort_minutes(start: datetime, count: int, *, seed: int, incident: Incident | None = None):
    """Decided requests and successes per cohort and minute: volume follows the day (a
    quarter of the peak at night), conversion drifts two points with the hour and dips one
    point at weekends; ``incident[cohort] = (minute, conversion)`` sets the cohort's
    conversion from that minute on."""
    rng = np.random.default_rng(seed)
    minutes = [start + timedelta(minutes=i) for i in range(count)]
    phase = np.array([2 * math.pi * (m.hour * 60 + m.minute) / 1440 for m in minutes])
    weekend = np.array([m.weekday() >= 5 for m in minutes])
    frames = []
    for cohort, (peak, conversion) in COHORT_TRAFFIC.items():
        rate = peak * (0.625 - 0.375 * np.cos(phase))
        p = conversion + 0.02 * np.sin(phase) - 0.01 * weekend
        if incident and cohort in incident:
            first, bad = incident[cohort]
            p = np.where(np.arange(count) >= first, bad, p)
        decided = rng.poisson(rate)
        frames.append(
            pl.DataFrame(
                {"minute": minutes, "decided": decided, "successes": rng.binomial(decided, p)}
            ).with_columns(pl.lit(v).alias(c) for v, c in zip(cohort, COHORT, strict=True))
        )
    counts = pl.concat(frames).select(list(COUNT_SCHEMA)).cast(COUNT_SCHEMA)  # type: ignore[arg-type]
    return counts.filter(pl.col("decided") > 0)


class Topics:
    """Fresh telemetry, results, Stripe events and alerts topics; publish records, run the
    job on them."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.telemetry = new_topic(bootstrap, partitions=2, prefix="tel")
        self.results = new_topic(bootstrap, partitions=2, prefix="res")
        self.stripe_events = new_topic(bootstrap, partitions=1, prefix="evt")
        self.alerts = new_topic(bootstrap, partitions=1, prefix="alerts")

    def publish(self, records: list[Record]) -> None:
        kinds = (("telemetry", self.telemetry), ("results", self.results),
                 ("stripe_events", self.stripe_events))  # fmt: skip
        for kind, topic in kinds:
            rows = [(r.key, r.value, r.timestamp_ms) for r in records if r.kind == kind]
            if rows:
                produce(self.bootstrap, topic, rows)

    def run(self, warehouse, group: str, *flags: str) -> int:
        """One micro-batch of ``group``; it measures the lag of ``group`` only unless
        ``flags`` say otherwise (the session's broker holds every other test's groups)."""
        return telemetry([
            "--bootstrap-servers", self.bootstrap, "--telemetry-topic", self.telemetry,
            "--results-topic", self.results, "--stripe-events-topic", self.stripe_events,
            "--alerts-topic", self.alerts, "--group-id", group,
            "--warehouse", f"duckdb:///{warehouse}", "--lag-groups", group, *flags,
        ])  # fmt: skip


def table(path, name: str, order: str, where: str = "TRUE") -> list[dict]:
    """The rows of a DuckDB warehouse's table, without the run that wrote them."""
    with DuckDBWarehouse(path) as w:
        sql = f"SELECT * EXCLUDE (run_id) FROM {name} WHERE {where} ORDER BY {order}"
        return w.query_arrow(sql).to_pylist()
