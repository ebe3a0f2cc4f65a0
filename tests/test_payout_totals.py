"""Each payout equals the net of the transactions it settles (issue 4's payout invariant).

The rows are Stripe's: the official payout ``po_1MoqxPLgUG5tbmjcbKNyeRhP`` (1,100 usd) and
its balance transaction as a ``payouts.itemized`` row, and the official charge balance
transaction (net 100) plus a second charge (net 1,000) as ``payout_reconciliation.itemized``
rows settled by that payout.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.payout_fixtures import payouts_report, settled_report
from transforms.payout_totals import SumPayouts, partial_payout_sums, payout_totals
from transforms.quality import PAYOUT_TOTALS, ValidateBatches
from transforms.stripe_files import read_stripe_export

REFERENCE = Path("/work/shared/reference/stripe/fixtures3.json")
AS_OF = datetime(2026, 11, 23, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def official() -> dict:
    return json.loads(REFERENCE.read_text())["resources"]


def both_files(tmp_path: Path, official: dict, paid: int | None = None) -> pa.Table:
    return pa.concat_tables(
        [
            read_stripe_export(settled_report(tmp_path, official), AS_OF),
            read_stripe_export(payouts_report(tmp_path, official["payout"], paid), AS_OF),
        ]
    )


def test_a_payouts_report_row_reads_as_the_payouts_balance_transaction(tmp_path, official):
    payout = official["payout"]
    (row,) = read_stripe_export(payouts_report(tmp_path, payout), AS_OF).to_pylist()
    assert row["source_id"] == payout["id"]
    assert row["balance_transaction_id"] == payout["balance_transaction"]
    assert row["reporting_category"] == "payout"
    assert row["amount"] == -1100
    assert row["created"] == datetime.fromtimestamp(payout["arrival_date"], UTC)


def test_a_payout_is_compared_with_the_net_of_the_transactions_it_settles(tmp_path, official):
    rows = both_files(tmp_path, official)
    got = payout_totals([partial_payout_sums(rows)]).to_pylist()
    assert got == [
        {
            "payout_id": "po_1MoqxPLgUG5tbmjcbKNyeRhP",
            "currency": "usd",
            "payout_amount": 1100,
            "sum_net": 1100,
        }
    ]


def test_partial_sums_of_any_split_add_up_to_the_same_payout(tmp_path, official):
    rows = both_files(tmp_path, official)
    whole = payout_totals([partial_payout_sums(rows)])
    split = payout_totals([partial_payout_sums(rows.slice(i, 1)) for i in range(rows.num_rows)])
    assert split.equals(whole)


def test_a_payout_seen_from_one_side_only_is_not_checked(tmp_path, official):
    settled = read_stripe_export(settled_report(tmp_path, official), AS_OF)
    own = read_stripe_export(payouts_report(tmp_path, official["payout"]), AS_OF)
    assert payout_totals([partial_payout_sums(settled)]).num_rows == 0
    assert payout_totals([partial_payout_sums(own)]).num_rows == 0


def payout_check(p, rows: pa.Table):
    return (
        p
        | beam.Create([rows])
        | SumPayouts()
        | ValidateBatches(PAYOUT_TOTALS, {}, "run-1", validated_at=AS_OF)
    )


def test_a_payout_equal_to_its_transactions_passes_the_payout_suite(tmp_path, official):
    rows = both_files(tmp_path, official)
    with TestPipeline() as p:
        checked = payout_check(p, rows)
        assert_that(
            checked.passed | beam.FlatMap(lambda t: t.column("payout_id").to_pylist()),
            equal_to(["po_1MoqxPLgUG5tbmjcbKNyeRhP"]),
            label="passed",
        )
        assert_that(
            checked.quarantined | "Q" >> beam.Map(lambda t: t.num_rows), equal_to([]), label="q"
        )


def test_a_payout_short_of_its_transactions_net_is_quarantined_and_fails_the_suite(
    tmp_path, official
):
    rows = both_files(tmp_path, official, paid=1000)
    with TestPipeline() as p:
        checked = payout_check(p, rows)
        assert_that(
            checked.quarantined
            | beam.FlatMap(
                lambda t: t.select(
                    ["payout_id", "payout_amount", "sum_net", "dq_reason"]
                ).to_pylist()
            ),
            equal_to(
                [
                    {
                        "payout_id": "po_1MoqxPLgUG5tbmjcbKNyeRhP",
                        "payout_amount": 1000,
                        "sum_net": 1100,
                        "dq_reason": (
                            "expect_column_pair_values_to_be_equal(payout_amount,sum_net)"
                        ),
                    }
                ]
            ),
            label="quarantined",
        )
        assert_that(
            checked.results
            | "Failed"
            >> beam.FlatMap(
                lambda t: [r["expectation"] for r in t.to_pylist() if not r["success"]]
            ),
            equal_to(["expect_column_pair_values_to_be_equal"]),
            label="failed",
        )
