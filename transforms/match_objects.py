"""First pass of the reconciliation: everything decidable from one Stripe object's records.

Input: the ledger events and the Stripe balance transactions that name one set of objects
(all of them, or one bucket's: every record of an object is in the same bucket). The object
of a ledger event is its ``stripe_object_id``; of a balance transaction, its ``source_id``
(its own id when it has no source). Output: each record's outcome, the findings of every
kind but ``duplicate_charge``, the matched pairs, and the charges that the second pass
(:mod:`transforms.match_charges`) groups by order and idempotency key.

How records pair up (rules in :mod:`transforms.match_rules`):

1. Redelivered copies (a second row with the same ``event_id`` / ``balance_transaction_id``)
   are dropped. Ledger events naming the same object with the same ``event_type`` are
   duplicates: the first (by ``occurred_at``, then ``event_id``) is the primary, the others
   are ``duplicate_in_ledger`` and are not compared with Stripe.
2. Stripe rows are grouped by (object, category); a group's amounts are summed.
3. A primary money-moving event pairs with the group of (its object, its category):
   ``status_mismatch`` if Stripe reversed that money (a ``charge_failure`` or
   ``refund_failure`` row), else ``missing_in_stripe`` without a group, else
   ``currency_mismatch``, ``amount_mismatch`` (magnitudes), ``pending`` (Stripe's funds not
   yet available) or ``matched``.
4. A primary failure event with an unreversed group of its category is ``status_mismatch``,
   else ``failed`` (both sides agree no money moved).
5. A Stripe group no primary money-moving or failure event claims is ``missing_in_ledger``.
   This refines DESIGN.md's "whose source object no ledger event names" to (object,
   category): a dispute reversal the ledger never recorded is reported even when the ledger
   names the dispute. Informational events (``dispute.closed`` ...) claim nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from transforms.match_findings import (
    duplicate_findings,
    match_pairs,
    missing_in_ledger,
    pair_findings,
    succeeded_charges,
)
from transforms.match_rules import (
    FAILURES,
    MONEY_MOVING,
    MOVED_CATEGORIES,
    REVERSALS,
    TYPE_TO_CATEGORY,
)
from transforms.match_tally import ledger_totals, outcome_counts, stripe_totals
from transforms.match_window import OUTSIDE, WINDOW, MatchConfig

LEDGER_COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "order_id",
    "stripe_object_id",
    "amount",
    "currency",
    "idempotency_key",
)
PROVENANCE = ("kafka_topic", "kafka_partition", "kafka_offset")
# A repair event (``payrecon repair``) names the discrepancy it answers in its metadata.
REPAIR_OF_KEY = "payrecon.repair_of"
STRIPE_COLUMNS = (
    "balance_transaction_id",
    "source_id",
    "type",
    "reporting_category",
    "amount",
    "fee",
    "net",
    "currency",
    "created",
    "available_on",
    "status",
    "order_id",
    "idempotency_key",
    "origin",
)


class ObjectFindings(NamedTuple):
    findings: pl.DataFrame  # FINDING_SCHEMA
    matches: pl.DataFrame  # pairs the window owns, outcome matched or pending
    counts: pl.DataFrame  # side, outcome, currency, rows, amount
    totals: pl.DataFrame  # see transforms.match_tally
    charges: pl.DataFrame  # CHARGE_SCHEMA


def stripe_object() -> pl.Expr:
    """The object a balance transaction belongs to (its own id when it has no source)."""
    return pl.coalesce(pl.col("source_id"), pl.col("balance_transaction_id"))


def classify_objects(
    ledger: pl.DataFrame, stripe: pl.DataFrame, config: MatchConfig
) -> ObjectFindings:
    """The first pass over all records of a set of objects (see the module docstring)."""
    led, led_dropped = _prepare_ledger(ledger, config)
    bts, bts_dropped = _prepare_stripe(stripe, config)
    groups = _stripe_groups(bts)
    led = _ledger_outcomes(led, _pair_side(groups))
    claims = _claims(led)
    bts = _stripe_outcomes(bts, claims)
    findings = pl.concat(
        [pair_findings(led), duplicate_findings(led), missing_in_ledger(groups, claims, config)],
        how="vertical",
    )
    window_led = led.filter(pl.col("_pos") == WINDOW)
    window_bts = bts.filter(pl.col("_pos") == WINDOW)
    counts = pl.concat(
        [
            outcome_counts("ledger", led_dropped, led.filter(pl.col("_pos") != WINDOW), window_led),
            outcome_counts("stripe", bts_dropped, bts.filter(pl.col("_pos") != WINDOW), window_bts),
        ]
    )
    totals = pl.concat([ledger_totals(window_led), stripe_totals(window_bts)])
    return ObjectFindings(
        findings, match_pairs(window_led), counts, totals, succeeded_charges(led, groups)
    )


# -- preparing each side ----------------------------------------------------------------


def _dedupe(frame: pl.DataFrame, key: str, order: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keeps the first row per ``key`` (by ``order``); returns (kept, dropped copies)."""
    if frame.get_column(key).n_unique() == frame.height:
        return frame, frame.clear()
    frame = frame.sort([key, *order], nulls_last=True)
    first = pl.col(key).is_first_distinct()
    return frame.filter(first), frame.filter(~first)


