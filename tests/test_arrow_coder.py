"""Tables crossing a shuffle are encoded as compressed Arrow IPC and come back equal."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import registry

from schemas.discrepancy import DISCREPANCY_V1
from transforms.arrow_coder import ArrowTableCoder


def payment_rows(n: int) -> pa.Table:
    return pa.table(
        {
            "balance_transaction_id": [f"txn_{i:024d}" for i in range(n)],
            "amount": pa.array([i * 100 - 5 for i in range(n)], pa.int64()),
            "currency": ["jpy" if i % 3 else "kwd" for i in range(n)],
            "created": pa.array(
                [datetime(2026, 11, 20, i % 24, tzinfo=UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "order_id": [None if i % 5 == 0 else f"ord_{i}" for i in range(n)],
        }
    )


def test_a_table_survives_the_coder_with_its_types_and_nulls():
    table = payment_rows(1000)
    coder = ArrowTableCoder()
    back = coder.decode(coder.encode(table))
    assert back.equals(table)
    assert back.schema == table.schema


def test_an_empty_table_keeps_its_schema():
    coder = ArrowTableCoder()
    back = coder.decode(coder.encode(DISCREPANCY_V1.empty_table()))
    assert back.num_rows == 0
    assert back.schema.equals(DISCREPANCY_V1, check_metadata=True)


def test_a_chunked_table_comes_back_with_the_same_rows():
    table = pa.concat_tables([payment_rows(10), payment_rows(7)])
    coder = ArrowTableCoder()
    assert coder.decode(coder.encode(table)).equals(table)


def test_encoded_tables_are_smaller_than_pickled_ones():
    table = payment_rows(50_000)
    assert len(ArrowTableCoder().encode(table)) < len(pickle.dumps(table, protocol=5)) / 2


def test_typed_table_outputs_and_keyed_tables_use_the_arrow_coder():
    assert isinstance(registry.get_coder(pa.Table), ArrowTableCoder)
    keyed = registry.get_coder(beam.typehints.Tuple[int, beam.typehints.Tuple[str, pa.Table]])
    assert str(keyed) == "TupleCoder[VarIntCoder, TupleCoder[StrUtf8Coder, ArrowTableCoder]]"
