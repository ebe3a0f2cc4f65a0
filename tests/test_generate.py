"""``payrecon generate``: a realistic day whose answer key says exactly what is wrong in it."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pytest

from pipelines import generate
from pipelines.synthetic import (
    ANSWER_KEY_FILE,
    LEDGER_FILE,
    STRIPE_COLUMNS,
    STRIPE_FILE,
    GenerateConfig,
    generate_day,
)
from pipelines.synthetic import day as day_module
from pipelines.synthetic.answer_key import MONEY_MOVING
from pipelines.synthetic.chunk import chunk_rng, planner_rng
from pipelines.synthetic.day import MAX_CHUNKS
from pipelines.synthetic.ids import Tokens
from pipelines.synthetic.writers import event_json
from schemas.currencies import to_minor_units
from schemas.dead_letter import DECODE_REASONS, Reason
from schemas.discrepancy import KINDS
from schemas.kafka_message import KAFKA_MESSAGE
from transforms.decode import decode_ledger_batch
from transforms.ledger_validation import check_event

DAY = date(2026, 11, 20)
WINDOW_START = datetime(2026, 11, 20, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 21, tzinfo=UTC)


class Day(NamedTuple):
    out: Path
    key: dict
    lines: list[bytes]  # ledger.jsonl, without newlines
    events: list[dict]  # the valid lines, parsed
    rows: list[dict]  # the Stripe CSV


def load(out: Path) -> Day:
    lines = (out / LEDGER_FILE).read_bytes().split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    key = json.loads((out / ANSWER_KEY_FILE).read_text())
    bad = {m["line"] for m in key["malformed"]}
    events = [json.loads(line) for n, line in enumerate(lines, 1) if n not in bad]
    with (out / STRIPE_FILE).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return Day(out, key, lines, events, rows)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    out = tmp_path_factory.mktemp("day")
    generate_day(GenerateConfig(DAY, 3_000, 0.02, out, seed=7, malformed_rate=0.01))
    return load(out)


def minor(row: dict, column: str = "gross") -> int:
    return to_minor_units(row[column], row["currency"])


def rows_by_source(day: Day) -> dict[str, list[dict]]:
    by_source = defaultdict(list)
    for row in day.rows:
        by_source[row["source_id"]].append(row)
    return by_source


def created(row: dict) -> datetime:
    return datetime.strptime(row["created_utc"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def injected_objects(day: Day) -> set[str]:
    return {o for d in day.key["discrepancies"] for o in d["stripe_object_ids"]}


def files_digest(out: Path) -> str:
    digest = hashlib.sha256()
    for name in (LEDGER_FILE, STRIPE_FILE, ANSWER_KEY_FILE):
        digest.update((out / name).read_bytes())
    return digest.hexdigest()


# -- amounts: minor units in the ledger, exact major units in the export ----------------------


def _matched_pairs(day: Day, currency: str) -> list[tuple[dict, dict]]:
    by_source, injected = rows_by_source(day), injected_objects(day)
    return [
        (event, by_source[event["stripe_object_id"]][0])
        for event in day.events
        if event["currency"] == currency
        and event["event_type"] in MONEY_MOVING
        and event["stripe_object_id"] not in injected
    ]


@pytest.mark.parametrize("currency", ["usd", "jpy", "kwd"])
def test_export_gross_is_the_ledger_amount_converted_exactly(day, currency):
    pairs = _matched_pairs(day, currency)
    assert len(pairs) > 10
    for event, row in pairs:
        assert row["currency"] == currency
        assert abs(minor(row)) == event["amount"]


def test_jpy_amounts_are_exported_without_decimals(day):
    jpy = [r for r in day.rows if r["currency"] == "jpy"]
    assert jpy
    for row in jpy:
        for column in ("gross", "fee", "net", "customer_facing_amount"):
            assert re.fullmatch(r"-?\d+", row[column]), row


def test_kwd_amounts_are_exported_with_three_decimals(day):
    kwd = [r for r in day.rows if r["currency"] == "kwd"]
    assert kwd
    for row in kwd:
        assert re.fullmatch(r"-?\d+\.\d{3}", row["gross"]), row
    assert any(not r["gross"].endswith("0") for r in kwd), "some use the third decimal"


def test_usd_amounts_are_exported_with_two_decimals(day):
    for row in (r for r in day.rows if r["currency"] == "usd"):
        assert re.fullmatch(r"-?\d+\.\d{2}", row["gross"]), row


def test_net_is_gross_minus_fee_exactly(day):
    for row in day.rows:
        assert Decimal(row["net"]) == Decimal(row["gross"]) - Decimal(row["fee"])


def test_card_fees_follow_stripe_list_prices(day):
    usd_cards = [
        r
        for r in day.rows
        if r["currency"] == "usd"
        and r["payment_method_type"] == "card"
        and r["reporting_category"] == "charge"
    ]
    assert usd_cards
    for row in usd_cards:
        gross = minor(row)
        assert minor(row, "fee") == min((gross * 290 + 5_000) // 10_000 + 30, gross)


def test_refunds_and_disputes_take_money_out_of_the_balance(day):
    for row in day.rows:
        if row["reporting_category"] in ("refund", "dispute"):
            assert minor(row) < 0
        else:
            assert minor(row) > 0


# -- shapes of the records ---------------------------------------------------------------------


def test_export_has_the_itemized_report_columns(day):
    header = (day.out / STRIPE_FILE).read_text().split("\n", 1)[0]
    assert tuple(header.split(",")) == STRIPE_COLUMNS
    assert {
        "balance_transaction_id",
        "created_utc",
        "available_on_utc",
        "gross",
        "fee",
        "net",
        "reporting_category",
        "source_id",
    } <= set(STRIPE_COLUMNS)
    assert all(None not in row and len(row) == len(STRIPE_COLUMNS) for row in day.rows)


def test_ledger_lines_are_compact_json_as_the_json_module_writes_it(day):
    bad = {m["line"] for m in day.key["malformed"]}
    good = [line for n, line in enumerate(day.lines, 1) if n not in bad]
    for line, event in zip(good, day.events, strict=True):
        assert event_json(event).encode() == line
        assert json.dumps(event, separators=(",", ":")).encode() == line


def test_every_valid_line_passes_the_ledger_contract(day):
    for event in day.events:
        assert isinstance(check_event(event), int), event


def test_occurred_at_is_rfc3339_utc_with_milliseconds_inside_the_day(day):
    for event in day.events:
        text = event["occurred_at"]
        assert re.fullmatch(r"2026-11-20T\d{2}:\d{2}:\d{2}\.\d{3}Z", text)
        moment = datetime.fromisoformat(text)
        assert WINDOW_START <= moment < WINDOW_END


def test_ledger_is_in_time_order(day):
    times = [e["occurred_at"] for e in day.events]
    assert times == sorted(times)


def test_export_is_in_created_order(day):
    times = [r["created_utc"] for r in day.rows]
    assert times == sorted(times)


def test_events_follow_a_daily_cycle(day):
    hours = Counter(int(e["occurred_at"][11:13]) for e in day.events)
    assert hours[17] > 2 * hours[5]


def test_stripe_ids_look_like_stripes(day):
    patterns = {
        "stripe_object_id": r"(ch_3|re_3|dp_1)[0-9A-Za-z]{23}",
        "payment_intent_id": r"pi_3[0-9A-Za-z]{23}",
        "customer_id": r"cus_[0-9A-Za-z]{14}",
        "order_id": r"ord_[0-9A-HJKMNP-TV-Z]{26}",
        "idempotency_key": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    }
    for event in day.events:
        for name, pattern in patterns.items():
            if event[name] is not None:
                assert re.fullmatch(pattern, event[name]), (name, event[name])
    for row in day.rows:
        assert re.fullmatch(r"txn_3[0-9A-Za-z]{23}", row["balance_transaction_id"])


def test_no_chunk_draws_the_planners_event_ids_or_idempotency_keys():
    """numpy seeds [s] and [s, 0] are one stream: chunk 0 once repeated the planner's
    UUIDs, and large days had event ids naming two different events."""
    planner = Tokens(planner_rng(7))
    drawn = {planner.uuid4() for _ in range(5_000)}
    for index in range(MAX_CHUNKS):
        chunk = Tokens(chunk_rng(7, index))
        assert drawn.isdisjoint(chunk.uuid4() for _ in range(5_000)), index


def test_ids_are_unique(day):
    assert len({e["event_id"] for e in day.events}) == len(day.events)
    assert len({r["balance_transaction_id"] for r in day.rows}) == len(day.rows)


def test_the_day_mixes_currencies_methods_and_event_types(day):
    assert {e["currency"] for e in day.events} >= {"usd", "eur", "gbp", "jpy", "kwd"}
    methods = {e["payment_method_type"] for e in day.events}
    assert methods >= {"card", "sepa_debit", "ideal", "konbini"}
    types = Counter(e["event_type"] for e in day.events)
    assert types["charge.succeeded"] > types["charge.failed"] > 0
    assert types["refund.succeeded"] > 0 and types["dispute.created"] > 0


def test_failed_charges_have_no_balance_transaction(day):
    by_source, injected = rows_by_source(day), injected_objects(day)
    failed = [e for e in day.events if e["event_type"] == "charge.failed"]
    assert failed
    for event in failed:
        if event["stripe_object_id"] not in injected:
            assert event["stripe_object_id"] not in by_source


def test_declined_orders_are_retried_on_the_same_payment_intent(day):
    failed = {e["payment_intent_id"] for e in day.events if e["event_type"] == "charge.failed"}
    retried = [
        e
        for e in day.events
        if e["event_type"] == "charge.succeeded" and e["payment_intent_id"] in failed
    ]
    assert retried


# -- lateness edges and pending funds ---------------------------------------------------------


def test_charges_at_23_59_5x_have_transactions_created_just_after_midnight(day):
    late = [e for e in day.key["lateness_edges"] if e["side"] == "after_window"]
    assert len(late) >= 3
    by_id = {r["balance_transaction_id"]: r for r in day.rows}
    for edge in late:
        assert edge["occurred_at"].startswith("2026-11-20T23:59:5")
        row = by_id[edge["balance_transaction_id"]]
        assert row["source_id"] == edge["stripe_object_id"]
        assert "2026-11-21 00:00:00" < row["created_utc"] <= "2026-11-21 00:00:05"


def test_charges_just_after_midnight_have_transactions_created_the_day_before(day):
    early = [e for e in day.key["lateness_edges"] if e["side"] == "before_window"]
    assert early
    by_id = {r["balance_transaction_id"]: r for r in day.rows}
    for edge in early:
        assert by_id[edge["balance_transaction_id"]]["created_utc"].startswith("2026-11-19 23:59")


def test_some_funds_are_not_yet_available_when_the_report_was_run(day):
    as_of = day.key["report_as_of"].replace("T", " ")[:19]
    pending = [r for r in day.rows if r["available_on_utc"] > as_of]
    assert 0 < len(pending) < len(day.rows)
    assert len(pending) == day.key["totals"]["stripe"]["rows_pending"]


# -- injected discrepancies --------------------------------------------------------------------


def test_every_discrepancy_kind_is_injected(day):
    kinds = Counter(d["kind"] for d in day.key["discrepancies"])
    assert set(kinds) == set(KINDS)
    assert sum(kinds.values()) == round(0.02 * 3_000)
    assert max(kinds.values()) - min(kinds.values()) <= 1


def test_a_hundred_events_still_get_one_discrepancy_of_each_kind(tmp_path):
    generate_day(GenerateConfig(DAY, 100, 0.01, tmp_path, seed=3))
    key = json.loads((tmp_path / ANSWER_KEY_FILE).read_text())
    assert sorted(d["kind"] for d in key["discrepancies"]) == sorted(KINDS)


def test_zero_rate_injects_nothing(tmp_path):
    generate_day(GenerateConfig(DAY, 500, 0.0, tmp_path, seed=3))
    key = json.loads((tmp_path / ANSWER_KEY_FILE).read_text())
    assert key["discrepancies"] == []
    assert key["totals"]["discrepancies"]["total"] == 0


def _of_kind(day: Day, kind: str) -> list[dict]:
    found = [d for d in day.key["discrepancies"] if d["kind"] == kind]
    assert found
    return found


def _events_naming(day: Day, object_id: str) -> list[dict]:
    return [e for e in day.events if e["stripe_object_id"] == object_id]


def test_missing_in_stripe_objects_are_in_the_ledger_but_not_the_export(day):
    by_source = rows_by_source(day)
    for d in _of_kind(day, "missing_in_stripe"):
        assert [e["event_id"] for e in _events_naming(day, d["stripe_object_id"])] == d["event_ids"]
        assert d["stripe_object_id"] not in by_source
        assert d["ledger_amount"] > 0 and d["stripe_amount"] is None


def test_missing_in_ledger_objects_are_in_the_export_but_not_the_ledger(day):
    by_source = rows_by_source(day)
    categories = set()
    for d in _of_kind(day, "missing_in_ledger"):
        assert _events_naming(day, d["stripe_object_id"]) == []
        (row,) = by_source[d["stripe_object_id"]]
        assert row["payment_metadata[order_id]"] == d["order_id"]
        assert abs(minor(row)) == d["stripe_amount"] and d["ledger_amount"] is None
        assert WINDOW_START <= created(row) < WINDOW_END
        categories.add(row["reporting_category"])
    assert len(categories) > 1


def test_amount_mismatches_differ_in_amount_only(day):
    by_source = rows_by_source(day)
    for d in _of_kind(day, "amount_mismatch"):
        (event,) = _events_naming(day, d["stripe_object_id"])
        (row,) = by_source[d["stripe_object_id"]]
        assert event["currency"] == row["currency"] == d["currency"]
        assert event["amount"] == d["ledger_amount"]
        assert abs(minor(row)) == d["stripe_amount"] != d["ledger_amount"]
        assert d["amount_delta"] == d["stripe_amount"] - d["ledger_amount"]


def test_currency_mismatches_differ_in_currency_only(day):
    by_source = rows_by_source(day)
    for d in _of_kind(day, "currency_mismatch"):
        (event,) = _events_naming(day, d["stripe_object_id"])
        (row,) = by_source[d["stripe_object_id"]]
        assert event["currency"] == d["ledger_currency"] != row["currency"]
        assert row["currency"] == d["stripe_currency"]
        assert event["amount"] == abs(minor(row))


def test_status_mismatches_failed_in_the_ledger_but_moved_money_in_stripe(day):
    by_source = rows_by_source(day)
    for d in _of_kind(day, "status_mismatch"):
        (event,) = _events_naming(day, d["stripe_object_id"])
        assert event["event_type"].endswith(".failed")
        (row,) = by_source[d["stripe_object_id"]]
        assert abs(minor(row)) == event["amount"] == d["stripe_amount"]


def test_duplicate_in_ledger_objects_are_named_by_two_events(day):
    by_source = rows_by_source(day)
    for d in _of_kind(day, "duplicate_in_ledger"):
        events = _events_naming(day, d["stripe_object_id"])
        assert [e["event_id"] for e in events] == d["event_ids"] and len(events) == 2
        assert len(by_source[d["stripe_object_id"]]) == 1


def test_duplicate_charges_are_two_succeeded_charges_for_one_order(day):
    by_source = rows_by_source(day)
    for d in _of_kind(day, "duplicate_charge"):
        charges = {
            e["stripe_object_id"]
            for e in day.events
            if e["order_id"] == d["order_id"] and e["event_type"] == "charge.succeeded"
        }
        assert charges == set(d["stripe_object_ids"]) and len(charges) == 2
        assert all(len(by_source[c]) == 1 for c in charges)


def _reference_findings(day: Day) -> set[tuple[str, str]]:
    """An independent, literal reading of DESIGN.md's kinds over the generated files."""
    by_source = rows_by_source(day)
    names: dict[str, set[str]] = defaultdict(set)
    charges_per_order: dict[str, set[str]] = defaultdict(set)
    for event in day.events:
        names[event["stripe_object_id"]].add(event["event_id"])
        if event["event_type"] == "charge.succeeded":
            charges_per_order[event["order_id"]].add(event["stripe_object_id"])
    found = {("duplicate_in_ledger", o) for o, ids in names.items() if len(ids) > 1}
    found |= {("duplicate_charge", order) for order, c in charges_per_order.items() if len(c) > 1}
    for event in day.events:
        rows, obj = by_source.get(event["stripe_object_id"], []), event["stripe_object_id"]
        moved = event["event_type"] in MONEY_MOVING
        if moved and not rows:
            found.add(("missing_in_stripe", obj))
        elif not moved and rows:
            found.add(("status_mismatch", obj))
        elif rows and rows[0]["currency"] != event["currency"]:
            found.add(("currency_mismatch", obj))
        elif rows and abs(minor(rows[0])) != event["amount"]:
            found.add(("amount_mismatch", obj))
    for source, rows in by_source.items():
        if source not in names and WINDOW_START <= created(rows[0]) < WINDOW_END:
            found.add(("missing_in_ledger", source))
    return found


