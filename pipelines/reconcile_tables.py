"""The tables a reconciliation run derives after its pipeline: conservation, daily revenue,
and the run's own row. Pure functions over Arrow tables, shared by every warehouse."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

import polars as pl
import pyarrow as pa

from schemas.currencies import ISO_4217, exponent
from schemas.dq_result import CONSERVATION_V1
from schemas.tables import DAILY_REVENUE_V1

# How each matcher outcome counts in the conservation table.
FATE_OF_OUTCOME = {
    "matched": "matched",
    "pending": "pending",
    "amount_mismatch": "discrepancies",
    "currency_mismatch": "discrepancies",
    "status_mismatch": "discrepancies",
    "missing_in_stripe": "discrepancies",
    "missing_in_ledger": "discrepancies",
    "duplicate_in_ledger": "discrepancies",
}
UNKNOWN_CURRENCY = "unknown"
_SIDES = ("ledger", "stripe")
_FATES = ("matched", "discrepancies", "pending", "dead_letters", "other")


def conservation_table(
    counts: pa.Table,
    ledger_in: pl.DataFrame,
    stripe_in: pl.DataFrame,
    ledger_dropped: pl.DataFrame,
    stripe_dropped: pl.DataFrame,
) -> pa.Table:
    """CONSERVATION_V1, per currency: what came in, and where each record went.

    ``*_in``: the :func:`tally` of every record that entered the side, counted from the
    inputs themselves (staged rows, quarantined rows, dead letters), independently of the
    matcher; the fates come from the matcher's outcome counts plus what was dropped before
    it. ``*_dropped``: the tally of dead-lettered or quarantined records; a record whose
    currency could not be read counts under ``unknown`` with amount 0.
    """
    frames = []
    for side, entered, dropped in (
        ("ledger", ledger_in, ledger_dropped),
        ("stripe", stripe_in, stripe_dropped),
    ):
        frames.append(_named(entered, f"{side}_in"))
        frames.append(_named(dropped, f"{side}_dead_letters"))
        outcomes = pl.from_arrow(counts)
        assert isinstance(outcomes, pl.DataFrame)
        mine = outcomes.filter(pl.col("side") == side).with_columns(
            fate=pl.col("outcome").replace_strict(FATE_OF_OUTCOME, default="other")
        )
        for fate in ("matched", "discrepancies", "pending", "other"):
            part = mine.filter(pl.col("fate") == fate).select(
                "currency", pl.col("rows").alias("n"), pl.col("amount").alias("a")
            )
            frames.append(_named(part, f"{side}_{fate}"))
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.join(frame, on="currency", how="full", coalesce=True)
    columns = [f.name for f in CONSERVATION_V1 if f.name != "currency"]
    merged = merged.with_columns([pl.col(c).fill_null(0) for c in columns if c in merged.columns])
    for c in columns:
        if c not in merged.columns:
            merged = merged.with_columns(pl.lit(0, pl.Int64).alias(c))
    return merged.select(["currency", *columns]).sort("currency").to_arrow().cast(CONSERVATION_V1)


TALLY = {"currency": pl.String, "n": pl.Int64, "a": pl.Int64}


def tally(parts: Iterable[pa.Table | pa.RecordBatch | pl.DataFrame]) -> pl.DataFrame:
    """Records (``currency``, ``amount`` rows) and earlier tallies, as rows ``n`` and amount
    ``a`` per currency. ``parts`` may be a lazy iterator of batches: a day's staged rows are
    tallied batch by batch, never held whole. A record without a currency counts under
    ``unknown``, without an amount as 0."""
    frames = [pl.DataFrame(schema=TALLY)]
    for part in parts:
        if isinstance(part, pl.DataFrame):
            frames.append(part.select(TALLY.keys()).cast(TALLY))  # type: ignore[arg-type]
            continue
        rows = pl.from_arrow(part.select(["currency", "amount"]))
        assert isinstance(rows, pl.DataFrame)
        frames.append(
            rows.group_by(pl.col("currency").fill_null(UNKNOWN_CURRENCY)).agg(
                n=pl.len().cast(pl.Int64), a=pl.col("amount").fill_null(0).cast(pl.Int64).sum()
            )
        )
    return pl.concat(frames).group_by("currency").agg(pl.col("n").sum(), pl.col("a").sum())


def unreadable(records: int) -> pl.DataFrame:
    """The tally of records whose currency and amount could not be read at all."""
    rows = {"currency": [UNKNOWN_CURRENCY], "n": [records], "a": [0]} if records else {}
    return pl.DataFrame(rows, schema=TALLY)


def _named(part: pl.DataFrame, name: str) -> pl.DataFrame:
    return part.group_by("currency").agg(
        pl.col("n").sum().alias(name), pl.col("a").sum().alias(f"{name}_amount")
    )


_CATEGORY = {
    "charge": "gross",
    "refund": "refunds",
    "refund_failure": "refunds",
    "dispute": "disputes",
    "dispute_reversal": "disputes",
}


REVENUE_COLUMNS = ["created", "currency", "reporting_category", "amount", "fee", "net"]
_DAILY_SUMS = ("transactions", "gross", "refunds", "disputes", "fees", "net")


def revenue_sums(balance_transactions: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """Partial daily revenue of some balance transactions, per day and currency: added up
    by :func:`daily_revenue`, so a day's rows can be summed batch by batch."""
    frame = pl.from_arrow(balance_transactions.select(REVENUE_COLUMNS))
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        day=pl.col("created").dt.date(),
        bucket=pl.col("reporting_category").replace_strict(_CATEGORY, default="other"),
    )
    sums = [
        pl.col("amount").filter(pl.col("bucket") == b).sum().alias(b)
        for b in ("gross", "refunds", "disputes")
    ]
    return frame.group_by("day", "currency").agg(
        pl.len().cast(pl.Int64).alias("transactions"),
        *sums,
        pl.col("fee").sum().alias("fees"),
        pl.col("net").sum().alias("net"),
    )


