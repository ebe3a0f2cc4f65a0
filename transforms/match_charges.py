"""Second pass of the reconciliation: ``duplicate_charge``, one order (or idempotency key)
with more than one distinct succeeded charge.

Its input is the ``charges`` table of the first pass: each succeeded charge (known to the
ledger, to Stripe, or both) once per order and once per idempotency key it belongs to. A
group needs all of its charges, which the first pass cannot promise (it buckets by object),
so this pass groups by ``(group_kind, group_key)`` instead; in Beam it is a second keyed
step over these small rows.

- An order with two or more distinct charge ids is one finding, keyed by the order.
- An idempotency key with two or more distinct charges is a finding only when they belong to
  different orders (one order's double charge is already reported by its order).
- A finding is reported in the window of the charge that made it a double: the second
  charge by first sighting (the earlier of the ledger's ``occurred_at`` and Stripe's
  ``created``, ties by charge id). Its amounts and id are that charge's.
"""

from __future__ import annotations

import polars as pl

from transforms.match_findings import FINDING_SCHEMA
from transforms.match_window import MatchConfig

GROUP = ["group_kind", "group_key"]


def find_double_charges(charges: pl.DataFrame, config: MatchConfig) -> pl.DataFrame:
    """``FINDING_SCHEMA`` rows of kind ``duplicate_charge`` owned by the window."""
    several = charges.filter(pl.len().over(GROUP) > 1)
    several = several.filter(
        (pl.col("group_kind") == "order") | (pl.col("order_id").n_unique().over(GROUP) > 1)
    )
    second = (
        several.sort([*GROUP, "first_seen", "charge_id"])
        .with_columns(_rank=pl.int_range(pl.len()).over(GROUP))
        .filter((pl.col("_rank") == 1) & config.in_window(pl.col("first_seen")))
    )
    return second.select(
        kind=pl.lit("duplicate_charge"),
        id_keys=pl.concat_str(GROUP, separator="|"),
        order_id=pl.when(pl.col("group_kind") == "order")
        .then(pl.col("group_key"))
        .otherwise(pl.col("order_id")),
        stripe_object_id=pl.col("charge_id"),
        ledger_amount=pl.col("ledger_amount"),
        stripe_amount=pl.col("stripe_amount"),
        currency=pl.coalesce("ledger_currency", "stripe_currency"),
    ).cast(FINDING_SCHEMA)