def test_answer_key_lists_exactly_the_discrepancies_in_the_files(day):
    expected = {
        (d["kind"], d["order_id"] if d["kind"] == "duplicate_charge" else d["stripe_object_id"])
        for d in day.key["discrepancies"]
    }
    assert _reference_findings(day) == expected
    assert len(expected) == len(day.key["discrepancies"])


def test_answer_key_points_at_the_ledger_lines_of_each_discrepancy(day):
    for d in day.key["discrepancies"]:
        for line, event_id in zip(d["ledger_lines"], d["event_ids"], strict=True):
            assert json.loads(day.lines[line - 1])["event_id"] == event_id


# -- malformed lines ---------------------------------------------------------------------------


def _decode_all(day: Day) -> tuple[pa.Table, pa.Table]:
    n = len(day.lines)
    messages = pa.Table.from_pydict(
        {
            "topic": ["ledger.transactions"] * n,
            "partition": [0] * n,
            "offset": list(range(n)),
            "timestamp": [WINDOW_START] * n,
            "key": [None] * n,
            "value": day.lines,
        },
        schema=KAFKA_MESSAGE,
    )
    decoded = decode_ledger_batch(
        messages, job="test", max_payload_bytes=day.key["parameters"]["max_payload_bytes"]
    )
    return decoded.events, decoded.dead_letters


