"""What the first pass reports: findings of every kind but ``duplicate_charge``, the matched
pairs, and the succeeded charges the second pass groups by order and idempotency key.

Each function reads the ledger and Stripe frames after :mod:`transforms.match_objects` gave
every row its outcome (``_outcome``), rank (``_rank``) and window position (``_pos``), and
the Stripe groups (one row per object and category, amounts summed). Findings use
``FINDING_SCHEMA``; ``id_keys`` is what their ``discrepancy_id`` hashes with their kind.
"""

from __future__ import annotations

import polars as pl

from transforms.match_window import WINDOW, MatchConfig

FINDING_SCHEMA = pl.Schema(
    {
        "kind": pl.String,
        "id_keys": pl.String,
        "order_id": pl.String,
        "stripe_object_id": pl.String,
        "ledger_amount": pl.Int64,
        "stripe_amount": pl.Int64,
        "currency": pl.String,
    }
)
CHARGE_SCHEMA = pl.Schema(
    {
        "group_kind": pl.String(),
        "group_key": pl.String(),
        "charge_id": pl.String(),
        "order_id": pl.String(),
        "first_seen": pl.Datetime("us", "UTC"),
        "ledger_amount": pl.Int64(),
        "ledger_currency": pl.String(),
        "stripe_amount": pl.Int64(),
        "stripe_currency": pl.String(),
    }
)
PAIR_KINDS = ("status_mismatch", "missing_in_stripe", "currency_mismatch", "amount_mismatch")


def _finding(kind: pl.Expr, keys: list[pl.Expr], **columns: pl.Expr) -> list[pl.Expr]:
    return [
        kind.alias("kind"),
        pl.concat_str(keys, separator="|").alias("id_keys"),
        *(expr.alias(name) for name, expr in columns.items()),
    ]


def pair_findings(led: pl.DataFrame) -> pl.DataFrame:
    rows = led.filter(
        (pl.col("_pos") == WINDOW) & (pl.col("_rank") == 0) & pl.col("_outcome").is_in(PAIR_KINDS)
    )
    return _ledger_findings(rows, pl.col("_outcome"), pl.col("_category"))


def duplicate_findings(led: pl.DataFrame) -> pl.DataFrame:
    """One finding per duplicated (object, event type), in the window of its second event."""
    rows = led.filter((pl.col("_pos") == WINDOW) & (pl.col("_rank") == 1))
    return _ledger_findings(rows, pl.lit("duplicate_in_ledger"), pl.col("event_type"))


def _ledger_findings(rows: pl.DataFrame, kind: pl.Expr, second_key: pl.Expr) -> pl.DataFrame:
    """Findings on ledger rows, identified by (stripe object, ``second_key``)."""
    return rows.select(
        _finding(
            kind,
            [pl.col("stripe_object_id"), second_key],
            order_id=pl.col("order_id"),
            stripe_object_id=pl.col("stripe_object_id"),
            ledger_amount=pl.col("amount"),
            stripe_amount=pl.col("_amount").abs(),
            currency=pl.col("currency"),
        )
    ).cast(FINDING_SCHEMA)


def missing_in_ledger(
    groups: pl.DataFrame, claims: pl.DataFrame, config: MatchConfig
) -> pl.DataFrame:
    """Unclaimed Stripe groups, in the window of their first balance transaction."""
    unclaimed = groups.join(claims, on=["_object", "_pcat"], how="anti").filter(
        config.in_window(pl.col("_created"))
    )
    return unclaimed.select(
        _finding(
            pl.lit("missing_in_ledger"),
            [pl.col("_object"), pl.col("_category")],
            order_id=pl.col("_order_id"),
            stripe_object_id=pl.col("source_id"),
            ledger_amount=pl.lit(None, dtype=pl.Int64),
            stripe_amount=pl.col("_amount").abs(),
            currency=pl.col("_currency"),
        )
    ).cast(FINDING_SCHEMA)


def match_pairs(window_led: pl.DataFrame) -> pl.DataFrame:
    """The window's agreeing pairs (``RECON_MATCH_V1`` columns without run and window)."""
    rows = window_led.filter(pl.col("_outcome").is_in(["matched", "pending"]))
    return rows.select(
        "event_id",
        status=pl.col("_outcome"),
        event_type=pl.col("event_type"),
        order_id=pl.col("order_id"),
        stripe_object_id=pl.col("stripe_object_id"),
        reporting_category=pl.col("_category"),
        balance_transaction_id=pl.col("_bt_id"),
        stripe_rows=pl.col("_rows"),
        ledger_amount=pl.col("amount"),
        stripe_amount=pl.col("_amount"),
        stripe_fee=pl.col("_fee"),
        stripe_net=pl.col("_net"),
        currency=pl.col("currency"),
        occurred_at=pl.col("occurred_at"),
        created=pl.col("_created"),
        available_on=pl.col("_available_on"),
        lag_ms=(pl.col("occurred_at") - pl.col("_created")).dt.total_milliseconds(),
    )


def succeeded_charges(led: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """Each succeeded charge once per order and idempotency key it belongs to: the ledger's
    primary ``charge.succeeded`` events and Stripe's unreversed charge groups, joined on the
    charge id so a charge both sides know counts once."""
    ledger_side = led.filter(
        (pl.col("_rank") == 0) & (pl.col("event_type") == "charge.succeeded")
    ).select(
        charge_id=pl.col("stripe_object_id"),
        l_order=pl.col("order_id"),
        l_key=pl.col("idempotency_key"),
        l_seen=pl.col("occurred_at"),
        ledger_amount=pl.col("amount"),
        ledger_currency=pl.col("currency"),
    )
    reversed_charges = groups.filter(pl.col("_category") == "charge_failure").select("_object")
    stripe_side = (
        groups.filter(pl.col("_category") == "charge")
        .join(reversed_charges, on="_object", how="anti")
        .select(
            charge_id=pl.col("_object"),
            s_order=pl.col("_order_id"),
            s_key=pl.col("_idem"),
            s_seen=pl.col("_created"),
            stripe_amount=pl.col("_amount").abs(),
            stripe_currency=pl.col("_currency"),
        )
    )
    both = ledger_side.join(stripe_side, on="charge_id", how="full", coalesce=True).with_columns(
        first_seen=pl.min_horizontal("l_seen", "s_seen"),
        order_id=pl.coalesce("l_order", "s_order"),
    )
    parts = []
    for kind, mine, theirs in (
        ("order", "l_order", "s_order"),
        ("idempotency_key", "l_key", "s_key"),
    ):
        parts.append(both.filter(pl.col(mine).is_not_null()).with_columns(group_key=pl.col(mine)))
        parts.append(
            both.filter(
                pl.col(theirs).is_not_null() & pl.col(mine).ne_missing(pl.col(theirs))
            ).with_columns(group_key=pl.col(theirs))
        )
        parts[-2:] = [p.with_columns(group_kind=pl.lit(kind)) for p in parts[-2:]]
    return pl.concat(parts).select(CHARGE_SCHEMA.names()).cast(CHARGE_SCHEMA)
