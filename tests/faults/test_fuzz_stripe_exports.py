"""Fuzzing the Stripe export reader: a mutated cell makes its row converted or rejected with a
reason (rows in = rows out + rejected), never a failed file; mutated file bytes are read or
refused whole with a ``StripeExportError`` (the documented refusals), never another error.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.currencies import ISO_4217
from schemas.dead_letter import Reason
from tests.faults.fuzz_inputs import LOOKALIKES, count, fuzz_settings, mutated_bytes, odd_text
from transforms.stripe_files import StripeExport, StripeExportError, load_stripe_export

AS_OF = datetime(2026, 11, 23, 6, tzinfo=UTC)
COLUMNS = [
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


def _row(i: int, currency: str, gross: str, fee: str, net: str, category: str) -> dict:
    return {
        "balance_transaction_id": f"txn_{i:04d}",
        "created_utc": f"2026-11-20 1{i % 10}:04:05",
        "available_on_utc": "2026-11-22 00:00:00",
        "currency": currency,
        "gross": gross,
        "fee": fee,
        "net": net,
        "reporting_category": category,
        "source_id": f"ch_{i:04d}" if category == "charge" else f"re_{i:04d}",
        "description": 'Order, "quoted"' if i % 2 else "",
        "customer_facing_amount": gross.lstrip("-"),
        "customer_facing_currency": currency,
        "charge_id": f"ch_{i:04d}",
        "payment_intent_id": f"pi_{i:04d}",
        "payment_metadata[order_id]": f"ord_{i:04d}",
    }


ROWS = [
    _row(1, "usd", "10.99", "0.62", "10.37", "charge"),
    _row(2, "usd", "-10.99", "0.00", "-10.99", "refund"),
    _row(3, "jpy", "1200", "43", "1157", "charge"),
    _row(4, "kwd", "1.250", "0.040", "1.210", "charge"),
    _row(5, "eur", "0.5", "0", "0.50", "charge"),
]

# Text a cell may hold: odd unicode (lone surrogates removed: a CSV file is UTF-8 text),
# look-alikes of amounts, currencies and times, and numbers in every spelling.
cell_text = st.one_of(
    odd_text.map(lambda t: t.encode("utf-8", "replace").decode("utf-8")),
    st.sampled_from(LOOKALIKES),
    st.from_regex(r"[+-]?[0-9\u0663\uff11]{0,20}([.,][0-9]{0,6})?", fullmatch=True),
    st.sampled_from(
        [
            "2026-02-30 10:00:00",
            "2026-11-20",
            "2026-11-20T10:00:00Z",
            "2026-11-20T10:00:00+05:30",
            "2026-03-08 02:30:00",  # does not exist in New York
            "2026-11-01 01:30:00",  # happens twice in New York
            "0000-00-00 00:00:00",
            "999999999999999.999",
            "1000000000000000",
            "-0.000",
            "ＵＳＤ",
            " usd ",
            "JPY",
        ]
    ),
)
mutation = st.tuples(st.integers(0, len(ROWS) - 1), st.sampled_from(COLUMNS), cell_text)


def to_csv(rows: list[dict], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def assert_every_row_accounted_for(export: StripeExport, rows: list[dict]) -> None:
    assert export.rows.num_rows + export.rejected.num_rows == len(rows)
    rejected = export.rejected.to_pylist()
    numbers = [r["row"] for r in rejected]
    assert len(set(numbers)) == len(numbers) and all(1 <= n <= len(rows) for n in numbers)
    for r in rejected:
        assert Reason(r["reason"]) and r["detail"] and r["column"]
    kept = [row for i, row in enumerate(rows, start=1) if i not in set(numbers)]
    ids = export.rows.column("balance_transaction_id").to_pylist()
    assert sorted(i.strip() for i in ids) == sorted(
        r["balance_transaction_id"].strip() for r in kept
    )
    for row in export.rows.to_pylist():  # every value reads as Python (no year 0)
        assert row["currency"] in ISO_4217
        assert all(isinstance(row[c], int) for c in ("amount", "fee", "net"))


@fuzz_settings(fast=250, faults=3000)
@given(
    st.lists(mutation, min_size=1, max_size=6),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]),
    st.booleans(),
    st.sampled_from([1, 2, 100_000]),
)
def test_a_mutated_cell_makes_its_row_converted_or_rejected_never_a_failed_file(
    mutations, timezone, utc_columns, batch_rows
):
    rows = [dict(r) for r in ROWS]
    for at, column, text in mutations:
        rows[at][column] = text
    columns = list(COLUMNS)
    if not utc_columns:  # times in the report's timezone
        rename = {"created_utc": "created", "available_on_utc": "available_on"}
        rows = [{rename.get(k, k): v for k, v in r.items()} for r in rows]
        columns = [rename.get(c, c) for c in columns]
    count("stripe export rows", len(rows))

    export = load_stripe_export(
        to_csv(rows, columns), AS_OF, timezone=timezone, batch_rows=batch_rows
    )

    assert_every_row_accounted_for(export, rows)


@fuzz_settings(fast=400, faults=5000)
@given(
    st.one_of(
        st.just(to_csv(ROWS, COLUMNS)).flatmap(mutated_bytes),
        st.binary(max_size=512),
    ),
    st.sampled_from(["csv", "parquet"]),
)
def test_mutated_file_bytes_are_read_or_refused_whole_with_a_reason(data, file_format):
    count("stripe export files")
    try:
        export = load_stripe_export(data, AS_OF, file_format=file_format, batch_rows=2)
    except StripeExportError as exc:
        assert str(exc)
        return
    for r in export.rejected.to_pylist():
        assert Reason(r["reason"])


@pytest.mark.parametrize("gross", ["\u0663", "\uff11\uff12.50", "1\u0663.00", "12.\u0665"])
def test_digits_of_other_scripts_reject_the_row_not_the_file(gross):
    """Found by the fuzzer: the amount pattern's ``\\d`` matched them and the integer cast
    then failed the whole file (polars InvalidOperationError)."""
    rows = [dict(ROWS[0]), dict(ROWS[1], gross=gross)]

    export = load_stripe_export(to_csv(rows, COLUMNS), AS_OF)

    assert export.rows.num_rows == 1
    [rejected] = export.rejected.to_pylist()
    assert (rejected["row"], rejected["column"], rejected["reason"]) == (2, "gross", "wrong_type")


def test_a_header_that_is_not_utf8_refuses_the_file_with_a_reason():
    """Found by the fuzzer: a UnicodeDecodeError from pyarrow, not a StripeExportError."""
    data = b"\x80" + to_csv(ROWS, COLUMNS)

    with pytest.raises(StripeExportError, match="header line"):
        load_stripe_export(data, AS_OF)


def test_a_file_with_carriage_returns_only_is_read():
    """Found by the fuzzer: the header was cut at the first LF only, and Python's csv module
    refused a CR inside it (_csv.Error); pyarrow ends lines at a CR too."""
    data = to_csv(ROWS, COLUMNS).replace(b"\r\n", b"\r")

    export = load_stripe_export(data, AS_OF)

    assert (export.rows.num_rows, export.rejected.num_rows) == (len(ROWS), 0)
