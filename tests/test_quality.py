"""Data quality: each suite passes clean batches, catches each violation on the right rows,
quarantines only failing rows, records dq_results, and runs in Beam with one GX context."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apache_beam as beam
import great_expectations as gx
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.currencies import ISO_4217
from schemas.discrepancy import DISCREPANCY_V1, KINDS, SEVERITIES
from schemas.dq_result import (
    CONSERVATION_V1,
    DQ_RESULT_PRIMARY_KEY,
    DQ_RESULT_V1,
    PAYOUT_TOTALS_V1,
    with_quarantine_reason,
)
from transforms.decode import DECODED_LEDGER_EVENT
from transforms.quality import (
    DISCREPANCIES,
    LEDGER_EVENTS,
    PAYOUT_TOTALS,
    RECONCILIATION_INVARIANTS,
    STRIPE_BALANCE_TRANSACTIONS,
    SUITES,
    DataQualityError,
    SuiteConfigError,
    SuiteResult,
    ValidateBatches,
    context_builds,
    results_table,
    split,
    validate,
    window_parameters,
)
from transforms.quality_suites import EXPECTATIONS_DIR

W0 = datetime(2026, 11, 20, tzinfo=UTC)
W1 = W0 + timedelta(days=1)
MARGIN = timedelta(minutes=10)
PARAMS = window_parameters(W0, W1, MARGIN)
REPO = Path(__file__).resolve().parents[1]

# GX reads datetime pairs through a pandas API that pandas 3 deprecates (quality_gx silences it
# for the process; pytest resets filters per test).
pytestmark = pytest.mark.filterwarnings("ignore:Series.values returning an ndarray")


# ---- clean batches, one builder per dataset -------------------------------------------------


def ledger_rows(n: int = 6) -> list[dict]:
    return [
        {
            "event_id": f"ev_{i}",
            "event_type": "charge.succeeded",
            "occurred_at": W0 + timedelta(hours=i),
            "order_id": f"or_{i}",
            "stripe_object_id": f"ch_{i}",
            "payment_intent_id": f"pi_{i}",
            "amount": 1000 * (i + 1),
            "currency": ("usd", "jpy", "kwd")[i % 3],
            "idempotency_key": f"idem_{i}",
            "kafka_topic": "ledger.transactions",
            "kafka_partition": 0,
            "kafka_offset": i,
        }
        for i in range(n)
    ]


def stripe_rows(n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        amount, fee = 1000 * (i + 1), 59 + i
        rows.append(
            {
                "balance_transaction_id": f"txn_{i}",
                "source_id": f"ch_{i}",
                "type": "charge",
                "reporting_category": "charge",
                "amount": amount,
                "fee": fee,
                "net": amount - fee,
                "currency": "usd",
                "created": W0 + timedelta(hours=i),
                "available_on": W0 + timedelta(days=2),
                "fee_details": [
                    {"amount": fee - 30, "currency": "usd", "type": "stripe_fee"},
                    {"amount": 30, "currency": "usd", "type": "tax"},
                ],
                "origin": "api",
            }
        )
    return rows


def discrepancy_rows() -> list[dict]:
    base = {
        "run_id": "run-1",
        "severity": "high",
        "currency": "usd",
        "detected_at": W1,
        "window_start": W0,
        "window_end": W1,
    }
    return [
        base
        | {"discrepancy_id": "d_0", "kind": "amount_mismatch", "ledger_amount": 1000}
        | {"stripe_amount": 900, "amount_delta": -100},
        base | {"discrepancy_id": "d_1", "kind": "missing_in_stripe", "ledger_amount": 500},
        base | {"discrepancy_id": "d_2", "kind": "missing_in_ledger", "stripe_amount": 700},
    ]


def conservation_rows() -> list[dict]:
    def side(prefix: str, matched: int, disc: int, pending: int, dead: int, unit: int) -> dict:
        counts = {"matched": matched, "discrepancies": disc, "pending": pending}
        counts["dead_letters"] = dead
        counts["other"] = 1
        counts["in"] = sum(counts.values())
        row = {f"{prefix}_{k}": v for k, v in counts.items()}
        return row | {f"{prefix}_{k}_amount": v * unit for k, v in counts.items()}

    return [
        {"currency": c} | side("ledger", 90, 5, 3, 2, unit) | side("stripe", 90, 4, 6, 0, unit)
        for c, unit in (("usd", 1250), ("jpy", 3000), ("unknown", 0))
    ]


def payout_rows() -> list[dict]:
    return [
        {"payout_id": "po_1", "currency": "usd", "payout_amount": 10_000, "sum_net": 10_000},
        {"payout_id": "po_2", "currency": "eur", "payout_amount": 5_055, "sum_net": 5_055},
    ]


BUILDERS = {
    LEDGER_EVENTS: (ledger_rows, DECODED_LEDGER_EVENT),
    STRIPE_BALANCE_TRANSACTIONS: (stripe_rows, BALANCE_TRANSACTION_V1),
    DISCREPANCIES: (discrepancy_rows, DISCREPANCY_V1),
    RECONCILIATION_INVARIANTS: (conservation_rows, CONSERVATION_V1),
    PAYOUT_TOTALS: (payout_rows, PAYOUT_TOTALS_V1),
}


def batch(suite: str, changes: dict[int, dict] | None = None) -> pa.Table:
    """The clean batch of ``suite`` with ``{row: {column: value}}`` changed."""
    build, schema = BUILDERS[suite]
    rows = build()
    for i, change in (changes or {}).items():
        rows[i] = rows[i] | change
    return pa.Table.from_pylist(rows, schema=schema)


def failures(result: SuiteResult) -> dict[str, list[int] | None]:
    return {
        o.name: None if o.unexpected_rows is None else list(o.unexpected_rows)
        for o in result.failed
    }


# ---- the suite files ------------------------------------------------------------------------


def suite_json(name: str) -> dict:
    return json.loads((EXPECTATIONS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", SUITES)
def test_suite_file_loads_into_great_expectations_without_losing_expectations(name):
    document = suite_json(name)
    suite = gx.ExpectationSuite(**document)
    assert len(suite.expectations) == len(document["expectations"])
    assert document["meta"]["payrecon"]["on_failure"] in ("fail", "quarantine")


@pytest.mark.parametrize("name", SUITES)
def test_expectation_type_and_column_identify_each_expectation_of_a_suite(name):
    # dq_results is keyed by (run_id, suite, batch_id, expectation, columns).
    keys = []
    for e in suite_json(name)["expectations"]:
        kw = e["kwargs"]
        columns = kw.get("column_list") or [
            kw[k] for k in ("column", "column_A", "column_B") if k in kw
        ]
        keys.append((e["type"], ",".join(columns)))
    assert len(keys) == len(set(keys))
    assert {"expectation", "columns"} <= set(DQ_RESULT_PRIMARY_KEY)


def test_currency_value_sets_are_exactly_iso_4217():
    sets = [
        e["kwargs"]["value_set"]
        for name in SUITES
        for e in suite_json(name)["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "currency"
    ]
    assert len(sets) == 4
    assert all(s == sorted(ISO_4217) for s in sets)


def test_discrepancy_kinds_and_severities_are_the_schemas():
    value_sets = {
        e["kwargs"]["column"]: e["kwargs"]["value_set"]
        for e in suite_json(DISCREPANCIES)["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set"
    }
    assert value_sets["kind"] == list(KINDS)
    assert value_sets["severity"] == list(SEVERITIES)


# ---- clean batches pass; each expectation catches its violation ------------------------------


@pytest.mark.parametrize("name", SUITES)
def test_clean_batch_passes_every_expectation_of_its_suite(name):
    result = validate(name, batch(name), PARAMS)
    assert result.success, result.describe()
    assert len(result.outcomes) == len(suite_json(name)["expectations"])


VIOLATIONS = [
    (
        LEDGER_EVENTS,
        {3: {"event_id": "ev_1"}},
        "expect_column_values_to_be_between(event_id_conflicts)",
        [1, 3],
    ),
    (LEDGER_EVENTS, {2: {"event_id": None}}, "expect_column_values_to_not_be_null(event_id)", [2]),
    (LEDGER_EVENTS, {4: {"currency": "xyz"}}, "expect_column_values_to_be_in_set(currency)", [4]),
    (LEDGER_EVENTS, {0: {"currency": "USD"}}, "expect_column_values_to_be_in_set(currency)", [0]),
    (LEDGER_EVENTS, {1: {"amount": -1}}, "expect_column_values_to_be_between(amount)", [1]),
    (LEDGER_EVENTS, {5: {"amount": 10**12 + 1}}, "expect_column_values_to_be_between(amount)", [5]),
    (
        LEDGER_EVENTS,
        {0: {"occurred_at": W0 - timedelta(microseconds=1)}, 2: {"occurred_at": W1}},
        "expect_column_values_to_be_between(occurred_at)",
        [0, 2],
    ),
    (LEDGER_EVENTS, {3: {"order_id": None}}, "expect_column_values_to_not_be_null(order_id)", [3]),
    (
        LEDGER_EVENTS,
        {4: {"stripe_object_id": None}},
        "expect_column_values_to_not_be_null(stripe_object_id)",
        [4],
    ),
    (
        STRIPE_BALANCE_TRANSACTIONS,
        {2: {"balance_transaction_id": "txn_0"}},
        "expect_column_values_to_be_unique(balance_transaction_id)",
        [0, 2],
    ),
    (
        STRIPE_BALANCE_TRANSACTIONS,
        {1: {"currency": "zzz"}},
        "expect_column_values_to_be_in_set(currency)",
        [1],
    ),
    (
        STRIPE_BALANCE_TRANSACTIONS,
        {3: {"net": 3000 - 62 + 1}},
        "expect_column_pair_values_to_be_equal(net,amount_minus_fee)",
        [3],
    ),
    (
        STRIPE_BALANCE_TRANSACTIONS,
        {4: {"fee_details": [{"amount": 10, "currency": "usd", "type": "stripe_fee"}]}},
        "expect_column_pair_values_to_be_equal(fee,fee_details_total)",
        [4],
    ),
    (
        STRIPE_BALANCE_TRANSACTIONS,
        {5: {"available_on": W0 + timedelta(hours=5) - timedelta(seconds=1)}},
        "expect_column_pair_values_a_to_be_greater_than_b(available_on,created)",
        [5],
    ),
    (
        STRIPE_BALANCE_TRANSACTIONS,
        {0: {"created": W0 - MARGIN - timedelta(seconds=1)}, 1: {"created": W1 + MARGIN}},
        "expect_column_values_to_be_between(created)",
        [0, 1],
    ),
    (
        DISCREPANCIES,
        {1: {"kind": "amount_mismatchh"}},
        "expect_column_values_to_be_in_set(kind)",
        [1],
    ),
    (
        DISCREPANCIES,
        {2: {"severity": "urgent"}},
        "expect_column_values_to_be_in_set(severity)",
        [2],
    ),
    (
        DISCREPANCIES,
        {0: {"amount_delta": 100}},
        "expect_column_pair_values_to_be_equal(amount_delta,expected_amount_delta)",
        [0],
    ),
    (
        DISCREPANCIES,
        {0: {"amount_delta": None}},
        "expect_column_values_to_not_be_null(amount_delta)",
        [0],
    ),
    (
        RECONCILIATION_INVARIANTS,
        {1: {"ledger_matched": 89}},
        "expect_column_pair_values_to_be_equal(ledger_in,ledger_out)",
        [1],
    ),
    (
        RECONCILIATION_INVARIANTS,
        {0: {"ledger_pending_amount": 3 * 1250 + 1}},
        "expect_column_pair_values_to_be_equal(ledger_in_amount,ledger_out_amount)",
        [0],
    ),
    (
        RECONCILIATION_INVARIANTS,
        {2: {"stripe_in": 102}},
        "expect_column_pair_values_to_be_equal(stripe_in,stripe_out)",
        [2],
    ),
    (
        RECONCILIATION_INVARIANTS,
        {1: {"stripe_discrepancies_amount": 4 * 3000 - 1}},
        "expect_column_pair_values_to_be_equal(stripe_in_amount,stripe_out_amount)",
        [1],
    ),
    (
        PAYOUT_TOTALS,
        {1: {"sum_net": 5_054}},
        "expect_column_pair_values_to_be_equal(payout_amount,sum_net)",
        [1],
    ),
]


@pytest.mark.parametrize(
    ("suite", "changes", "expectation", "rows"),
    VIOLATIONS,
    ids=[f"{s}-{e.split('(', 1)[1][:-1]}-{list(c)}" for s, c, e, _ in VIOLATIONS],
)
def test_expectation_catches_its_violation_on_the_failing_rows(suite, changes, expectation, rows):
    result = validate(suite, batch(suite, changes), PARAMS)
    assert not result.success
    assert failures(result) == {expectation: rows}
    assert list(result.failing_rows()) == rows


def test_created_inside_the_lateness_margin_passes():
    changes = {0: {"created": W0 - MARGIN}, 1: {"created": W1 + MARGIN - timedelta(seconds=1)}}
    assert validate(
        STRIPE_BALANCE_TRANSACTIONS, batch(STRIPE_BALANCE_TRANSACTIONS, changes), PARAMS
    ).success


def test_fee_is_checked_only_where_fee_details_are_present():
    changes = {0: {"fee_details": None}, 1: {"fee_details": [], "fee": 0, "net": 2000}}
    assert validate(
        STRIPE_BALANCE_TRANSACTIONS, batch(STRIPE_BALANCE_TRANSACTIONS, changes), PARAMS
    ).success
    changes = {1: {"fee_details": []}}
    result = validate(
        STRIPE_BALANCE_TRANSACTIONS, batch(STRIPE_BALANCE_TRANSACTIONS, changes), PARAMS
    )
    assert failures(result) == {"expect_column_pair_values_to_be_equal(fee,fee_details_total)": [1]}


def test_non_integer_amount_column_fails_the_whole_batch():
    table = batch(LEDGER_EVENTS)
    i = table.schema.get_field_index("amount")
    table = table.set_column(i, "amount", table.column("amount").cast(pa.float64()))
    result = validate(LEDGER_EVENTS, table, PARAMS)
    assert failures(result) == {"expect_column_values_to_be_in_type_list(amount)": None}
    assert list(result.failing_rows()) == list(range(table.num_rows))


def test_missing_column_fails_its_expectations_with_the_reason():
    table = batch(PAYOUT_TOTALS).drop_columns(["sum_net"])
    result = validate(PAYOUT_TOTALS, table, PARAMS)
    failed = {o.name: o.error for o in result.failed}
    assert set(failed) == {
        "expect_column_values_to_not_be_null(sum_net)",
        "expect_column_pair_values_to_be_equal(payout_amount,sum_net)",
    }
    assert all("sum_net" in (error or "") for error in failed.values())
    assert result.failing_rows().tolist() == [0, 1]


def test_missing_or_naive_window_parameter_is_a_configuration_error():
    with pytest.raises(SuiteConfigError, match=r"missing \['window_end'\]"):
        validate(LEDGER_EVENTS, batch(LEDGER_EVENTS), {"window_start": W0})
    with pytest.raises(SuiteConfigError, match="naive datetime"):
        validate(
            LEDGER_EVENTS,
            batch(LEDGER_EVENTS),
            window_parameters(W0.replace(tzinfo=None), W1.replace(tzinfo=None)),
        )


def test_unknown_suite_names_the_known_ones():
    with pytest.raises(SuiteConfigError, match="ledger_events"):
        validate("ledger", batch(LEDGER_EVENTS), PARAMS)


# ---- quarantine, results --------------------------------------------------------------------


def test_quarantine_sets_aside_only_failing_rows_with_every_reason():
    table = batch(LEDGER_EVENTS, {1: {"amount": -5, "currency": "xyz"}, 4: {"order_id": None}})
    passed, quarantined = split(table, validate(LEDGER_EVENTS, table, PARAMS))
    assert passed.num_rows + quarantined.num_rows == table.num_rows
    assert passed.schema == table.schema
    assert quarantined.schema == with_quarantine_reason(table.schema)
    assert passed.column("event_id").to_pylist() == ["ev_0", "ev_2", "ev_3", "ev_5"]
    assert quarantined.select(["event_id", "dq_reason"]).to_pylist() == [
        {
            "event_id": "ev_1",
            "dq_reason": "expect_column_values_to_be_in_set(currency); "
            "expect_column_values_to_be_between(amount)",
        },
        {"event_id": "ev_4", "dq_reason": "expect_column_values_to_not_be_null(order_id)"},
    ]


def test_an_exact_redelivered_copy_is_not_a_conflicting_event_id():
    clean = batch(LEDGER_EVENTS)
    redelivered = pa.concat_tables([clean, clean.slice(2, 1)])
    assert validate(LEDGER_EVENTS, redelivered, PARAMS).success


def test_results_are_one_dq_result_row_per_expectation_with_a_stable_batch_id():
    table = batch(LEDGER_EVENTS, {3: {"event_id": "ev_1"}})
    result = validate(LEDGER_EVENTS, table, PARAMS)
    rows = results_table(result, "run-1", W1).to_pylist()
    assert results_table(result, "run-1", W1).schema == DQ_RESULT_V1
    assert len(rows) == len(suite_json(LEDGER_EVENTS)["expectations"])
    [unique] = [r for r in rows if r["columns"] == "event_id_conflicts"]
    assert unique | {"validated_at": None} == unique | {
        "run_id": "run-1",
        "suite": LEDGER_EVENTS,
        "dataset": "ledger_events",
        "columns": "event_id_conflicts",
        "success": False,
        "unexpected_count": 2,
        "evaluated_count": 6,
        "batch_rows": 6,
        "unexpected_sample": '[{"row": 1, "value": 1}, {"row": 3, "value": 1}]',
        "on_failure": "quarantine",
        "validated_at": None,
    }
    assert validate(LEDGER_EVENTS, table, PARAMS).batch_id == result.batch_id
    assert validate(LEDGER_EVENTS, batch(LEDGER_EVENTS), PARAMS).batch_id != result.batch_id


def test_failing_a_fail_suite_says_what_failed_on_which_rows():
    result = validate(DISCREPANCIES, batch(DISCREPANCIES, {1: {"kind": "oops"}}), PARAMS)
    message = str(DataQualityError(result))
    assert "expect_column_values_to_be_in_set(kind): 1 of 3 rows, e.g. [(1, 'oops')]" in message


# ---- Beam -----------------------------------------------------------------------------------


def ids(column: str):
    return beam.FlatMap(lambda t: t.column(column).to_pylist())


def test_validate_batches_passes_good_rows_and_quarantines_bad_ones_in_beam():
    good = batch(LEDGER_EVENTS)
    bad = batch(LEDGER_EVENTS, {0: {"amount": -1}, 5: {"currency": "xyz"}})
    bad = bad.set_column(0, "event_id", pa.array([f"b_{i}" for i in range(6)]))
    p = TestPipeline()
    out = (
        p
        | beam.Create([good, bad, good.slice(0, 0)])
        | "Validate" >> ValidateBatches(LEDGER_EVENTS, PARAMS, "run-1")
    )
    assert_that(
        out.passed | "Passed" >> ids("event_id"),
        equal_to([f"ev_{i}" for i in range(6)] + [f"b_{i}" for i in range(1, 5)]),
        label="passed",
    )
    assert_that(
        out.quarantined
        | "Quarantined" >> beam.FlatMap(lambda t: t.select(["event_id", "dq_reason"]).to_pylist()),
        equal_to(
            [
                {"event_id": "b_0", "dq_reason": "expect_column_values_to_be_between(amount)"},
                {"event_id": "b_5", "dq_reason": "expect_column_values_to_be_in_set(currency)"},
            ]
        ),
        label="quarantined",
    )
    assert_that(
        out.results
        | "Failed"
        >> beam.FlatMap(
            lambda t: [
                (r["columns"], r["unexpected_count"]) for r in t.to_pylist() if not r["success"]
            ]
        ),
        equal_to([("amount", 1), ("currency", 1)]),
        label="results",
    )
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_namespace("payrecon.quality"))
    counters = {m.key.metric.name.split(".", 1)[1]: m.committed for m in query["counters"]}
    assert counters["rows_in"] == 12 == counters["rows_passed"] + counters["rows_quarantined"]
    assert counters["rows_quarantined"] == 2
    assert (counters["batches"], counters["failed_batches"]) == (2, 1)


def test_a_failing_fail_suite_fails_the_pipeline():
    bad = batch(DISCREPANCIES, {2: {"kind": "not_a_kind"}})
    failed = r"(?s)DataQualityError.*expect_column_values_to_be_in_set\(kind\)"
    with pytest.raises(Exception, match=failed), TestPipeline() as p:
        _ = p | beam.Create([bad]) | ValidateBatches(DISCREPANCIES, None, "run-1")


def test_a_missing_parameter_fails_when_the_pipeline_is_built():
    with pytest.raises(SuiteConfigError, match="created_from"):
        ValidateBatches(STRIPE_BALANCE_TRANSACTIONS, {"window_start": W0}, "run-1")


# ---- one GX context per process, quietly ----------------------------------------------------


def test_gx_writes_no_progress_bars_to_stderr(capfd):
    validate(STRIPE_BALANCE_TRANSACTIONS, batch(STRIPE_BALANCE_TRANSACTIONS), PARAMS)
    err = capfd.readouterr().err
    assert "Calculating Metrics" not in err and "it/s" not in err


def test_gx_context_is_built_once_per_process():
    validate(PAYOUT_TOTALS, batch(PAYOUT_TOTALS))
    validate(DISCREPANCIES, batch(DISCREPANCIES))
    assert context_builds() == 1


def test_a_fresh_process_builds_one_context_writes_no_files_and_no_progress_bars(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_quality import PARAMS, batch
        from transforms.quality import LEDGER_EVENTS, context_builds, validate
        assert context_builds() == 0
        for _ in range(3):
            assert validate(LEDGER_EVENTS, batch(LEDGER_EVENTS), PARAMS).success
        print("builds", context_builds())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "builds 1"
    assert "Calculating Metrics" not in done.stderr
    assert list(tmp_path.iterdir()) == []
