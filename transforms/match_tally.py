"""Counts per outcome and money totals per currency, for each side of a run.

Both are sums, so per-bucket partial tables are merged by adding them up
(:func:`merge_counts`, :func:`merge_totals`); the result is the same however the records were
bucketed.

Totals use the balance's sign convention on both sides so they compare line by line:
charges positive, refunds and disputes negative. The ledger's amounts are magnitudes, so its
refunds and disputes are negated here; it records no fees, so its ``fee`` and ``net`` are null.
"""

from __future__ import annotations

import polars as pl

COUNT_SCHEMA = pl.Schema(
    {
        "side": pl.String,
        "outcome": pl.String,
        "currency": pl.String,
        "rows": pl.Int64,
        "amount": pl.Int64,
    }
)
TOTALS_SCHEMA = pl.Schema(
    {
        "side": pl.String,
        "currency": pl.String,
        "rows": pl.Int64,
        "charges": pl.Int64,
        "refunds": pl.Int64,
        "disputes": pl.Int64,
        "other": pl.Int64,
        "gross": pl.Int64,
        "fee": pl.Int64,
        "net": pl.Int64,
    }
)
_STRIPE_PARTS = {
    "charges": ("charge", "charge_failure"),
    "refunds": ("refund", "refund_failure"),
    "disputes": ("dispute", "dispute_reversal"),
}


def outcome_counts(
    side: str, dropped: pl.DataFrame, margin: pl.DataFrame, window: pl.DataFrame
) -> pl.DataFrame:
    """Rows and amounts per (outcome, currency): dropped and margin rows are labelled by
    their ``_pos``, window rows by their ``_outcome``."""
    labelled = pl.concat(
        [
            dropped.select("currency", "amount", outcome=pl.col("_pos")),
            margin.select("currency", "amount", outcome=pl.col("_pos")),
            window.select("currency", "amount", outcome=pl.col("_outcome")),
        ]
    )
    return (
        labelled.group_by("outcome", "currency")
        .agg(rows=pl.len().cast(pl.Int64), amount=pl.col("amount").sum())
        .with_columns(side=pl.lit(side))
        .select(COUNT_SCHEMA.names())
        .cast(COUNT_SCHEMA)
    )


def ledger_totals(window: pl.DataFrame) -> pl.DataFrame:
    """Money of the window's distinct ledger events, per currency."""

    def total(event_types: tuple[str, ...], sign: int) -> pl.Expr:
        return sign * pl.col("amount").filter(pl.col("event_type").is_in(event_types)).sum()

    return (
        window.group_by("currency")
        .agg(
            rows=pl.len().cast(pl.Int64),
            charges=total(("charge.succeeded",), 1),
            refunds=total(("refund.succeeded",), -1),
            disputes=total(("dispute.created",), -1) + total(("dispute.funds_reinstated",), 1),
            other=pl.lit(0, dtype=pl.Int64),
        )
        .with_columns(
            side=pl.lit("ledger"),
            gross=pl.col("charges") + pl.col("refunds") + pl.col("disputes"),
            fee=pl.lit(None, dtype=pl.Int64),
            net=pl.lit(None, dtype=pl.Int64),
        )
        .select(TOTALS_SCHEMA.names())
        .cast(TOTALS_SCHEMA)
    )


def stripe_totals(window: pl.DataFrame) -> pl.DataFrame:
    """Money of the window's distinct balance transactions, per currency."""
    known = [c for categories in _STRIPE_PARTS.values() for c in categories]
    parts = {
        name: pl.col("amount").filter(pl.col("_category").is_in(categories)).sum()
        for name, categories in _STRIPE_PARTS.items()
    }
    other = pl.col("amount").filter(~pl.col("_category").is_in(known).fill_null(False)).sum()
    return (
        window.group_by("currency")
        .agg(
            rows=pl.len().cast(pl.Int64),
            **parts,
            other=other,
            gross=pl.col("amount").sum(),
            fee=pl.col("fee").sum(),
            net=pl.col("net").sum(),
        )
        .with_columns(side=pl.lit("stripe"))
        .select(TOTALS_SCHEMA.names())
        .cast(TOTALS_SCHEMA)
    )


def merge_counts(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Adds up partial count tables; sorted by side, outcome, currency."""
    frame = pl.concat([COUNT_SCHEMA.to_frame(), *parts])
    return (
        frame.group_by("side", "outcome", "currency")
        .agg(pl.col("rows").sum(), pl.col("amount").sum())
        .sort("side", "outcome", "currency")
        .cast(COUNT_SCHEMA)
    )


def merge_totals(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Adds up partial totals; ``fee``/``net`` stay null where every part has them null."""
    frame = pl.concat([TOTALS_SCHEMA.to_frame(), *parts])
    sums = [pl.col(c).sum() for c in ("rows", "charges", "refunds", "disputes", "other", "gross")]
    nullable = [
        pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).otherwise(None).alias(c)
        for c in ("fee", "net")
    ]
    return (
        frame.group_by("side", "currency")
        .agg(*sums, *nullable)
        .select(TOTALS_SCHEMA.names())
        .sort("side", "currency")
        .cast(TOTALS_SCHEMA)
    )
