"""Stripe itemized report exports (CSV, Parquet) read as balance transaction v1 rows.

Fixture rows are built from Stripe's official example objects (``fixtures3.json``): the
balance transaction of a charge, a refund and a dispute of that charge, and an automatic
payout; plus the generator's realistic export.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import apache_beam as beam
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.synthetic import STRIPE_FILE, GenerateConfig, generate_day
from pipelines.synthetic.records import major_units
from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.currencies import exponent, to_minor_units
from schemas.match import STRIPE_EXPORT_REJECT_V1
from transforms.stripe_files import (
    ReadStripeExport,
    StripeExportError,
    iter_stripe_export,
    load_stripe_export,
    read_stripe_export,
)

REFERENCE = Path("/work/shared/reference/stripe/fixtures3.json")
AS_OF = datetime(2026, 11, 23, 6, tzinfo=UTC)
BALANCE_COLUMNS = [
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "payment_metadata[order_id]",
]
PAYOUT_COLUMNS = [
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "available_on_utc",
    "balance_transaction_id",
    "charge_id",
    "created_utc",
    "currency",
    "customer_facing_amount",
    "customer_facing_currency",
    "description",
    "fee",
    "gross",
    "net",
    "payment_intent_id",
    "reporting_category",
    "source_id",
    "order_id",
]


def utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def money(minor: int, currency: str) -> str:
    return major_units(minor, exponent(currency))


@pytest.fixture(scope="module")
def official() -> dict:
    return json.loads(REFERENCE.read_text())["resources"]


@pytest.fixture(scope="module")
def activity_rows(official) -> list[dict]:
    """balance_change_from_activity rows for the official charge, refund and dispute."""
    bt, refund, dispute = official["balance_transaction"], official["refund"], official["dispute"]
    charge = official["charge"]
    return [
        {
            "balance_transaction_id": bt["id"],
            "created_utc": utc(bt["created"]),
            "available_on_utc": utc(bt["available_on"]),
            "currency": bt["currency"],
            "gross": money(bt["amount"], bt["currency"]),
            "fee": money(bt["fee"], bt["currency"]),
            "net": money(bt["net"], bt["currency"]),
            "reporting_category": bt["reporting_category"],
            "source_id": bt["source"],
            "description": bt["description"],
            "customer_facing_amount": money(charge["amount"], charge["currency"]),
            "customer_facing_currency": charge["currency"],
            "charge_id": charge["id"],
            "payment_intent_id": "",
            "payment_metadata[order_id]": "ord_1",
        },
        {
            "balance_transaction_id": "txn_" + refund["id"][3:],
            "created_utc": utc(refund["created"]),
            "available_on_utc": utc(refund["created"]),
            "currency": refund["currency"],
            "gross": money(-refund["amount"], refund["currency"]),
            "fee": money(0, refund["currency"]),
            "net": money(-refund["amount"], refund["currency"]),
            "reporting_category": "refund",
            "source_id": refund["id"],
            "description": "REFUND FOR CHARGE",
            "customer_facing_amount": money(refund["amount"], refund["currency"]),
            "customer_facing_currency": refund["currency"],
            "charge_id": refund["charge"],
            "payment_intent_id": "",
            "payment_metadata[order_id]": "ord_1",
        },
        {
            "balance_transaction_id": "txn_" + dispute["id"][3:],
            "created_utc": utc(dispute["created"]),
            "available_on_utc": utc(dispute["created"]),
            "currency": dispute["currency"],
            "gross": money(-dispute["amount"], dispute["currency"]),
            "fee": money(1500, dispute["currency"]),
            "net": money(-dispute["amount"] - 1500, dispute["currency"]),
            "reporting_category": "dispute",
            "source_id": dispute["id"],
            "description": f"Chargeback withdrawal for {dispute['charge']}",
            "customer_facing_amount": money(dispute["amount"], dispute["currency"]),
            "customer_facing_currency": dispute["currency"],
            "charge_id": dispute["charge"],
            "payment_intent_id": "",
            "payment_metadata[order_id]": "ord_1",
        },
    ]


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def load(tmp_path: Path, rows: list[dict], name: str = "activity.csv", **options):
    return load_stripe_export(write_csv(tmp_path / name, rows), AS_OF, **options)


def one_row(tmp_path: Path, activity_rows: list[dict], **changes) -> dict:
    return {**activity_rows[0], **changes}


# -- the official objects ----------------------------------------------------------------


def test_official_charge_balance_transaction_converts_to_minor_units(tmp_path, activity_rows):
    export = load(tmp_path, activity_rows)
    assert export.rows.schema == BALANCE_TRANSACTION_V1
    charge = export.rows.to_pylist()[0]
    assert charge["balance_transaction_id"] == "txn_1Moqx7LgUG5tbmjcEekVfAbn"
    assert (charge["amount"], charge["fee"], charge["net"]) == (100, 0, 100)
    assert charge["source_id"] == "ch_1MoS30LgUG5tbmjcjfsQqpHI"
    assert charge["reporting_category"] == "charge"
    assert charge["created"] == datetime.fromtimestamp(1234567890, UTC)
    assert charge["origin"] == "activity.csv"


def test_refunds_and_disputes_take_money_out_of_the_balance(tmp_path, activity_rows):
    rows = load(tmp_path, activity_rows).rows.to_pylist()
    refund, dispute = rows[1], rows[2]
    assert (refund["amount"], refund["fee"], refund["net"]) == (-100, 0, -100)
    assert (dispute["amount"], dispute["fee"], dispute["net"]) == (-1000, 1500, -2500)
    assert dispute["charge_id"] == "ch_1MoS30LgUG5tbmjcjfsQqpHI"


def test_order_id_comes_from_payment_metadata(tmp_path, activity_rows):
    rows = load(tmp_path, activity_rows).rows.to_pylist()
    assert {r["order_id"] for r in rows} == {"ord_1"}


def test_order_id_metadata_key_is_configurable(tmp_path, activity_rows):
    renamed = [
        {
            ("payment_metadata[checkout]" if k == "payment_metadata[order_id]" else k): v
            for k, v in row.items()
        }
        for row in activity_rows
    ]
    rows = load(tmp_path, renamed, order_id_key="checkout").rows.to_pylist()
    assert {r["order_id"] for r in rows} == {"ord_1"}


def test_payout_reconciliation_rows_carry_payout_and_order_id(tmp_path, official):
    bt, payout = official["balance_transaction"], official["payout"]
    row = {
        "automatic_payout_id": payout["id"],
        "automatic_payout_effective_at_utc": utc(payout["arrival_date"]),
        "available_on_utc": utc(bt["available_on"]),
        "balance_transaction_id": bt["id"],
        "charge_id": bt["source"],
        "created_utc": utc(bt["created"]),
        "currency": bt["currency"],
        "customer_facing_amount": money(bt["amount"], bt["currency"]),
        "customer_facing_currency": bt["currency"],
        "description": bt["description"],
        "fee": money(bt["fee"], bt["currency"]),
        "gross": money(bt["amount"], bt["currency"]),
        "net": money(bt["net"], bt["currency"]),
        "payment_intent_id": "",
        "reporting_category": bt["reporting_category"],
        "source_id": bt["source"],
        "order_id": "ord_7",
    }
    path = write_csv(tmp_path / "payout_reconciliation.csv", [row], PAYOUT_COLUMNS)
    (got,) = read_stripe_export(path, AS_OF).to_pylist()
    assert got["automatic_payout_id"] == "po_1MoqxPLgUG5tbmjcbKNyeRhP"
    assert got["order_id"] == "ord_7"
    assert got["amount"] == 100


def test_status_is_pending_when_funds_are_available_after_as_of(tmp_path, activity_rows):
    later = one_row(tmp_path, activity_rows, available_on_utc="2026-11-24 00:00:00")
    now = one_row(
        tmp_path, activity_rows, balance_transaction_id="txn_2", available_on_utc="2026-11-22"
    )
    rows = load(tmp_path, [later, now]).rows.to_pylist()
    assert [r["status"] for r in rows] == ["pending", "available"]


# -- exact money --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "text", "minor"),
    [
        ("jpy", "500", 500),
        ("jpy", "-1200", -1200),
        ("kwd", "5.124", 5124),
        ("kwd", "-0.005", -5),
        ("usd", "19.99", 1999),
        ("usd", "0.5", 50),
        ("usd", "12.340", 1234),
        ("eur", "7", 700),
    ],
)
def test_amounts_convert_exactly_with_the_currency_exponent(
    tmp_path, activity_rows, currency, text, minor
):
    row = one_row(tmp_path, activity_rows, currency=currency, gross=text, fee="0", net=text)
    (got,) = load(tmp_path, [row]).rows.to_pylist()
    assert got["amount"] == got["net"] == minor


def test_conversion_agrees_with_the_decimal_reference_on_random_amounts(tmp_path, activity_rows):
    rnd = random.Random(4)
    rows, expected = [], []
    for i in range(3000):
        currency = rnd.choice(["usd", "jpy", "kwd", "bhd", "krw", "eur"])
        minor = rnd.randint(-(10**12), 10**12)
        text = money(minor, currency)
        rows.append(
            one_row(
                tmp_path,
                activity_rows,
                balance_transaction_id=f"txn_{i}",
                currency=currency,
                gross=text,
                fee="0",
                net=text,
                customer_facing_currency=currency,
                customer_facing_amount=text,
            )
        )
        expected.append(to_minor_units(text, currency))
    got = load(tmp_path, rows).rows.column("amount").to_pylist()
    assert got == expected


@pytest.mark.parametrize(
    ("currency", "text"), [("usd", "12.345"), ("jpy", "1.5"), ("kwd", "0.0001")]
)
def test_more_decimals_than_the_currency_has_is_rejected_not_rounded(
    tmp_path, activity_rows, currency, text
):
    rows = [activity_rows[0], one_row(tmp_path, activity_rows, currency=currency, gross=text)]
    export = load(tmp_path, rows)
    assert export.rows.num_rows == 1
    (reject,) = export.rejected.to_pylist()
    assert (reject["line"], reject["row"], reject["column"]) == (3, 2, "gross")
    assert reject["reason"] == "non_integer_amount"
    assert f"more than {exponent(currency)} decimals for {currency.upper()}" in reject["detail"]


@pytest.mark.parametrize(
    ("changes", "column", "reason"),
    [
        ({"currency": "xyz"}, "currency", "unknown_currency"),
        ({"currency": ""}, "currency", "empty_field"),
        ({"gross": "1,000.00"}, "gross", "wrong_type"),
        ({"fee": "abc"}, "fee", "wrong_type"),
        ({"net": "1e3"}, "net", "wrong_type"),
        ({"gross": "1" * 16}, "gross", "amount_out_of_range"),
        ({"created_utc": "yesterday"}, "created_utc", "bad_timestamp"),
        ({"created_utc": ""}, "created_utc", "empty_field"),
        ({"available_on_utc": "2026-13-01 00:00:00"}, "available_on_utc", "bad_timestamp"),
        ({"created_utc": "0000-01-01 00:00:00"}, "created_utc", "bad_timestamp"),
        ({"available_on_utc": "1969-12-31 23:59:59"}, "available_on_utc", "bad_timestamp"),
        ({"balance_transaction_id": ""}, "balance_transaction_id", "empty_field"),
        ({"customer_facing_currency": "zzz"}, "customer_facing_currency", "unknown_currency"),
    ],
)
def test_bad_values_are_rejected_with_the_column_and_reason(
    tmp_path, activity_rows, changes, column, reason
):
    export = load(tmp_path, [one_row(tmp_path, activity_rows, **changes)])
    assert export.rows.num_rows == 0
    (reject,) = export.rejected.to_pylist()
    assert (reject["column"], reject["reason"]) == (column, reason)
    assert json.loads(reject["record"])["balance_transaction_id"] == (
        changes.get("balance_transaction_id", activity_rows[0]["balance_transaction_id"]) or None
    )


def test_every_row_is_either_converted_or_rejected(tmp_path, activity_rows):
    rows = [
        one_row(tmp_path, activity_rows, balance_transaction_id=f"txn_{i}", **bad)
        for i, bad in enumerate([{}, {"gross": "x"}, {}, {"currency": "??"}, {"fee": "1.001"}])
    ]
    export = load(tmp_path, rows)
    assert export.rejected.schema == STRIPE_EXPORT_REJECT_V1
    assert export.rows.num_rows + export.rejected.num_rows == len(rows)
    assert export.rejected.column("line").to_pylist() == [3, 5, 6]


def test_read_stripe_export_refuses_a_file_with_bad_rows_naming_file_line_and_column(
    tmp_path, activity_rows
):
    path = write_csv(
        tmp_path / "report.csv", [activity_rows[0], {**activity_rows[1], "gross": "-1.001"}]
    )
    with pytest.raises(StripeExportError, match=r"report\.csv line 3, column gross: '-1.001'"):
        read_stripe_export(path, AS_OF)


def test_a_file_without_a_required_column_is_refused_whole(tmp_path, activity_rows):
    rows = [{k: v for k, v in activity_rows[0].items() if k != "source_id"}]
    with pytest.raises(StripeExportError, match=r"missing column.*source_id"):
        load(tmp_path, rows)


def test_net_is_gross_minus_fee_when_the_report_has_no_net_column(tmp_path, activity_rows):
    rows = [{k: v for k, v in r.items() if k != "net"} for r in activity_rows]
    got = load(tmp_path, rows).rows.to_pylist()
    assert [r["net"] for r in got] == [100, -100, -2500]


def test_times_without_the_utc_suffix_are_in_the_report_timezone(tmp_path, activity_rows):
    row = {
        ("created" if k == "created_utc" else k): v
        for k, v in one_row(tmp_path, activity_rows, created_utc="2026-07-01 02:00:00").items()
    }
    (got,) = load(tmp_path, [row], timezone="Europe/Berlin").rows.to_pylist()
    assert got["created"] == datetime(2026, 7, 1, 0, 0, tzinfo=UTC)


def test_decimal_comma_reports_convert_exactly(tmp_path, activity_rows):
    row = one_row(tmp_path, activity_rows, gross="12,34", fee="0,30", net="12,04")
    (got,) = load(tmp_path, [row], decimal_separator=",").rows.to_pylist()
    assert (got["amount"], got["fee"], got["net"]) == (1234, 30, 1204)


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path, activity_rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(activity_rows[0]))
    writer.writeheader()
    writer.writerows(activity_rows)
    data = ("\ufeff" + buffer.getvalue()).encode()
    export = load_stripe_export(data, AS_OF, origin="bom.csv")
    assert export.rows.num_rows == 3


# -- Parquet ------------------------------------------------------------------------------


def test_parquet_with_decimal_and_timestamp_columns_reads_like_csv(tmp_path, activity_rows):
    frame = (
        pl.DataFrame(activity_rows)
        .with_columns(pl.col(c).str.to_decimal(scale=2) for c in ("gross", "fee", "net"))
        .with_columns(pl.col("created_utc").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC"))
    )
    frame.write_parquet(tmp_path / "activity.parquet")
    from_parquet = read_stripe_export(tmp_path / "activity.parquet", AS_OF)
    from_csv = read_stripe_export(
        write_csv(tmp_path / "activity.parquet.csv", activity_rows), AS_OF
    )
    assert from_parquet.drop(["origin"]).equals(from_csv.drop(["origin"]))


def test_parquet_float_amounts_are_refused(tmp_path, activity_rows):
    table = pa.Table.from_pylist(activity_rows).set_column(
        4, "gross", pa.array([1.0, -1.0, -10.0], pa.float64())
    )
    pq.write_table(table, tmp_path / "floats.parquet")
    with pytest.raises(StripeExportError, match=r"gross is Float64.*floats"):
        read_stripe_export(tmp_path / "floats.parquet", AS_OF)


# -- the generator's export ---------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("day")
    generate_day(GenerateConfig(date(2026, 11, 20), 3_000, 0.02, out, seed=9))
    return out


def test_generated_export_converts_to_the_answer_keys_totals(generated):
    key = json.loads((generated / "answer_key.json").read_text())
    as_of = datetime.fromisoformat(key["report_as_of"])
    rows = pl.from_arrow(read_stripe_export(generated / STRIPE_FILE, as_of))
    assert isinstance(rows, pl.DataFrame)
    sums = rows.group_by("currency").agg(
        pl.len().alias("rows"), pl.col("amount").sum(), pl.col("fee").sum(), pl.col("net").sum()
    )
    for row in sums.iter_rows(named=True):
        expected = key["totals"]["stripe"]["by_currency"][row["currency"]]
        assert (row["rows"], row["amount"], row["fee"], row["net"]) == (
            expected["rows"],
            expected["gross"],
            expected["fee"],
            expected["net"],
        )
    assert (rows.get_column("status") == "pending").sum() == key["totals"]["stripe"]["rows_pending"]


def test_generated_export_keeps_jpy_and_kwd_exact(generated):
    rows = read_stripe_export(generated / STRIPE_FILE, AS_OF).to_pylist()
    with (generated / STRIPE_FILE).open(newline="") as f:
        source = {r["balance_transaction_id"]: r for r in csv.DictReader(f)}
    for row in rows:
        text = source[row["balance_transaction_id"]]
        assert row["amount"] == to_minor_units(text["gross"], text["currency"])
        assert Decimal(text["gross"]).scaleb(exponent(row["currency"])) == row["amount"]


def test_reading_in_chunks_gives_the_rows_of_one_read_with_lines_counted_from_the_top(
    tmp_path, activity_rows
):
    rows = [
        one_row(tmp_path, activity_rows, balance_transaction_id=f"txn_{i}", **bad)
        for i, bad in enumerate([{}, {}, {"gross": "x"}, {}, {}, {}, {"fee": "1.001"}, {}])
    ]
    path = write_csv(tmp_path / "activity.csv", rows)
    whole = load_stripe_export(path, AS_OF)
    chunks = list(iter_stripe_export(path, AS_OF, batch_rows=3))
    assert [c.rows.num_rows + c.rejected.num_rows for c in chunks] == [3, 3, 2]
    assert pa.concat_tables([c.rows for c in chunks]).equals(whole.rows)
    assert [line for c in chunks for line in c.rejected.column("line").to_pylist()] == [4, 8]


def test_chunked_parquet_read_matches_the_csv_read(tmp_path, activity_rows):
    rows = [one_row(tmp_path, activity_rows, balance_transaction_id=f"txn_{i}") for i in range(7)]
    csv_path = write_csv(tmp_path / "activity.csv", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "activity.parquet", row_group_size=2)
    from_parquet = list(iter_stripe_export(tmp_path / "activity.parquet", AS_OF, batch_rows=3))
    assert [c.rows.num_rows for c in from_parquet] == [3, 3, 1]
    from_csv = load_stripe_export(csv_path, AS_OF).rows
    got = pa.concat_tables([c.rows for c in from_parquet])
    assert got.drop_columns(["origin"]).equals(from_csv.drop_columns(["origin"]))


def test_a_header_without_rows_reads_as_no_rows(tmp_path, activity_rows):
    path = tmp_path / "empty.csv"
    path.write_text(",".join(activity_rows[0]) + "\n")
    export = load_stripe_export(path, AS_OF)
    assert (export.rows.num_rows, export.rejected.num_rows) == (0, 0)


# -- Beam ---------------------------------------------------------------------------------


def test_read_stripe_export_transform_emits_batches_and_rejects(tmp_path, activity_rows):
    rows = [*activity_rows, {**activity_rows[0], "balance_transaction_id": "txn_x", "fee": "?"}]
    write_csv(tmp_path / "a.csv", rows)
    write_csv(tmp_path / "b.csv", activity_rows[:1])
    with TestPipeline() as p:
        read = p | ReadStripeExport(str(tmp_path / "*.csv"), as_of=AS_OF, batch_rows=2)
        ids = read.rows | "Ids" >> beam.FlatMap(
            lambda t: t.column("balance_transaction_id").to_pylist()
        )
        sizes = read.rows | "Sizes" >> beam.Map(lambda t: t.num_rows <= 2)
        rejected = read.rejected | "Rejected" >> beam.FlatMap(
            lambda t: [(r["origin"], r["line"], r["column"]) for r in t.to_pylist()]
        )
        expected_ids = [r["balance_transaction_id"] for r in activity_rows] + [
            activity_rows[0]["balance_transaction_id"]
        ]
        assert_that(ids, equal_to(expected_ids), label="rows")
        assert_that(sizes, equal_to([True, True, True]), label="batch sizes")
        assert_that(rejected, equal_to([("a.csv", 5, "fee")]), label="rejected")
