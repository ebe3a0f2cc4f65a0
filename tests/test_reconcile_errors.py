"""How ``payrecon reconcile`` ends when a run cannot finish: the exit code a scheduler acts on
and one line saying why, never a traceback for a failure that is not a bug.

DESIGN.md's exit codes: 1 the job ran and its results must not be trusted as they are (a
data-quality suite configured to fail the run failed), 2 bad usage or configuration (a Stripe
key that Stripe refuses), 3 a dependency stayed unavailable after the retries (Stripe).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from pipelines.reconcile import main
from tests.reconcile_helpers import published_day, reconcile_day
from tests.stripe_proxy import server_error
from transforms import quality_suites
from transforms.stripe_api import DEFAULT_RETRY

if TYPE_CHECKING:
    from tests.stripe_fixtures import LocalStripe
    from tests.stripe_proxy import StripeProxy

pytest_plugins = ("tests.stripe_fixtures",)

DAY_WINDOW = ["--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z"]
BT_PATH = "/v1/balance_transactions"


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory):
    """A small generated day with discrepancies, published once."""
    return published_day(
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("day"),
        events=300,
        seed=3,
        discrepancy_rate=0.05,
        partitions=2,
    )


def reconcile(broker, day, warehouse: Path, *extra: str) -> int:
    return reconcile_day(broker.bootstrap_servers, day, warehouse, *extra, buckets=2)


def the_reason(capfd, caplog) -> tuple[str, str]:
    """The command's one line on stderr (and all of stderr); fails if a traceback was
    printed or logged."""
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks
    [line] = [x for x in err.splitlines() if x.startswith("payrecon reconcile:")]
    return line, err


def committed_nothing(broker, day, group: str) -> bool:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        committed = consumer.committed(
            [TopicPartition(day["topic"], p) for p in range(2)], timeout=10
        )
    finally:
        consumer.close()
    return all(tp.offset < 0 for tp in committed)


@pytest.fixture
def discrepancy_kinds_disallowed(tmp_path, monkeypatch):
    """The shipped suites, with the discrepancies suite (on_failure: fail) allowing no kind,
    so any discrepancy fails it."""
    suites = tmp_path / "expectations"
    shutil.copytree(quality_suites.EXPECTATIONS_DIR, suites, ignore=shutil.ignore_patterns("*.py"))
    path = suites / "discrepancies.json"
    document = json.loads(path.read_text())
    for expectation in document["expectations"]:
        if expectation["type"] == "expect_column_values_to_be_in_set" and (
            expectation["kwargs"]["column"] == "kind"
        ):
            expectation["kwargs"]["value_set"] = ["no_such_kind"]
    assert document["meta"]["payrecon"]["on_failure"] == "fail"
    path.write_text(json.dumps(document))
    monkeypatch.setattr(quality_suites, "EXPECTATIONS_DIR", suites)


def test_a_failing_data_quality_suite_exits_1_with_one_line_naming_it(
    broker, day, tmp_path, capfd, caplog, discrepancy_kinds_disallowed
):
    warehouse = tmp_path / "w.duckdb"

    assert reconcile(broker, day, warehouse) == 1

    line, _ = the_reason(capfd, caplog)
    assert "'discrepancies'" in line
    assert "expect_column_values_to_be_in_set(kind)" in line
    assert committed_nothing(broker, day, f"g-{warehouse.name}")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        # No result table: only the run's health row, saying why it stopped.
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        assert tables == [("recon_health",)]
        [(status, code, error)] = con.execute(
            "SELECT status, exit_code, error FROM recon_health"
        ).fetchall()
    assert (status, code) == ("data_quality_failed", 1)
    assert "expect_column_values_to_be_in_set(kind)" in error


def api_reconcile(broker, day, warehouse: Path, api_base: str) -> int:
    """The generated day's window with Stripe's side from the API at ``api_base`` (which
    holds nothing of that day: these runs fail at the first request anyway)."""
    return main(
        [
            "--bootstrap-servers",
            broker.bootstrap_servers,
            *DAY_WINDOW,
            "--ledger-topic",
            day["topic"],
            "--stripe-source",
            "api",
            "--stripe-api-base",
            api_base,
            "--warehouse",
            f"duckdb:///{warehouse}",
            "--discrepancies-topic",
            f"{day['topic']}.discrepancies",
            "--group-id",
            f"g-{warehouse.name}",
            "--buckets",
            "2",
        ]
    )


def test_stripe_unavailable_after_the_retries_exits_3_with_one_line(
    broker,
    day,
    tmp_path,
    capfd,
    caplog,
    monkeypatch,
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
):
    monkeypatch.setenv("STRIPE_API_KEY", stripe_api_key)
    stripe_proxy.inject(*[server_error(503)] * 10, path=BT_PATH)
    warehouse = tmp_path / "w.duckdb"

    assert api_reconcile(broker, day, warehouse, stripe_proxy.url) == 3

    line, err = the_reason(capfd, caplog)
    assert "Stripe" in line and "503" in line and "gave up after" in line
    assert len(stripe_proxy.requests_to(BT_PATH)) == DEFAULT_RETRY.max_attempts
    assert stripe_api_key not in err
    assert committed_nothing(broker, day, f"g-{warehouse.name}")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        [(status, code, error, run_id)] = con.execute(
            "SELECT status, exit_code, error, run_id FROM recon_health"
        ).fetchall()
    assert (status, code, run_id.startswith("rcn_20261120T000000Z_")) == ("failed", 3, True)
    assert "503" in error and stripe_api_key not in error


def test_a_key_stripe_refuses_exits_2_with_one_line(
    broker, day, tmp_path, capfd, caplog, monkeypatch, localstripe: LocalStripe
):
    bad_key = "not_a_stripe_key_4d1f0c2b9e"  # localstripe answers 401 to keys without sk_
    monkeypatch.setenv("STRIPE_API_KEY", bad_key)
    warehouse = tmp_path / "w.duckdb"

    assert api_reconcile(broker, day, warehouse, localstripe.url) == 2

    line, err = the_reason(capfd, caplog)
    assert "401" in line
    assert bad_key not in err


def test_api_source_without_a_key_is_a_usage_error(broker, day, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert api_reconcile(broker, day, tmp_path / "w.duckdb", "http://127.0.0.1:1") == 2
    assert "$STRIPE_API_KEY" in capsys.readouterr().err
