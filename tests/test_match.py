"""Matching the ledger with Stripe: every discrepancy kind, the window and lateness rules,
pending funds, conservation of counts, and the generator's answer key, exactly."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.synthetic import LEDGER_FILE, STRIPE_FILE, GenerateConfig, generate_day
from pipelines.synthetic.answer_key import MONEY_MOVING
from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.discrepancy import DISCREPANCY_V1
from schemas.kafka_message import KAFKA_MESSAGE
from schemas.match import RECON_COUNT_V1, RECON_MATCH_V1, RECON_TOTALS_V1
from transforms import match_rules
from transforms.decode import DECODED_LEDGER_EVENT, decode_ledger_batch
from transforms.match import (
    MatchAndClassify,
    MatchConfig,
    ReconResult,
    conservation_problems,
    reconcile,
)
from transforms.stripe_files import read_stripe_export

START = datetime(2026, 11, 20, tzinfo=UTC)
END = START + timedelta(days=1)
NOON = START + timedelta(hours=12)
DETECTED = datetime(2026, 11, 23, 7, tzinfo=UTC)
CONFIG = MatchConfig(START, END, run_id="run-1", detected_at=DETECTED)
_ids = itertools.count(1)


def t(hms: str, day: int = 20) -> datetime:
    return datetime.fromisoformat(f"2026-11-{day:02d}T{hms}+00:00")


def event(
    obj: str,
    event_type: str = "charge.succeeded",
    *,
    amount: int = 1000,
    currency: str = "usd",
    at: datetime = NOON,
    order: str = "ord_1",
    event_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict:
    n = next(_ids)
    return {
        "event_id": event_id or f"ev_{n}",
        "event_type": event_type,
        "occurred_at": at,
        "order_id": order,
        "stripe_object_id": obj,
        "payment_intent_id": None,
        "amount": amount,
        "currency": currency,
        "idempotency_key": idempotency_key or f"key_{n}",
        "kafka_topic": "ledger.transactions",
        "kafka_partition": 0,
        "kafka_offset": n,
    }


def bt(
    source: str | None,
    amount: int = 1000,
    *,
    category: str = "charge",
    currency: str = "usd",
    at: datetime = NOON,
    fee: int = 30,
    status: str = "available",
    order: str | None = "ord_1",
    txn: str | None = None,
) -> dict:
    return {
        "balance_transaction_id": txn or f"txn_{next(_ids)}",
        "source_id": source,
        "reporting_category": category,
        "amount": amount,
        "fee": fee,
        "net": amount - fee,
        "currency": currency,
        "created": at,
        "available_on": at + timedelta(days=2),
        "status": status,
        "order_id": order,
        "origin": "test.csv",
    }


def ledger(*events: dict) -> pa.Table:
    return pa.Table.from_pylist(list(events), schema=DECODED_LEDGER_EVENT)


def stripe(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=BALANCE_TRANSACTION_V1)


def run(events=(), rows=(), config: MatchConfig = CONFIG, buckets: int = 1) -> ReconResult:
    result = reconcile(ledger(*events), stripe(*rows), config, buckets=buckets)
    assert conservation_problems(result.counts, ledger(*events), stripe(*rows)) == []
    return result


def found(result: ReconResult) -> set[tuple[str, str]]:
    return {
        (d["kind"], d["order_id"] if d["kind"] == "duplicate_charge" else d["stripe_object_id"])
        for d in result.discrepancies.to_pylist()
    }


def only(result: ReconResult) -> dict:
    (row,) = result.discrepancies.to_pylist()
    return row


def outcomes(result: ReconResult, side: str) -> dict[str, int]:
    return {r["outcome"]: r["rows"] for r in result.counts.to_pylist() if r["side"] == side}


# -- matches --------------------------------------------------------------------------------


def test_charge_with_an_equal_balance_transaction_is_matched():
    result = run([event("ch_1")], [bt("ch_1")])
    assert found(result) == set()
    (match,) = result.matches.to_pylist()
    assert (match["stripe_object_id"], match["status"], match["ledger_amount"]) == (
        "ch_1",
        "matched",
        1000,
    )
    assert result.matches.schema == RECON_MATCH_V1


def test_refund_matches_the_negative_balance_transaction_by_magnitude():
    result = run(
        [event("re_1", "refund.succeeded", amount=400)], [bt("re_1", -400, category="refund")]
    )
    assert found(result) == set()
    assert result.matches.column("stripe_amount").to_pylist() == [-400]


def test_jpy_amounts_compare_without_scaling():
    result = run([event("ch_1", amount=1500, currency="jpy")], [bt("ch_1", 1500, currency="jpy")])
    assert found(result) == set() and result.matches.num_rows == 1


def test_kwd_amounts_compare_with_three_decimals():
    result = run([event("ch_1", amount=5124, currency="kwd")], [bt("ch_1", 5120, currency="kwd")])
    row = only(result)
    assert (row["kind"], row["amount_delta"], row["currency"]) == ("amount_mismatch", -4, "kwd")


def test_match_row_records_the_lag_between_stripe_and_the_ledger():
    result = run([event("ch_1", at=t("12:00:01.500"))], [bt("ch_1", at=t("11:59:59"))])
    (match,) = result.matches.to_pylist()
    assert match["lag_ms"] == 2500
    assert match["balance_transaction_id"].startswith("txn_")


def test_empty_inputs_give_empty_results():
    result = run()
    assert [getattr(result, name).num_rows for name in ReconResult._fields] == [0] * 5
    assert result.discrepancies.schema == DISCREPANCY_V1


# -- every kind -----------------------------------------------------------------------------


def test_charge_without_balance_transaction_is_missing_in_stripe():
    row = only(run([event("ch_1", amount=700)]))
    assert (row["kind"], row["stripe_object_id"], row["ledger_amount"]) == (
        "missing_in_stripe",
        "ch_1",
        700,
    )
    assert row["stripe_amount"] is None and row["amount_delta"] is None


def test_refund_without_ledger_entry_is_missing_in_ledger():
    row = only(run([], [bt("re_1", -500, category="refund", order="ord_9")]))
    assert (row["kind"], row["stripe_object_id"], row["stripe_amount"], row["order_id"]) == (
        "missing_in_ledger",
        "re_1",
        500,
        "ord_9",
    )
    assert row["ledger_amount"] is None and row["currency"] == "usd"


def test_dispute_without_ledger_entry_is_missing_in_ledger():
    result = run([], [bt("dp_1", -2000, category="dispute", fee=1500)])
    assert found(result) == {("missing_in_ledger", "dp_1")}


def test_partial_refund_recorded_as_full_is_an_amount_mismatch():
    row = only(
        run([event("re_1", "refund.succeeded", amount=1000)], [bt("re_1", -300, category="refund")])
    )
    assert (row["kind"], row["ledger_amount"], row["stripe_amount"], row["amount_delta"]) == (
        "amount_mismatch",
        1000,
        300,
        -700,
    )


def test_same_object_in_another_currency_is_a_currency_mismatch():
    row = only(run([event("ch_1", currency="usd")], [bt("ch_1", currency="eur")]))
    assert (row["kind"], row["currency"]) == ("currency_mismatch", "usd")


def test_failed_charge_that_stripe_collected_is_a_status_mismatch():
    row = only(run([event("ch_1", "charge.failed")], [bt("ch_1")]))
    assert (row["kind"], row["ledger_amount"], row["stripe_amount"]) == (
        "status_mismatch",
        1000,
        1000,
    )


def test_failed_refund_that_stripe_paid_out_is_a_status_mismatch():
    result = run([event("re_1", "refund.failed")], [bt("re_1", -1000, category="refund")])
    assert found(result) == {("status_mismatch", "re_1")}


def test_refund_the_ledger_calls_succeeded_but_stripe_reversed_is_a_status_mismatch():
    rows = [bt("re_1", -1000, category="refund"), bt("re_1", 1000, category="refund_failure")]
    result = run([event("re_1", "refund.succeeded")], rows)
    assert found(result) == {("status_mismatch", "re_1")}


def test_failed_debit_that_stripe_also_reversed_is_not_a_discrepancy():
    rows = [bt("ch_1", 1000), bt("ch_1", -1000, category="charge_failure")]
    result = run([event("ch_1", "charge.failed")], rows)
    assert found(result) == set()
    assert outcomes(result, "ledger") == {"failed": 1}
    assert outcomes(result, "stripe") == {"failed": 2}


def test_failed_charge_without_balance_transaction_is_not_a_discrepancy():
    result = run([event("ch_1", "charge.failed")])
    assert found(result) == set() and outcomes(result, "ledger") == {"failed": 1}


def test_same_object_under_two_event_ids_is_duplicate_in_ledger():
    first = event("ch_1", at=t("10:00:00"))
    again = event("ch_1", at=t("10:05:00"), idempotency_key=first["idempotency_key"])
    result = run([first, again], [bt("ch_1")])
    row = only(result)
    assert (row["kind"], row["stripe_object_id"]) == ("duplicate_in_ledger", "ch_1")
    assert outcomes(result, "ledger") == {"matched": 1, "duplicate_in_ledger": 1}


def test_a_redelivered_event_with_the_same_event_id_is_not_a_duplicate():
    once = event("ch_1")
    result = run([once, {**once, "kafka_offset": 99}], [bt("ch_1")])
    assert found(result) == set()
    assert outcomes(result, "ledger") == {"matched": 1, "redelivered": 1}


def test_dispute_lifecycle_events_on_one_dispute_are_not_duplicates():
    events = [event("dp_1", "dispute.created", amount=2000), event("dp_1", "dispute.closed")]
    result = run(events, [bt("dp_1", -2000, category="dispute")])
    assert found(result) == set()
    assert outcomes(result, "ledger") == {"matched": 1, "informational": 1}


def test_two_succeeded_charges_for_one_order_are_a_duplicate_charge():
    events = [event("ch_1", at=t("10:00:00")), event("ch_2", at=t("10:00:30"))]
    result = run(events, [bt("ch_1", at=t("10:00:00")), bt("ch_2", at=t("10:00:29"))])
    row = only(result)
    assert (row["kind"], row["order_id"], row["stripe_object_id"], row["severity"]) == (
        "duplicate_charge",
        "ord_1",
        "ch_2",
        "critical",
    )
    assert result.matches.num_rows == 2


def test_two_charges_under_one_idempotency_key_in_two_orders_are_a_duplicate_charge():
    events = [
        event("ch_1", order="ord_1", idempotency_key="k1", at=t("10:00:00")),
        event("ch_2", order="ord_2", idempotency_key="k1", at=t("10:01:00")),
    ]
    row = only(run(events, [bt("ch_1", order="ord_1"), bt("ch_2", order="ord_2")]))
    assert (row["kind"], row["order_id"], row["stripe_object_id"]) == (
        "duplicate_charge",
        "ord_2",
        "ch_2",
    )


def test_a_double_charge_only_stripe_knows_is_found_with_the_missing_charge():
    rows = [bt("ch_1", at=t("10:00:00")), bt("ch_2", at=t("10:00:40"), order="ord_1")]
    result = run([event("ch_1", at=t("10:00:01"))], rows)
    assert found(result) == {("duplicate_charge", "ord_1"), ("missing_in_ledger", "ch_2")}


def test_two_events_naming_one_charge_are_not_a_duplicate_charge():
    events = [event("ch_1", at=t("10:00:00")), event("ch_1", at=t("10:00:09"))]
    assert found(run(events, [bt("ch_1")])) == {("duplicate_in_ledger", "ch_1")}


# -- windows, margins, lateness -------------------------------------------------------------


def test_charge_at_235959_matches_balance_transaction_at_000002():
    result = run([event("ch_1", at=t("23:59:59"))], [bt("ch_1", at=t("00:00:02", day=21))])
    assert found(result) == set() and result.matches.num_rows == 1
    assert outcomes(result, "stripe") == {"margin": 1}


def test_charge_at_000001_matches_balance_transaction_created_the_day_before():
    result = run([event("ch_1", at=t("00:00:01"))], [bt("ch_1", at=t("23:59:58", day=19))])
    assert found(result) == set() and result.matches.num_rows == 1


def test_a_gap_longer_than_the_margin_is_missing_on_the_side_in_the_window():
    config = MatchConfig(START, END, "run-1", DETECTED, margin=timedelta(seconds=1))
    result = run([event("ch_1", at=t("23:59:59"))], [bt("ch_1", at=t("00:00:02", day=21))], config)
    assert found(result) == {("missing_in_stripe", "ch_1")}


def test_balance_transaction_in_the_margin_without_ledger_entry_is_left_to_its_window():
    result = run([], [bt("ch_1", at=t("00:03:00", day=21))])
    assert found(result) == set() and outcomes(result, "stripe") == {"margin": 1}


def test_a_pair_is_reported_in_its_ledger_events_window_only():
    events = [event("ch_1", amount=900, at=t("00:00:01", day=21))]
    rows = [bt("ch_1", 1000, at=t("23:59:59"))]
    today = run(events, rows)
    tomorrow = run(events, rows, MatchConfig(END, END + timedelta(days=1), "run-2", DETECTED))
    assert found(today) == set()
    assert outcomes(today, "stripe") == {"amount_mismatch": 1}
    assert found(tomorrow) == {("amount_mismatch", "ch_1")}


def test_consecutive_windows_report_every_discrepancy_exactly_once():
    events = [
        event("ch_1", order="o1", at=t("23:59:50")),  # matched across midnight
        event("ch_2", order="o2", at=t("23:58:00")),  # missing in Stripe, day 20
        event("ch_3", order="o3", amount=1, at=t("00:01:00", day=21)),  # amount, day 21
        event("ch_4", "charge.failed", order="o4", at=t("00:00:30", day=21)),
    ]
    rows = [
        bt("ch_1", order="o1", at=t("00:00:03", day=21)),
        bt("ch_3", order="o3", at=t("23:59:59")),
        bt("ch_4", order="o4", at=t("00:00:29", day=21)),
        bt("re_9", -5, category="refund", at=t("23:59:30")),  # missing in ledger, day 20
    ]
    windows = [
        MatchConfig(START + timedelta(days=d), START + timedelta(days=d + 1), f"r{d}", DETECTED)
        for d in (0, 1)
    ]
    reports = [found(run(events, rows, config)) for config in windows]
    assert reports[0] == {("missing_in_stripe", "ch_2"), ("missing_in_ledger", "re_9")}
    assert reports[1] == {("amount_mismatch", "ch_3"), ("status_mismatch", "ch_4")}


def test_records_outside_the_read_range_are_ignored_and_counted():
    result = run([event("ch_1", at=t("12:00:00", day=22))], [bt("ch_2", at=t("12:00:00", day=18))])
    assert found(result) == set()
    assert outcomes(result, "ledger") == {"outside_read_range": 1}
    assert outcomes(result, "stripe") == {"outside_read_range": 1}


# -- pending ----------------------------------------------------------------------------------


def test_a_match_whose_funds_are_not_yet_available_is_pending_not_matched():
    result = run([event("ch_1")], [bt("ch_1", status="pending")])
    assert found(result) == set() and result.matches.num_rows == 0
    (pending,) = result.pending.to_pylist()
    assert (pending["stripe_object_id"], pending["status"]) == ("ch_1", "pending")


def test_a_pending_balance_transaction_that_disagrees_is_still_a_discrepancy():
    result = run([event("ch_1", amount=999)], [bt("ch_1", status="pending")])
    assert found(result) == {("amount_mismatch", "ch_1")}


# -- scope, severity, ids, hints --------------------------------------------------------------


def test_fees_and_payouts_are_out_of_scope_not_missing_in_ledger():
    rows = [bt(None, -200, category="fee", order=None), bt("po_1", -9000, category="payout")]
    result = run([], rows)
    assert found(result) == set() and outcomes(result, "stripe") == {"out_of_scope": 2}


@pytest.mark.parametrize(
    ("events", "rows", "severity"),
    [
        ([event("ch_1")], [], "high"),
        ([], [bt("ch_1")], "high"),
        ([event("ch_1", amount=1000)], [bt("ch_1", 995)], "low"),
        ([event("ch_1", amount=1000)], [bt("ch_1", 900)], "medium"),
        ([event("ch_1", currency="eur")], [bt("ch_1")], "high"),
        ([event("ch_1", "charge.failed")], [bt("ch_1")], "high"),
        ([event("ch_1", at=t("10:00:00")), event("ch_1")], [bt("ch_1")], "medium"),
    ],
)
def test_severity_follows_the_documented_rule(events, rows, severity):
    assert only(run(events, rows))["severity"] == severity


def test_discrepancy_ids_are_the_same_on_a_rerun_with_another_run_id():
    events = [event("ch_1", amount=5, order="o1"), event("ch_2", order="o2")]
    rows = [bt("ch_1", order="o1"), bt("re_1", -1, category="refund")]
    first = run(events, rows)
    again = run(events, rows, MatchConfig(START, END, "run-2", DETECTED + timedelta(hours=1)))
    ids = first.discrepancies.column("discrepancy_id").to_pylist()
    assert ids == again.discrepancies.column("discrepancy_id").to_pylist()
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    assert again.discrepancies.column("run_id").to_pylist() == ["run-2"] * 3


def test_discrepancy_id_is_a_hash_of_kind_and_keys():
    row = only(run([event("ch_1")]))
    assert row["discrepancy_id"] == match_rules.discrepancy_id("missing_in_stripe", "ch_1|charge")


@pytest.mark.parametrize(
    ("obj", "hint"),
    [
        ("ch_1", "GET /v1/charges/ch_1?expand[]=balance_transaction"),
        ("re_1", "GET /v1/refunds/re_1?expand[]=balance_transaction"),
        ("dp_1", "GET /v1/disputes/dp_1"),
    ],
)
def test_repair_hint_names_the_stripe_object_to_fetch(obj, hint):
    assert only(run([event(obj)]))["repair_hint"] == hint


def test_discrepancies_carry_the_run_and_window():
    row = only(run([event("ch_1")]))
    assert (row["run_id"], row["window_start"], row["window_end"], row["detected_at"]) == (
        "run-1",
        START,
        END,
        DETECTED,
    )


def test_money_moving_event_types_are_the_answer_keys():
    assert match_rules.MONEY_MOVING == MONEY_MOVING


# -- counts and totals ----------------------------------------------------------------------


def test_every_row_has_exactly_one_outcome_in_rows_and_money():
    events = [
        event("ch_1"),
        event("ch_2", amount=5),
        event("ch_3", "charge.failed"),
        event("ch_4", at=t("23:59:59")),
        event("re_1", "refund.succeeded", currency="jpy", amount=300),
        event("dp_1", "dispute.closed"),
    ]
    rows = [
        bt("ch_1"),
        bt("ch_2"),
        bt("ch_4", at=t("00:00:01", day=21)),
        bt("re_1", -300, category="refund", currency="jpy", status="pending"),
        bt("re_2", -7, category="refund"),
        bt(None, -100, category="fee"),
    ]
    result = run(events, rows)
    assert result.counts.schema == RECON_COUNT_V1
    assert outcomes(result, "ledger") == {
        "matched": 2,
        "pending": 1,
        "amount_mismatch": 1,
        "failed": 1,
        "informational": 1,
    }
    assert outcomes(result, "stripe") == {
        "matched": 1,
        "pending": 1,
        "amount_mismatch": 1,
        "missing_in_ledger": 1,
        "out_of_scope": 1,
        "margin": 1,
    }


def test_totals_per_currency_on_both_sides_use_the_balance_sign():
    events = [
        event("ch_1", amount=1000),
        event("re_1", "refund.succeeded", amount=300),
        event("dp_1", "dispute.created", amount=200),
        event("ch_2", "charge.failed", amount=50),
    ]
    rows = [
        bt("ch_1", 1000, fee=59),
        bt("re_1", -300, category="refund", fee=0),
        bt("dp_1", -200, category="dispute", fee=1500),
        bt(None, -25, category="fee", fee=0),
    ]
    result = run(events, rows)
    assert result.totals.schema == RECON_TOTALS_V1
    ledger_row, stripe_row = result.totals.to_pylist()
    assert ledger_row == {
        "side": "ledger",
        "currency": "usd",
        "rows": 4,
        "charges": 1000,
        "refunds": -300,
        "disputes": -200,
        "other": 0,
        "gross": 500,
        "fee": None,
        "net": None,
    }
    assert stripe_row == {
        "side": "stripe",
        "currency": "usd",
        "rows": 4,
        "charges": 1000,
        "refunds": -300,
        "disputes": -200,
        "other": -25,
        "gross": 475,
        "fee": 1559,
        "net": -1084,
    }


@pytest.mark.parametrize("buckets", [2, 7, 16])
def test_bucketed_classification_equals_the_unbucketed_one(buckets):
    events = [event(f"ch_{i}", amount=100 + i % 3, order=f"ord_{i // 2}") for i in range(60)]
    events += [event("re_1", "refund.failed"), event("ch_5", at=t("12:30:00"))]
    rows = [bt(f"ch_{i}", 100, order=f"ord_{i // 2}") for i in range(0, 60, 3)]
    rows += [bt(f"re_{i}", -10, category="refund") for i in range(5)]
    one = run(events, rows)
    many = run(events, rows, buckets=buckets)
    for name in ReconResult._fields:
        assert getattr(one, name).equals(getattr(many, name)), name


# -- against the generator's answer key -----------------------------------------------------


class Day(NamedTuple):
    key: dict
    ledger: pa.Table
    dead_letters: pa.Table
    stripe: pa.Table
    config: MatchConfig
    result: ReconResult


def load_day(out: Path) -> Day:
    key = json.loads((out / "answer_key.json").read_text())
    lines = (out / LEDGER_FILE).read_bytes().split(b"\n")[:-1]
    n = len(lines)
    messages = pa.Table.from_pydict(
        {
            "topic": ["ledger.transactions"] * n,
            "partition": [0] * n,
            "offset": list(range(n)),
            "timestamp": [None] * n,
            "key": [None] * n,
            "value": lines,
        },
        schema=KAFKA_MESSAGE,
    )
    decoded = decode_ledger_batch(
        messages, job="test", max_payload_bytes=key["parameters"]["max_payload_bytes"]
    )
    stripe_rows = read_stripe_export(out / STRIPE_FILE, datetime.fromisoformat(key["report_as_of"]))
    config = MatchConfig(
        datetime.fromisoformat(key["window"]["start"]),
        datetime.fromisoformat(key["window"]["end"]),
        run_id=f"seed-{key['seed']}",
        detected_at=DETECTED,
    )
    result = reconcile(decoded.events, stripe_rows, config)
    return Day(key, decoded.events, decoded.dead_letters, stripe_rows, config, result)


@pytest.fixture(
    scope="module", params=[(2_000, 1), (2_000, 2), (20_000, 3)], ids=lambda p: f"{p[0]}-seed{p[1]}"
)
def day(request, tmp_path_factory) -> Day:
    events, seed = request.param
    out = tmp_path_factory.mktemp(f"day{seed}")
    generate_day(
        GenerateConfig(date(2026, 11, 20), events, 0.02, out, seed=seed, malformed_rate=0.01)
    )
    return load_day(out)


def identity(d: dict) -> tuple[str, str]:
    return d["kind"], d["order_id"] if d["kind"] == "duplicate_charge" else d["stripe_object_id"]


def test_findings_are_exactly_the_answer_keys(day):
    expected = {identity(d) for d in day.key["discrepancies"]}
    assert found(day.result) == expected
    assert day.result.discrepancies.num_rows == len(day.key["discrepancies"])
    assert {kind for kind, _ in expected} == set(match_rules.SEVERITY)


def test_amounts_and_currencies_are_the_answer_keys(day):
    fields = (
        "order_id",
        "stripe_object_id",
        "ledger_amount",
        "stripe_amount",
        "amount_delta",
        "currency",
    )
    got = {identity(d): {f: d[f] for f in fields} for d in day.result.discrepancies.to_pylist()}
    for expected in day.key["discrepancies"]:
        assert got[identity(expected)] == {f: expected[f] for f in fields}, expected


def test_lateness_edges_are_matched_across_midnight(day):
    matched = set(day.result.matches.column("event_id").to_pylist())
    matched |= set(day.result.pending.column("event_id").to_pylist())
    edges = day.key["lateness_edges"]
    assert len(edges) >= 2 and day.key["max_edge_gap_seconds"] < day.config.margin.total_seconds()
    assert {e["event_id"] for e in edges} <= matched


def test_every_generated_row_is_accounted_for(day):
    assert conservation_problems(day.result.counts, day.ledger, day.stripe) == []
    assert day.dead_letters.num_rows == day.key["totals"]["ledger"]["malformed"]
    stripe = {r["outcome"]: 0 for r in day.result.counts.to_pylist()}
    for r in day.result.counts.to_pylist():
        if r["side"] == "stripe":
            stripe[r["outcome"]] += r["rows"]
    totals = day.key["totals"]["stripe"]
    assert stripe["margin"] == totals["rows_before_window"] + totals["rows_after_window"]


def test_stripe_totals_are_the_answer_keys_window_totals(day):
    expected = day.key["totals"]["stripe"]["by_currency_in_window"]
    got = {r["currency"]: r for r in day.result.totals.to_pylist() if r["side"] == "stripe"}
    assert set(got) == set(expected)
    for currency, sums in expected.items():
        row = got[currency]
        assert (row["rows"], row["gross"], row["fee"], row["net"]) == (
            sums["rows"],
            sums["gross"],
            sums["fee"],
            sums["net"],
        )


def test_ledger_totals_are_the_answer_keys_ledger_sums(day):
    expected = day.key["totals"]["ledger"]["by_currency"]
    for row in (r for r in day.result.totals.to_pylist() if r["side"] == "ledger"):
        amounts = expected[row["currency"]]["amount_by_type"]
        assert row["rows"] == expected[row["currency"]]["events"]
        assert row["charges"] == amounts.get("charge.succeeded", 0)
        assert row["refunds"] == -amounts.get("refund.succeeded", 0)


def test_pending_funds_are_kept_apart_from_matches(day):
    pending = day.result.pending.to_pylist()
    assert pending and all(p["status"] == "pending" for p in pending)
    assert set(day.result.matches.column("status").to_pylist()) == {"matched"}


# -- Beam -------------------------------------------------------------------------------------


def _rows(table: pa.Table) -> list[tuple]:
    return [tuple(sorted(r.items())) for r in table.to_pylist()]


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=size)]


def test_beam_composite_gives_the_pure_result_and_a_rerun_the_same_ids(tmp_path):
    out = tmp_path / "day"
    generate_day(GenerateConfig(date(2026, 11, 20), 2_000, 0.02, out, seed=4))
    d = load_day(out)
    rerun = MatchConfig(d.config.window_start, d.config.window_end, "rerun", DETECTED)
    expected_ids = sorted(d.result.discrepancies.column("discrepancy_id").to_pylist())
    with TestPipeline() as p:
        inputs = {
            "ledger": p | "Ledger" >> beam.Create(_batches(d.ledger, 300)),
            "stripe": p | "Stripe" >> beam.Create(_batches(d.stripe, 700)),
        }
        first = inputs | "Classify" >> MatchAndClassify(d.config, buckets=4)
        again = inputs | "Reclassify" >> MatchAndClassify(rerun, buckets=3)
        for name in ReconResult._fields:
            got = getattr(first, name) | f"{name}Rows" >> beam.FlatMap(_rows)
            assert_that(got, equal_to(_rows(getattr(d.result, name))), label=f"same {name}")
        ids = again.discrepancies | "RerunIds" >> beam.FlatMap(
            lambda table: table.column("discrepancy_id").to_pylist()
        )
        assert_that(ids, equal_to(expected_ids), label="same ids on rerun")
    assert d.result.discrepancies.schema == DISCREPANCY_V1


def test_the_join_spilled_to_files_gives_the_pure_result(tmp_path):
    # The local runner's memory: both shuffles carry paths of spilled sub-tables.
    out = tmp_path / "day"
    generate_day(GenerateConfig(date(2026, 11, 20), 2_000, 0.02, out, seed=5))
    d = load_day(out)
    spill = tmp_path / "spill"
    with TestPipeline() as p:
        inputs = {
            # a batch delivered twice spills to the same files: both copies must count
            "ledger": p | "Ledger" >> beam.Create([*_batches(d.ledger, 500), d.ledger[:500]]),
            "stripe": p | "Stripe" >> beam.Create(_batches(d.stripe, 700)),
        }
        found = inputs | "Classify" >> MatchAndClassify(d.config, buckets=4, spill_dir=str(spill))
        twice = pa.concat_tables([d.ledger, d.ledger[:500]])
        expected = reconcile(twice, d.stripe, d.config, buckets=4)
        for name in ReconResult._fields:
            got = getattr(found, name) | f"{name}Rows" >> beam.FlatMap(_rows)
            assert_that(got, equal_to(_rows(getattr(expected, name))), label=f"same {name}")
    spilled = {path.parent.parent.name for path in spill.rglob("*.arrow")}
    assert spilled == {"ledger", "stripe", "charges"}
