"""``payrecon reconcile`` end to end: real broker, generated day, DuckDB warehouse."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from pipelines.publish import publish_lines
from pipelines.synthetic.day import GenerateConfig, generate_day
from tests.kafka_helpers import consume_all, new_topic
from tests.payout_fixtures import payouts_report, settled_report
from tests.reconcile_helpers import published_day, reconcile_day

WINDOW = ["--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z"]
TABLES = (
    "recon_discrepancies",
    "recon_matches",
    "fact_ledger_events",
    "fact_balance_transactions",
    "daily_revenue",
    "discrepancy_aging",
    "dq_results",
)


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory):
    """A generated day with every discrepancy kind and malformed lines, published once."""
    return published_day(
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("day"),
        events=3000,
        seed=11,
        discrepancy_rate=0.02,
        malformed_rate=0.005,
    )


class Nowhere:
    """A broker address nothing listens on."""

    bootstrap_servers = "127.0.0.1:1"


def reconcile(broker, day, warehouse: Path, *extra: str) -> int:
    return reconcile_day(broker.bootstrap_servers, day, warehouse, *extra)


def rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    return {t: sorted(rows(warehouse, f"SELECT * FROM {t}"), key=repr) for t in TABLES}


def finding_key(d: dict) -> tuple:
    return (d["kind"], d["order_id"] if d["kind"] == "duplicate_charge" else d["stripe_object_id"])


def test_reconcile_reports_exactly_the_answer_key(broker, day, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert reconcile(broker, day, warehouse) == 0
    found = rows(warehouse, "SELECT kind, order_id, stripe_object_id FROM recon_discrepancies")
    got = {finding_key({"kind": k, "order_id": o, "stripe_object_id": s}) for k, o, s in found}
    expected = {finding_key(d) for d in day["key"]["discrepancies"]}
    assert len(found) == len(day["key"]["discrepancies"])
    assert got == expected


def test_run_counts_add_up_and_dead_letters_match_the_answer_key(broker, day, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert reconcile(broker, day, warehouse) == 0
    [(messages_in, events_out, dead, by_reason, dq_failures, status)] = rows(
        warehouse,
        "SELECT messages_in, events_out, dead_letters, dead_letters_by_reason, "
        "dq_failures, status FROM recon_runs",
    )
    assert messages_in == events_out + dead
    assert json.loads(by_reason) == day["key"]["totals"]["malformed_by_reason"]
    assert (dq_failures, status) == (0, "succeeded")


def test_a_run_leaves_its_health_row_with_counts_that_add_up(broker, day, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert reconcile(broker, day, warehouse) == 0
    health = """SELECT job, status, exit_code, error, records_in, records_out, dead_letters,
        quarantined, counts_conserved, duration_ms > 0, freshness_s, offsets IS NOT NULL
        FROM recon_health"""
    [first] = rows(warehouse, health)
    job, status, code, error, records_in, records_out, dead, set_aside, conserved = first[:9]
    assert (job, status, code, error, conserved) == ("reconcile", "succeeded", 0, None, True)
    assert records_in == records_out + dead + set_aside
    assert dead == sum(day["key"]["totals"]["malformed_by_reason"].values())
    expected_freshness = (datetime.now(UTC) - datetime(2026, 11, 21, tzinfo=UTC)).total_seconds()
    assert first[9] is True and first[11] is True
    assert abs(first[10] - expected_freshness) < 600
    assert reconcile(broker, day, warehouse) == 0
    assert rows(warehouse, "SELECT count(*) FROM recon_health") == [(1,)]


def test_rerunning_the_window_changes_no_table_and_publishes_no_new_id(broker, day, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    assert reconcile(broker, day, warehouse) == 0
    first = snapshot(warehouse)
    ids = {r[0] for r in rows(warehouse, "SELECT discrepancy_id FROM recon_discrepancies")}
    assert reconcile(broker, day, warehouse) == 0
    second = snapshot(warehouse)
    for table in TABLES:
        assert second[table] == first[table], table
    assert rows(warehouse, "SELECT count(*) FROM recon_runs") == [(1,)]
    assert rows(warehouse, "SELECT sum(open_discrepancies) FROM discrepancy_aging") == [(len(ids),)]
    # daily_revenue (summed batch by batch, the rerun's rows replacing the first run's) is
    # the day's facts added up, each balance transaction once
    facts = rows(
        warehouse,
        "SELECT CAST(created AS DATE) AS day, currency, count(*), sum(amount) FILTER "
        "(reporting_category = 'charge'), sum(fee), sum(net) FROM fact_balance_transactions "
        "WHERE day = DATE '2026-11-20' GROUP BY ALL ORDER BY ALL",
    )
    assert (
        facts
        and rows(
            warehouse,
            "SELECT day, currency, transactions, gross, fees, net FROM daily_revenue ORDER BY ALL",
        )
        == facts
    )
    published = consume_all(broker.bootstrap_servers, f"{day['topic']}.discrepancies")
    assert {m.key().decode() for m in published} == ids


def test_more_discrepancies_than_allowed_exits_1(broker, day, tmp_path):
    assert reconcile(broker, day, tmp_path / "w.duckdb", "--max-discrepancies", "3") == 1


def test_a_successful_run_leaves_no_staged_files_behind(broker, day, tmp_path):
    assert reconcile(broker, day, tmp_path / "w.duckdb") == 0
    assert not any((tmp_path / "w.duckdb.staging").glob("*/*/*.parquet"))


def test_missing_stripe_export_is_a_usage_error(broker, day, tmp_path, capsys):
    day = day | {"stripe": str(tmp_path / "nope.csv")}
    assert reconcile(broker, day, tmp_path / "w.duckdb") == 2
    assert "nope.csv" in capsys.readouterr().err


def test_unreachable_broker_exits_3_with_one_line_and_no_librdkafka_log(day, tmp_path, capfd):
    """Besides its ``==>`` progress lines, the job says one line: the reason. capfd, not
    capsys: librdkafka would write its own log (``%3|...|FAIL|...``, one line per
    reconnection attempt) straight to file descriptor 2, burying that reason."""
    assert reconcile(Nowhere, day, tmp_path / "w.duckdb", "--broker-timeout", "2") == 3
    said = [line for line in capfd.readouterr().err.splitlines() if not line.startswith("==> ")]
    assert len(said) == 1, said[:3]
    assert said[0].startswith("payrecon reconcile: ") and "broker" in said[0], said


def test_debug_logging_shows_librdkafka_s_view_of_the_unreachable_broker(day, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="payrecon.librdkafka")
    assert reconcile(Nowhere, day, tmp_path / "w.duckdb", "--broker-timeout", "2") == 3
    failures = [r for r in caplog.records if "FAIL" in r.message and "127.0.0.1:1" in r.message]
    assert failures, [r.message for r in caplog.records][:5]
    assert {(r.name, r.levelno) for r in failures} == {("payrecon.librdkafka", logging.DEBUG)}
    assert failures[0].message.startswith("ERROR FAIL "), failures[0].message


def test_a_quarantined_event_is_shown_and_still_accounted_for(broker, tmp_path, capsys):
    summary = generate_day(
        GenerateConfig(
            day=date(2026, 11, 20), events=300, discrepancy_rate=0.0, out=tmp_path, seed=5
        )
    )
    implausible = {
        "event_id": "evt_huge",
        "event_type": "charge.succeeded",
        "occurred_at": "2026-11-20T12:00:00Z",
        "order_id": "ord_huge",
        "stripe_object_id": "ch_huge",
        "payment_intent_id": None,
        "amount": 5 * 10**12,
        "currency": "usd",
        "idempotency_key": None,
    }
    lines = [*summary.ledger_path.read_bytes().splitlines(), json.dumps(implausible).encode()]
    topic = new_topic(broker.bootstrap_servers, partitions=2, prefix="ledger")
    assert publish_lines(broker.bootstrap_servers, topic, lines, partitions=2).ok
    key = json.loads(summary.answer_key_path.read_text())
    day = {
        "topic": topic,
        "stripe": str(summary.stripe_path),
        "key": key,
        "as_of": key["report_as_of"],
    }
    warehouse = tmp_path / "w.duckdb"
    assert reconcile(broker, day, warehouse) == 0
    assert "ledger events quarantined by data quality: 1" in capsys.readouterr().out
    assert rows(warehouse, "SELECT count(*) FROM recon_discrepancies") == [(0,)]
    assert rows(
        warehouse, "SELECT count(*) FROM fact_ledger_events WHERE event_id = 'evt_huge'"
    ) == [(0,)]


def test_a_payout_short_of_its_transactions_net_is_reported(broker, tmp_path, capsys):
    official = json.loads(Path("/work/shared/reference/stripe/fixtures3.json").read_text())
    official = official["resources"]
    paid_at = int(datetime(2026, 11, 20, 18, tzinfo=UTC).timestamp())
    official["balance_transaction"] |= {"created": paid_at - 3600, "available_on": paid_at}
    official["payout"] |= {"arrival_date": paid_at}
    summary = generate_day(
        GenerateConfig(
            day=date(2026, 11, 20), events=200, discrepancy_rate=0.0, out=tmp_path, seed=6
        )
    )
    settled_report(tmp_path, official)
    payouts_report(tmp_path, official["payout"], amount=1000)  # its transactions net 1,100
    topic = new_topic(broker.bootstrap_servers, partitions=2, prefix="ledger")
    with summary.ledger_path.open("rb") as lines:
        assert publish_lines(broker.bootstrap_servers, topic, lines, partitions=2).ok
    key = json.loads(summary.answer_key_path.read_text())
    day = {"topic": topic, "stripe": f"{tmp_path}/*.csv", "key": key, "as_of": key["report_as_of"]}
    warehouse = tmp_path / "w.duckdb"
    assert reconcile(broker, day, warehouse) == 0
    out = capsys.readouterr().out
    assert "payouts not equal to the net of their transactions: 1" in out
    assert rows(
        warehouse,
        "SELECT expectation, success FROM dq_results WHERE suite = 'payout_totals' "
        "AND expectation = 'expect_column_pair_values_to_be_equal'",
    ) == [("expect_column_pair_values_to_be_equal", False)]
