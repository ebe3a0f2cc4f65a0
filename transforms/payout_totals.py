"""Each payout against the transactions it settles: the rows the ``payout_totals`` suite checks.

A bank deposit is matched to Stripe by its payout, and a payout pays out exactly the net of
the balance transactions it settles (``payout_reconciliation.itemized`` names the payout of
each transaction in ``automatic_payout_id``). The payout's own amount comes from its own
balance transaction (category ``payout``, source ``po_...``: the API source, or a
``payouts.itemized`` export read with the other files); it takes the money out of the
balance, so the payout's amount is minus its ``amount``.

Only payouts seen from both sides are checked: a payout whose own row, or whose
transactions, are in no file read this run cannot be compared (a payout often settles days
of activity), so it yields no row rather than a false alarm.
"""

from __future__ import annotations

import apache_beam as beam
import polars as pl
import pyarrow as pa

from schemas.dq_result import PAYOUT_TOTALS_V1

PAYOUT_CATEGORY = "payout"
_PARTIAL = pl.Schema(
    {
        "payout_id": pl.String,
        "currency": pl.String,
        "sum_net": pl.Int64,
        "payout_amount": pl.Int64,
        "settled": pl.UInt32,
        "own": pl.UInt32,
    }
)


def partial_payout_sums(rows: pa.Table) -> pl.DataFrame:
    """One batch of balance transactions as partial sums per (payout, currency)."""
    frame = pl.from_arrow(
        rows.select(
            ["source_id", "reporting_category", "amount", "net", "currency", "automatic_payout_id"]
        )
    )
    assert isinstance(frame, pl.DataFrame)
    is_payout = pl.col("reporting_category") == PAYOUT_CATEGORY
    settled = (
        frame.filter(~is_payout & pl.col("automatic_payout_id").is_not_null())
        .group_by(payout_id="automatic_payout_id", currency="currency")
        .agg(sum_net=pl.col("net").sum(), settled=pl.len())
        .with_columns(payout_amount=pl.lit(None, pl.Int64), own=pl.lit(0, pl.UInt32))
    )
    own = (
        frame.filter(is_payout & pl.col("source_id").str.starts_with("po_"))
        .group_by(payout_id="source_id", currency="currency")
        .agg(payout_amount=(-pl.col("amount")).sum(), own=pl.len())
        .with_columns(sum_net=pl.lit(None, pl.Int64), settled=pl.lit(0, pl.UInt32))
    )
    return pl.concat([settled.select(_PARTIAL.names()), own.select(_PARTIAL.names())]).cast(
        _PARTIAL
    )


def payout_totals(partials: list[pl.DataFrame]) -> pa.Table:
    """``PAYOUT_TOTALS_V1``: one row per payout seen with both its own row and its
    transactions, sorted by payout."""
    merged = (
        pl.concat([pl.DataFrame(schema=_PARTIAL), *partials])
        .group_by("payout_id", "currency")
        .agg(
            pl.col("sum_net").sum(),
            pl.col("payout_amount").sum(),
            pl.col("settled").sum(),
            pl.col("own").sum(),
        )
        .filter((pl.col("settled") > 0) & (pl.col("own") > 0))
        .sort("payout_id", "currency")
    )
    arrow = merged.select(PAYOUT_TOTALS_V1.names).to_arrow()
    return pa.Table.from_arrays(
        [arrow.column(f.name).cast(f.type) for f in PAYOUT_TOTALS_V1], schema=PAYOUT_TOTALS_V1
    )


class SumPayouts(beam.PTransform):
    """Balance transaction batches in; one ``PAYOUT_TOTALS_V1`` table out (a run sees few
    payouts: one per payout day and currency). Partial sums are taken per batch, so only
    the small per-payout tables travel to the single combine."""

    def expand(self, batches):
        return (
            batches
            | "PartialSums" >> beam.Map(partial_payout_sums)
            | "AllPartials" >> beam.combiners.ToList()
            | "PerPayout" >> beam.Map(payout_totals).with_output_types(pa.Table)
        )