def _as_redelivered(copies: pl.DataFrame) -> pl.DataFrame:
    """Dropped copies count as ``redelivered`` in the window; in the margin, as margin."""
    label = pl.when(pl.col("_pos") == WINDOW).then(pl.lit("redelivered"))
    return copies.with_columns(_pos=label.otherwise(pl.col("_pos")))


def _prepare_ledger(ledger: pl.DataFrame, config: MatchConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    provenance = [c for c in PROVENANCE if c in ledger.columns]
    repair = pl.col("repair_of").is_not_null() if "repair_of" in ledger.columns else pl.lit(False)
    frame = ledger.select([*LEDGER_COLUMNS, *provenance], _repair=repair).with_columns(
        _pos=config.position(pl.col("occurred_at"))
    )
    outside = frame.filter(pl.col("_pos") == OUTSIDE)
    kept, copies = _dedupe(frame.filter(pl.col("_pos") != OUTSIDE), "event_id", provenance)
    kept, superseded = _superseded_by_repairs(kept)
    dropped = pl.concat([outside, _as_redelivered(copies), superseded])
    categories = {**MONEY_MOVING, **FAILURES}
    kept = kept.with_columns(
        _category=pl.col("event_type").replace_strict(
            categories, default=None, return_dtype=pl.String
        ),
        _role=pl.when(pl.col("event_type").is_in(list(MONEY_MOVING)))
        .then(pl.lit("move"))
        .when(pl.col("event_type").is_in(list(FAILURES)))
        .then(pl.lit("fail"))
        .otherwise(pl.lit("info")),
    )
    return _rank_duplicates(kept), dropped


def _superseded_by_repairs(led: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Once an object was repaired, its repair events are the ledger's account of it: the
    object's other events step aside (outcome ``superseded``, not discrepancies), so a
    corrected amount, status or a duplicate is compared with Stripe once, as repaired."""
    if not led.get_column("_repair").any():
        return led, led.clear()
    repaired = pl.col("_repair").any().over("stripe_object_id") & ~pl.col("_repair")
    superseded = led.filter(repaired).with_columns(
        _pos=pl.when(pl.col("_pos") == WINDOW).then(pl.lit("superseded")).otherwise("_pos")
    )
    return led.filter(~repaired), superseded


def _rank_duplicates(led: pl.DataFrame) -> pl.DataFrame:
    """``_rank``: 0 for the primary event of (object, event type), 1.. for its duplicates."""
    keys = ["stripe_object_id", "event_type"]
    several = led.filter(pl.len().over(keys) > 1)
    if several.is_empty():
        return led.with_columns(_rank=pl.lit(0, dtype=pl.Int64))
    ranked = several.sort([*keys, "occurred_at", "event_id"]).select(
        "event_id", _rank=pl.int_range(pl.len(), dtype=pl.Int64).over(keys)
    )
    return led.join(ranked, on="event_id", how="left").with_columns(pl.col("_rank").fill_null(0))


def _prepare_stripe(stripe: pl.DataFrame, config: MatchConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = stripe.select(STRIPE_COLUMNS).with_columns(
        _pos=config.position(pl.col("created")), _object=stripe_object()
    )
    outside = frame.filter(pl.col("_pos") == OUTSIDE)
    kept, copies = _dedupe(
        frame.filter(pl.col("_pos") != OUTSIDE), "balance_transaction_id", ["origin", "created"]
    )
    dropped = pl.concat([outside, _as_redelivered(copies)])
    category = pl.coalesce(
        pl.col("reporting_category"),
        pl.col("type").replace_strict(TYPE_TO_CATEGORY, default=None, return_dtype=pl.String),
    )
    kept = kept.with_columns(_category=category).with_columns(
        _scope=pl.when(pl.col("_category").is_in(MOVED_CATEGORIES))
        .then(pl.lit("move"))
        .when(pl.col("_category").is_in(list(REVERSALS)))
        .then(pl.lit("reversal"))
        .otherwise(pl.lit("out")),
        # The category a row pairs with: its own, or the one a reversal undoes.
        _pcat=pl.col("_category").replace(REVERSALS),
    )
    return kept, dropped


def _stripe_groups(bts: pl.DataFrame) -> pl.DataFrame:
    """One row per (object, category) of the in-scope Stripe rows, amounts summed; ``first``
    means the first balance transaction by (created, id)."""
    return (
        bts.filter(pl.col("_scope") != "out")
        .sort("created", "balance_transaction_id")
        .group_by(["_object", "_category"])
        .agg(
            pl.col("_scope").first(),
            pl.col("_pcat").first(),
            pl.col("source_id").first(),
            pl.col("balance_transaction_id").first().alias("_bt_id"),
            pl.col("created").first().alias("_created"),
            pl.col("available_on").max().alias("_available_on"),
            pl.col("amount").sum().alias("_amount"),
            pl.col("fee").sum().alias("_fee"),
            pl.col("net").sum().alias("_net"),
            pl.len().cast(pl.Int64).alias("_rows"),
            pl.col("currency").first().alias("_currency"),
            (pl.col("status") == "pending").any().alias("_pending"),
            pl.col("order_id").drop_nulls().first().alias("_order_id"),
            pl.col("idempotency_key").drop_nulls().first().alias("_idem"),
        )
    )


def _pair_side(groups: pl.DataFrame) -> pl.DataFrame:
    """Per (object, category a ledger event expects): the money group and a reversal flag."""
    # Only what a ledger row needs: the join copies these columns onto every event.
    moved = groups.filter(pl.col("_scope") == "move").drop(
        "_scope", "_category", "source_id", "_order_id", "_idem"
    )
    reversed_ = (
        groups.filter(pl.col("_scope") == "reversal")
        .select("_object", "_pcat", _reversed=pl.lit(True))
        .unique(["_object", "_pcat"])
    )
    return moved.join(reversed_, on=["_object", "_pcat"], how="full", coalesce=True)


# -- outcomes ---------------------------------------------------------------------------


def _ledger_outcomes(led: pl.DataFrame, pair_side: pl.DataFrame) -> pl.DataFrame:
    led = led.join(
        pair_side,
        left_on=["stripe_object_id", "_category"],
        right_on=["_object", "_pcat"],
        how="left",
    )
    reversed_ = pl.col("_reversed").fill_null(False)
    has_group = pl.col("_bt_id").is_not_null()
    move = (
        pl.when(reversed_)
        .then(pl.lit("status_mismatch"))
        .when(~has_group)
        .then(pl.lit("missing_in_stripe"))
        .when(pl.col("currency") != pl.col("_currency"))
        .then(pl.lit("currency_mismatch"))
        .when(pl.col("amount") != pl.col("_amount").abs())
        .then(pl.lit("amount_mismatch"))
        .when(pl.col("_pending"))
        .then(pl.lit("pending"))
        .otherwise(pl.lit("matched"))
    )
    fail = (
        pl.when(has_group & ~reversed_).then(pl.lit("status_mismatch")).otherwise(pl.lit("failed"))
    )
    outcome = (
        pl.when(pl.col("_rank") > 0)
        .then(pl.lit("duplicate_in_ledger"))
        .when(pl.col("_role") == "move")
        .then(move)
        .when(pl.col("_role") == "fail")
        .then(fail)
        .otherwise(pl.lit("informational"))
    )
    return led.with_columns(_outcome=outcome)


def _claims(led: pl.DataFrame) -> pl.DataFrame:
    """The ledger's claim on each (object, category): a primary money-moving event's outcome,
    else a primary failure event's (there is at most one of each)."""
    primary = led.filter(pl.col("_rank") == 0).select(
        _object=pl.col("stripe_object_id"),
        _pcat=pl.col("_category"),
        _claim=pl.col("_outcome"),
        _role=pl.col("_role"),
    )
    moves = primary.filter(pl.col("_role") == "move")
    fails = primary.filter(pl.col("_role") == "fail").join(
        moves, on=["_object", "_pcat"], how="anti"
    )
    return pl.concat([moves, fails]).drop("_role")


def _stripe_outcomes(bts: pl.DataFrame, claims: pl.DataFrame) -> pl.DataFrame:
    bts = bts.join(claims, on=["_object", "_pcat"], how="left")
    outcome = (
        pl.when(pl.col("_scope") == "out")
        .then(pl.lit("out_of_scope"))
        .when(pl.col("_claim").is_not_null())
        .then(pl.col("_claim"))
        .otherwise(pl.lit("missing_in_ledger"))
    )
    return bts.with_columns(_outcome=outcome)
