"""One row per payment request, assembled from its telemetry and its result; conversion.

A payment result v1 says how a request ended but not its cohort; the gateway's telemetry
attempts carry the cohort (country, payment method, card brand) but not the outcome. Each
decoded batch becomes partial ``fact_payment_requests`` rows (:func:`request_partials`);
:func:`reduce_requests` merges partial rows of the same request, in any grouping and any
order, to the same row (it is associative, commutative and idempotent). So a request whose
attempts and result arrive in different micro-batches, or twice, ends as one correct row,
and ``payment_conversion`` (:func:`conversion_rollup`) is computed from those rows.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.payments import PAYMENT_STATUSES
from schemas.telemetry import (
    CONVERSION_DROP_COLUMNS,
    FACT_PAYMENT_REQUESTS_V1,
    PAYMENT_CONVERSION_V1,
)

UNKNOWN = "?"
# Outcomes known from telemetry alone, when a request never got a result.
TELEMETRY_OUTCOMES = {"permanent": "dead_lettered", "give_up": "gave_up"}
FAILED = ("failed", "dead_lettered", "gave_up")
_FACT = FACT_PAYMENT_REQUESTS_V1
_PARTIAL_COLUMNS = [f.name for f in _FACT if f.name not in ("day", "run_id")]
# payment_conversion without the cohort drop columns (``pipelines.telemetry_cohorts`` adds them)
CONVERSION_COUNTS = pa.schema(
    [f for f in PAYMENT_CONVERSION_V1 if f.name not in CONVERSION_DROP_COLUMNS]
)
_FIRST = ["order_id", "gateway", "payment_method_type", "country", "card_brand", "amount",
          "currency"]  # fmt: skip


def partial_schema() -> pa.Schema:
    """The columns of a partial request row (a fact row without day and run_id)."""
    return pa.schema([_FACT.field(c) for c in _PARTIAL_COLUMNS])


def request_partials(table: pa.Table, kind: str) -> pa.Table:
    """Partial rows of a decoded ``telemetry`` (attempts) or ``results`` batch."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if kind == "telemetry":
        frame = frame.filter(pl.col("kind") == "attempt").select(
            "request_id", "order_id", "gateway", "payment_method_type", "country",
            "card_brand", "amount", "currency",
            pl.col("outcome").replace_strict(TELEMETRY_OUTCOMES, default=None).alias("status"),
            pl.lit(None, pl.String).alias("error_code"),
            pl.col("attempt").cast(pl.Int64).alias("calls"),
            pl.col("at").alias("first_call_at"),
            pl.lit(None).cast(pl.Datetime("us", "UTC")).alias("decided_at"),
        )  # fmt: skip
    else:
        frame = frame.select(
            "request_id", "order_id", "gateway",
            *(pl.lit(None, pl.String).alias(c) for c in ("payment_method_type", "country",
                                                         "card_brand")),
            "amount", "currency", "status", "error_code",
            pl.col("attempts").cast(pl.Int64).alias("calls"),
            pl.lit(None).cast(pl.Datetime("us", "UTC")).alias("first_call_at"),
            pl.col("processed_at").alias("decided_at"),
        )  # fmt: skip
    return frame.filter(pl.col("request_id").is_not_null()).to_arrow().cast(partial_schema())


def reduce_requests(partials: pa.Table, run_id: str) -> pa.Table:
    """One ``FACT_PAYMENT_REQUESTS_V1`` row per request: the outcome of its result (else of
    its telemetry), its cohort and amount from whichever row has them, its first call, its
    most calls. ``partials`` may include rows already in the warehouse (their ``day`` and
    ``run_id`` are recomputed)."""
    frame = pl.from_arrow(partials.select(_PARTIAL_COLUMNS).cast(partial_schema()))
    assert isinstance(frame, pl.DataFrame)
    rank = (
        pl.when(pl.col("status").is_in(list(PAYMENT_STATUSES)))
        .then(2)
        .when(pl.col("status").is_not_null())
        .then(1)
        .otherwise(0)
    )
    ordered = frame.with_columns(rank=rank).sort(
        ["request_id", "rank", "decided_at", "status", "error_code"],
        descending=[False, True, True, False, False],
        nulls_last=True,
    )
    reduced = ordered.group_by("request_id", maintain_order=True).agg(
        *(pl.col(c).drop_nulls().first() for c in _FIRST),
        pl.col("status").first(),
        pl.col("error_code").first(),
        pl.col("calls").max(),
        pl.col("first_call_at").min(),
        pl.col("decided_at").first(),
    )
    reduced = reduced.with_columns(
        day=pl.coalesce("first_call_at", "decided_at").dt.date(),
        run_id=pl.lit(run_id),
    ).sort("request_id")
    return reduced.select(_FACT.names).to_arrow().cast(_FACT)


def conversion_rollup(facts: pa.Table, run_id: str) -> pa.Table:
    """``PAYMENT_CONVERSION_V1`` rows per day and cohort of these request rows, without the
    drop columns (``CONVERSION_COUNTS``)."""
    frame = pl.from_arrow(facts.select(["day", "country", "payment_method_type", "card_brand",
                                        "status"]))  # fmt: skip
    assert isinstance(frame, pl.DataFrame)
    status = pl.col("status")
    rolled = (
        frame.with_columns(
            pl.col(c).fill_null(UNKNOWN) for c in ("country", "payment_method_type", "card_brand")
        )
        .group_by("day", "country", "payment_method_type", "card_brand")
        .agg(
            pl.len().cast(pl.Int64).alias("attempts"),
            (status == "succeeded").sum().cast(pl.Int64).alias("successes"),
            status.is_in(list(FAILED)).sum().cast(pl.Int64).alias("failures"),
        )
        .with_columns(
            pending=pl.col("attempts") - pl.col("successes") - pl.col("failures"),
            conversion=pl.col("successes") / pl.col("attempts"),
            run_id=pl.lit(run_id),
        )
        .sort("day", "country", "payment_method_type", "card_brand")
    )
    return rolled.select(CONVERSION_COUNTS.names).to_arrow().cast(CONVERSION_COUNTS)
