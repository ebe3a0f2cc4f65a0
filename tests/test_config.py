"""``payrecon.yaml``: ``payrecon config check`` names every problem, ``show`` masks secrets,
and the command lines built from it never carry a secret into logs or tables."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from pipelines import gateway, reconcile
from pipelines.config import load_config
from pipelines.config_cmd import main as config_main
from pipelines.config_jobs import reconcile_argv
from tests.kafka_helpers import DAY, ledger_event
from tests.reconcile_helpers import published_day
from tests.test_decode import messages
from transforms.alert_governor import GovernorSettings
from transforms.decode import decode_ledger_batch
from transforms.ledger_mapping import LedgerFieldMap, map_ledger_event

EXAMPLE = Path(__file__).resolve().parent.parent / "payrecon.example.yaml"
STRIPE_KEY = "sk_test_payreconSECRETstripe4242"
SNOWFLAKE_PASSWORD = "pw-payrecon-SECRET-snowflake-77"

# (file content, the line `check` must print for it)
BROKEN = {
    "unknown_section": ("brokers: {}\n", "brokers: unknown key; allowed: broker, topics,"),
    "unknown_key": (
        "topics: {ledgr: x}\n",
        "topics.ledgr: unknown key; allowed: ledger, repairs,",
    ),
    "zero_buckets": (
        "reconcile: {buckets: 0}\n",
        "reconcile.buckets: got 0; allowed: a number >= 1",
    ),
    "negative_threshold": (
        "reconcile: {max_discrepancies: -1}\n",
        "reconcile.max_discrepancies: got -1; allowed: a number >= 0",
    ),
    "bad_margin": (
        "reconcile: {lateness_margin: ten minutes}\n",
        "reconcile.lateness_margin: got 'ten minutes'; allowed: a duration such as 30s",
    ),
    "window_not_dividing_a_day": (
        "reconcile: {window: 7h}\n",
        "reconcile.window: got '7h'; allowed: a window that divides a day",
    ),
    "unknown_warehouse": (
        "reconcile: {warehouse: 'postgres://db/x'}\n",
        "reconcile.warehouse: got 'postgres://db/x'; allowed: duckdb:///path.duckdb,",
    ),
    "password_in_warehouse_url": (
        "reconcile: {warehouse: 'snowflake://u:hunter2@acct/db/s'}\n",
        "reconcile.warehouse: got 'snowflake://u:***@acct/db/s'; allowed: a URL without",
    ),
    "kafka_password_in_file": (
        "broker: {kafka_config: {sasl.password: hunter2}}\n",
        "broker.kafka_config.sasl.password: got '***'; allowed: non-secret librdkafka",
    ),
    "unknown_runner": (
        "runner: {name: SparkRunner}\n",
        "runner.name: got 'SparkRunner'; allowed: one of 'DirectRunner',",
    ),
    "zero_telemetry_interval": (
        "telemetry: {interval: 0m}\n",
        "telemetry.interval: got '0m'; allowed: a duration such as 1m, 5m or 15m",
    ),
    "zero_alert_cooldown": (
        "gateway: {alert_cooldown: 0s}\n",
        "gateway.alert_cooldown: got '0s'; allowed: a duration such as 1m, 5m or 15m",
    ),
    "alert_backoff_below_one": (
        "gateway: {alert_max_backoff: 0.5}\n",
        "gateway.alert_max_backoff: got 0.5; allowed: a number >= 1",
    ),
    "bad_start_date": (
        "schedule: {start_date: yesterday}\n",
        "schedule.start_date: got 'yesterday'; allowed: a date such as 2026-11-20",
    ),
    "mapping_to_unknown_field": (
        "ledger_mapping: {fields: {ts: occured_at}}\n",
        "ledger_mapping.fields.ts: got 'occured_at'; allowed: a v1 field (event_id,",
    ),
    "two_sources_for_one_field": (
        "ledger_mapping: {fields: {id: event_id, uid: event_id}}\n",
        "ledger_mapping.fields: got ['id', 'uid'] for 'event_id'; allowed: one source",
    ),
    "not_a_mapping": ("- a\n- b\n", "got list; allowed: a mapping of sections"),
    "not_yaml": ("reconcile: [1\n", "line 2, column 1: not valid YAML"),
}


def check(path: Path, capsys) -> tuple[int, list[str]]:
    code = config_main(["check", str(path)])
    return code, capsys.readouterr().err.splitlines()


def test_the_example_config_is_valid(capsys):
    assert config_main(["check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == f"{EXAMPLE}: valid\n"


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_config_check_names_the_key_the_value_and_what_is_allowed(case, tmp_path, capsys):
    content, expected = BROKEN[case]
    path = tmp_path / "payrecon.yaml"
    path.write_text(content)

    code, lines = check(path, capsys)

    assert code == 2
    assert any(line.startswith(f"{path}: {expected}") for line in lines), lines
    assert lines[-1] == f"payrecon config check: 1 problem(s) in {path}"
    assert "hunter2" not in "\n".join(lines)


def test_config_check_reports_every_problem_one_line_each(tmp_path, capsys):
    path = tmp_path / "payrecon.yaml"
    path.write_text("reconcile: {buckets: 0, window: 7h}\nrunner: {name: X}\n")

    code, lines = check(path, capsys)

    assert code == 2
    assert len(lines) == 4  # three problems and the count
    assert [line.split(": ")[1] for line in lines[:3]] == [
        "reconcile.window",
        "reconcile.buckets",
        "runner.name",
    ]


def test_config_show_masks_the_secrets_in_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("STRIPE_API_KEY", STRIPE_KEY)
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", SNOWFLAKE_PASSWORD)
    monkeypatch.delenv("SNOWFLAKE_TOKEN", raising=False)

    assert config_main(["show", str(EXAMPLE)]) == 0

    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert shown["environment"]["STRIPE_API_KEY"] == "set (masked)"
    assert shown["environment"]["SNOWFLAKE_PASSWORD"] == "set (masked)"
    assert shown["environment"]["SNOWFLAKE_TOKEN"] == "not set"
    assert shown["reconcile"]["buckets"] == 16  # defaults filled in
    assert STRIPE_KEY not in out and SNOWFLAKE_PASSWORD not in out


def test_a_mapping_renames_source_fields_and_sets_constants():
    mapping = LedgerFieldMap(
        {"id": "event_id", "ts": "occurred_at", "charge.cents": "amount"}, {"currency": "usd"}
    )
    source = {"id": "e1", "ts": "2026-11-20T10:00:00Z", "charge": {"cents": 500}, "order_id": "o"}

    assert map_ledger_event(source, mapping) == {
        "event_id": "e1",
        "occurred_at": "2026-11-20T10:00:00Z",
        "amount": 500,
        "currency": "usd",
        "order_id": "o",
    }


def test_mapped_events_decode_and_a_still_invalid_one_keeps_its_original_bytes():
    v1 = ledger_event(1, DAY)
    foreign = {"id": v1["event_id"], "ts": v1["occurred_at"]} | {
        k: v for k, v in v1.items() if k not in ("event_id", "occurred_at", "currency")
    }
    broken = json.dumps({k: v for k, v in foreign.items() if k != "ts"}).encode()
    mapping = LedgerFieldMap({"id": "event_id", "ts": "occurred_at"}, {"currency": "usd"})

    decoded = decode_ledger_batch(
        messages([json.dumps(foreign).encode(), broken]), job="test", field_map=mapping
    )

    [event] = decoded.events.to_pylist()
    assert (event["event_id"], event["currency"]) == (v1["event_id"], "usd")
    [letter] = decoded.dead_letters.to_pylist()
    assert (letter["reason"], letter["value"]) == ("missing_field", broken)


def test_the_mapping_reaches_the_reconcile_command_line(tmp_path):
    path = tmp_path / "payrecon.yaml"
    path.write_text("ledger_mapping: {fields: {id: event_id}, constants: {currency: usd}}\n")
    config = load_config(path)
    start = datetime(2026, 11, 20, tzinfo=UTC)

    argv = reconcile_argv(config, start, start + timedelta(days=1))

    mapped = json.loads(argv[argv.index("--ledger-field-map") + 1])
    assert mapped == {"fields": {"id": "event_id"}, "constants": {"currency": "usd"}}
    assert "--runner=DirectRunner" in argv


def gateway_job(*argv: str):
    job, _, _ = gateway.job_from_args(gateway.parse_args(list(argv)))
    return job


def test_the_example_configs_gateway_section_is_the_gateways_defaults():
    assert gateway_job("--config", str(EXAMPLE)) == gateway_job()


def test_the_gateway_section_sets_how_the_gateway_acts_on_alerts(tmp_path):
    path = tmp_path / "payrecon.yaml"
    path.write_text(
        "topics: {telemetry_alerts: ops.alerts}\n"
        "gateway: {alert_cooldown: 30s, alert_quiet: 5m, alert_max_age: 10m, "
        "alert_max_backoff: 4}\n"
    )

    job = gateway_job("--config", str(path))

    assert job.alerts_topic == "ops.alerts"
    assert job.governor == GovernorSettings(
        cooldown_s=30.0, quiet_s=300.0, max_age_s=600.0, max_backoff=4.0
    )


def test_gateway_flags_win_over_the_file(tmp_path):
    path = tmp_path / "payrecon.yaml"
    path.write_text("gateway: {alerts: false, alert_cooldown: 30s, alert_quiet: 5m}\n")

    assert gateway_job("--config", str(path)).alerts_topic is None
    job = gateway_job("--alert-cooldown", "10", "--config", str(path), "--alerts")

    assert job.alerts_topic == "telemetry.alerts"
    assert (job.governor.cooldown_s, job.governor.quiet_s) == (10.0, 300.0)


def test_a_bad_gateway_section_stops_the_gateway_with_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "payrecon.yaml"
    path.write_text("gateway: {alert_quiet: soon, alerts: maybe}\n")

    with pytest.raises(SystemExit) as exited:
        gateway.main(["--config", str(path)])

    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"payrecon gateway: {path}: gateway.alerts: got 'maybe'; allowed: ")
    assert "gateway.alert_quiet: got 'soon'; allowed: a duration such as 30s" in line


def test_secrets_in_the_environment_reach_no_log_summary_or_table(
    broker, tmp_path, monkeypatch, capfd, caplog
):
    monkeypatch.setenv("STRIPE_API_KEY", STRIPE_KEY)
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", SNOWFLAKE_PASSWORD)
    caplog.set_level(logging.DEBUG)
    day = published_day(
        broker.bootstrap_servers, tmp_path / "day", events=300, seed=5, discrepancy_rate=0.03
    )
    warehouse = tmp_path / "w.duckdb"
    path = tmp_path / "payrecon.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "broker": {"bootstrap_servers": broker.bootstrap_servers},
                "topics": {
                    "ledger": [day["topic"]],
                    "repairs": f"{day['topic']}.repairs",
                    "discrepancies": f"{day['topic']}.discrepancies",
                },
                "reconcile": {
                    "stripe_source": day["stripe"],
                    "warehouse": f"duckdb:///{warehouse}",
                    "group_id": "g-secrets",
                    "buckets": 2,
                },
            }
        )
    )
    start = datetime(2026, 11, 20, tzinfo=UTC)
    argv = reconcile_argv(load_config(path), start, start + timedelta(days=1))

    assert reconcile.main(argv) == 0
    assert config_main(["show", str(path)]) == 0

    out, err = capfd.readouterr()
    assert "run rcn_" in out  # the summary was printed
    tables = _every_table_as_text(warehouse)
    assert "recon_runs" in tables and "fact_ledger_events" in tables
    for secret in (STRIPE_KEY, SNOWFLAKE_PASSWORD):
        assert secret not in " ".join(argv)
        assert secret not in out + err
        assert secret not in caplog.text
        assert secret not in "\n".join(tables.values())


def _every_table_as_text(warehouse: Path) -> dict[str, str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        listed = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        names = [name for (name,) in listed]
        return {n: repr(con.execute(f"SELECT * FROM {n}").fetchall()) for n in names}