def daily_revenue(parts: Iterable[pa.Table | pa.RecordBatch | pl.DataFrame]) -> pa.Table:
    """DAILY_REVENUE_V1 from every balance transaction of the days concerned (whole days:
    the caller passes the warehouse's facts for those days, not one window's rows), given as
    batches of rows (possibly a lazy iterator) or as :func:`revenue_sums` of them."""
    frames = [p if isinstance(p, pl.DataFrame) else revenue_sums(p) for p in parts]
    if not frames:
        return DAILY_REVENUE_V1.empty_table()
    daily = (
        pl.concat(frames)
        .group_by("day", "currency")
        .agg(pl.col(c).sum() for c in _DAILY_SUMS)
        .sort("day", "currency")
    )
    rows = daily.to_dicts()
    for row in rows:
        for name in ("gross", "refunds", "disputes", "fees", "net"):
            row[f"{name}_major"] = _major(row[name], row["currency"])
    return pa.Table.from_pylist(rows, schema=DAILY_REVENUE_V1)


def _major(minor: int, currency: str) -> Decimal:
    scale = exponent(currency) if currency in ISO_4217 else 2
    return Decimal(minor).scaleb(-scale).quantize(Decimal("0.001"))


RUN_STATUS = ("succeeded", "discrepancies_over_threshold", "data_quality_failed")


def run_row(
    *,
    run_id: str,
    window: tuple[datetime, datetime],
    started_at: datetime,
    finished_at: datetime,
    status: str,
    stripe_source: str,
    offsets: str,
    counts: dict,
    by_reason: dict,
    by_kind: dict,
    totals: pa.Table,
    dq_failures: int,
) -> dict:
    """One ``recon_runs`` row (JSON text for the maps, so every warehouse can store them)."""
    return {
        "run_id": run_id,
        "job": "reconcile",
        "window_start": window[0],
        "window_end": window[1],
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "stripe_source": stripe_source,
        "offsets": offsets,
        **counts,
        "dead_letters_by_reason": json.dumps(by_reason, sort_keys=True),
        "discrepancies_by_kind": json.dumps(by_kind, sort_keys=True),
        "totals": json.dumps(totals.to_pylist(), sort_keys=True),
        "dq_failures": dq_failures,
    }


RUN_BATCH_ID = "run"


def aggregate_dq_results(results: pa.Table) -> pa.Table:
    """One DQ_RESULT_V1 row per suite and expectation for the whole run.

    The pipeline validates batches whose boundaries depend on how Kafka and the runner
    happened to batch the rows, so per-batch rows differ between two runs of the same
    window; their sums do not. ``batch_id`` is ``run``; the sample keeps up to five
    unexpected values, sorted, without batch-relative row numbers.
    """
    grouped: dict[tuple, list[dict]] = {}
    keys = ("run_id", "suite", "dataset", "expectation", "columns", "on_failure", "validated_at")
    for row in results.to_pylist():
        grouped.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, rows in sorted(grouped.items(), key=lambda kv: repr(kv[0])):
        values = sorted(
            {
                json.dumps(s.get("value"), sort_keys=True, default=str)
                for r in rows
                for s in json.loads(r["unexpected_sample"] or "[]")
            }
        )
        observed = {r["observed_value"] for r in rows}
        errors = sorted(r["error"] for r in rows if r["error"])
        out.append(
            dict(zip(keys, key, strict=True))
            | {
                "batch_id": RUN_BATCH_ID,
                "success": all(r["success"] for r in rows),
                "unexpected_count": sum(r["unexpected_count"] or 0 for r in rows),
                "evaluated_count": sum(r["evaluated_count"] or 0 for r in rows),
                "batch_rows": sum(r["batch_rows"] or 0 for r in rows),
                "unexpected_sample": "[" + ", ".join(f'{{"value": {v}}}' for v in values[:5]) + "]",
                "observed_value": observed.pop() if len(observed) == 1 else None,
                "error": errors[0] if errors else None,
            }
        )
    return pa.Table.from_pylist(out, schema=results.schema)
