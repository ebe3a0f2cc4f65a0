"""Columns computed on an Arrow batch before a suite validates it.

Great Expectations compares columns with columns, not with expressions of columns, so a rule
such as ``net = amount - fee`` is checked as ``net == amount_minus_fee`` where
``amount_minus_fee`` is derived here. Everything is exact int64 Arrow arithmetic (never float),
and a derived value is null when an input it needs is null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import reduce

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

_FATES = ("matched", "discrepancies", "pending", "dead_letters", "other")
_LEDGER_FATES = tuple(f"ledger_{fate}" for fate in _FATES)
_STRIPE_FATES = tuple(f"stripe_{fate}" for fate in _FATES)


@dataclass(frozen=True)
class Derivation:
    inputs: tuple[str, ...]
    compute: Callable[[pa.Table], pa.Array | pa.ChunkedArray]


def _sum_of(columns: Iterable[str]) -> Derivation:
    names = tuple(columns)
    return Derivation(names, lambda t: reduce(pc.add, (t.column(c) for c in names)))


def _fee_details_total(table: pa.Table) -> pa.Array:
    """Per row, the sum of ``fee_details[].amount`` (a null amount counts as 0); null where
    ``fee_details`` is null. An empty list sums to 0."""
    details = table.column("fee_details").combine_chunks()
    totals = np.zeros(len(details), dtype=np.int64)
    amounts = pc.struct_field(pc.list_flatten(details), "amount").fill_null(0)
    parents = pc.list_parent_indices(details)
    np.add.at(totals, parents.to_numpy(), amounts.to_numpy())
    return pa.array(totals, type=pa.int64(), mask=details.is_null().to_numpy(zero_copy_only=False))


def _event_id_conflicts(table: pa.Table) -> pa.Array:
    """Per row, how many *other* versions of its ``event_id`` the batch holds: 0 for a unique
    id and for exact redelivered copies (Kafka is at-least-once; the matcher drops those),
    more when one id carries different contents, which is a real data problem."""
    content = table.drop_columns([c for c in table.column_names if c.startswith("kafka_")])
    frame = pl.from_arrow(content)
    assert isinstance(frame, pl.DataFrame)
    versions = pl.DataFrame({"event_id": frame["event_id"], "row": frame.hash_rows()}).select(
        (pl.col("row").n_unique().over("event_id") - 1).cast(pl.Int64)
    )
    return versions.to_series().to_arrow()


DERIVATIONS: dict[str, Derivation] = {
    "event_id_conflicts": Derivation(("event_id",), _event_id_conflicts),
    "amount_minus_fee": Derivation(
        ("amount", "fee"), lambda t: pc.subtract(t.column("amount"), t.column("fee"))
    ),
    "fee_details_total": Derivation(("fee_details",), _fee_details_total),
    "expected_amount_delta": Derivation(
        ("stripe_amount", "ledger_amount"),
        lambda t: pc.subtract(t.column("stripe_amount"), t.column("ledger_amount")),
    ),
    "ledger_out": _sum_of(_LEDGER_FATES),
    "ledger_out_amount": _sum_of(f"{c}_amount" for c in _LEDGER_FATES),
    "stripe_out": _sum_of(_STRIPE_FATES),
    "stripe_out_amount": _sum_of(f"{c}_amount" for c in _STRIPE_FATES),
}


def derive(table: pa.Table, names: Iterable[str]) -> pa.Table:
    """``table`` with the derived columns ``names`` appended.

    A column of the batch with a derived column's name is replaced. A derivation whose inputs
    the batch lacks is skipped: the expectations on its column then fail with "column does
    not exist", which is what a batch missing those inputs deserves.
    """
    for name in names:
        derivation = DERIVATIONS[name]
        if not set(derivation.inputs) <= set(table.column_names):
            continue
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, derivation.compute(table))
    return table