def test_malformed_lines_are_dead_lettered_with_the_reason_the_key_gives(day):
    events, dead = _decode_all(day)
    got = {
        off + 1: reason
        for off, reason in zip(
            dead.column("offset").to_pylist(), dead.column("reason").to_pylist(), strict=True
        )
    }
    assert got == {m["line"]: m["reason"] for m in day.key["malformed"]}
    assert events.num_rows == day.key["totals"]["ledger"]["events"] == 3_000


def test_every_dead_letter_reason_is_generated(day):
    assert {m["reason"] for m in day.key["malformed"]} == {r.value for r in DECODE_REASONS}
    assert len(day.key["malformed"]) == round(0.01 * 3_000)


def test_one_malformed_line_is_just_over_the_payload_limit(day):
    limit = day.key["parameters"]["max_payload_bytes"]
    (big,) = [m for m in day.key["malformed"] if m["reason"] == Reason.PAYLOAD_TOO_LARGE]
    size = len(day.lines[big["line"] - 1])
    assert limit < size < limit + 4096
    assert max(len(line) for line in day.lines) == size


# -- totals and determinism --------------------------------------------------------------------


def test_totals_match_the_files(day):
    totals = day.key["totals"]
    assert totals["ledger"]["lines"] == len(day.lines)
    assert totals["stripe"]["rows"] == len(day.rows)
    for currency, sums in totals["stripe"]["by_currency"].items():
        rows = [r for r in day.rows if r["currency"] == currency]
        assert sums["rows"] == len(rows)
        assert sums["gross"] == sum(minor(r) for r in rows)
        assert sums["net"] == sum(minor(r, "net") for r in rows)
        assert to_minor_units(sums["gross_major"], currency) == sums["gross"]
    for currency, sums in totals["ledger"]["by_currency"].items():
        for kind, amount in sums["amount_by_type"].items():
            assert amount == sum(
                e["amount"]
                for e in day.events
                if e["currency"] == currency and e["event_type"] == kind
            )


def test_same_seed_gives_identical_files(tmp_path):
    config = GenerateConfig(DAY, 1_000, 0.02, tmp_path / "a", seed=11, malformed_rate=0.01)
    generate_day(config)
    generate_day(GenerateConfig(DAY, 1_000, 0.02, tmp_path / "b", seed=11, malformed_rate=0.01))
    assert files_digest(tmp_path / "a") == files_digest(tmp_path / "b")


def test_another_seed_gives_another_day(tmp_path):
    generate_day(GenerateConfig(DAY, 1_000, 0.02, tmp_path / "a", seed=11))
    generate_day(GenerateConfig(DAY, 1_000, 0.02, tmp_path / "b", seed=12))
    assert files_digest(tmp_path / "a") != files_digest(tmp_path / "b")


def test_parallel_workers_write_the_same_files_as_one(tmp_path, monkeypatch):
    monkeypatch.setattr(day_module, "CHUNK_EVENTS", 600)  # 3 chunks instead of 1
    for workers, name in ((1, "serial"), (2, "parallel")):
        config = GenerateConfig(DAY, 1_800, 0.02, tmp_path / name, seed=5, malformed_rate=0.01)
        generate_day(config, workers=workers)
    assert files_digest(tmp_path / "serial") == files_digest(tmp_path / "parallel")
    assert load(tmp_path / "parallel").key["totals"]["ledger"]["events"] == 1_800
    assert not list((tmp_path / "parallel").glob(".*part*"))


# -- command line ------------------------------------------------------------------------------


def test_command_writes_the_three_files(tmp_path, capsys):
    code = generate.main(
        [
            "--date",
            "2026-11-20",
            "--events",
            "300",
            "--discrepancy-rate",
            "0.05",
            "--out",
            str(tmp_path),
            "--seed",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    assert {p.name for p in tmp_path.iterdir()} == {LEDGER_FILE, STRIPE_FILE, ANSWER_KEY_FILE}
    assert "300 ledger events" in capsys.readouterr().out


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--date",
        "--events",
        "--discrepancy-rate",
        "--out",
        "--seed",
        "--malformed-rate",
        "--max-payload",
        "--workers",
        "--quiet",
    ):
        assert flag in text


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--events", "-5", "negative"),
        ("--discrepancy-rate", "1.5", "outside [0, 1]"),
        ("--malformed-rate", "-0.1", "outside [0, 1]"),
        ("--date", "2026-13-01", "not a date"),
    ],
)
def test_bad_flag_exits_2_with_one_line_naming_it(tmp_path, capsys, flag, value, says):
    args = {"--date": "2026-11-20", "--out": str(tmp_path), flag: value}
    with pytest.raises(SystemExit) as exit_info:
        generate.main([item for pair in args.items() for item in pair])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and says in err


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        generate.main(["--date", "2026-11-20", "--out", str(blocker / "day")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
