"""The per-bucket steps of the reconciliation, shared by :func:`transforms.match.reconcile`
and the Beam composite, so both compute exactly the same thing.

A bucket is the set of records whose key hashes to it: the Stripe object for the first pass
(ledger ``stripe_object_id``, Stripe ``source_id`` or, without a source, the balance
transaction's own id), ``group_kind|group_key`` for the duplicate-charge pass. The hash is
polars' with a fixed seed: stable within a polars version, which is all a run needs (every
worker of a run has the same environment; ids never depend on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.discrepancy import DISCREPANCY_V1, KINDS
from schemas.ledger_event import LEDGER_EVENT_V1
from schemas.match import RECON_COUNT_V1, RECON_MATCH_V1, RECON_TOTALS_V1
from transforms.match_charges import find_double_charges
from transforms.match_objects import (
    LEDGER_COLUMNS,
    PROVENANCE,
    REPAIR_OF_KEY,
    STRIPE_COLUMNS,
    classify_objects,
    stripe_object,
)
from transforms.match_rules import discrepancy_id, repair_hint, severity_expr
from transforms.match_window import MatchConfig

_HASH_SEED = 20261120
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}


class BucketOutput(NamedTuple):
    discrepancies: pa.Table
    matches: pa.Table
    pending: pa.Table
    counts: pa.Table
    totals: pa.Table
    charges: pl.DataFrame


_LEDGER_INPUT = pa.schema([LEDGER_EVENT_V1.field(c) for c in LEDGER_COLUMNS])
_STRIPE_INPUT = pa.schema([BALANCE_TRANSACTION_V1.field(c) for c in STRIPE_COLUMNS])


def project_ledger(table: pa.Table) -> pa.Table:
    """The columns the matcher reads (provenance too, when present), and ``repair_of``: the
    discrepancy a repair event answers (``metadata[payrecon.repair_of]``), else null."""
    names = [*LEDGER_COLUMNS, *(c for c in PROVENANCE if c in table.column_names)]
    if "metadata" in table.column_names:
        repair_of = pc.map_lookup(table.column("metadata"), pa.scalar(REPAIR_OF_KEY), "first")
    else:
        repair_of = pa.nulls(table.num_rows, pa.string())
    return table.select(names).append_column("repair_of", repair_of)


def project_stripe(table: pa.Table) -> pa.Table:
    return table.select(list(STRIPE_COLUMNS))


def bucket_key(side: str) -> pl.Expr:
    """What each side is bucketed by: the Stripe object, or the duplicate-charge group."""
    if side == "ledger":
        return pl.col("stripe_object_id")
    if side == "stripe":
        return stripe_object()
    return pl.concat_str([pl.col("group_kind"), pl.col("group_key")], separator="|")


def split_by_bucket(table: pa.Table, side: str, buckets: int) -> dict[int, pa.Table]:
    """``{bucket: rows}`` for the non-empty buckets; one bucket when ``buckets`` is 1."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    if table.num_rows == 0:
        return {}
    if buckets == 1:
        return {0: table}
    frame = polars_frame(table)
    bucket = (bucket_key(side).hash(_HASH_SEED) % buckets).cast(pl.Int64).alias("_bucket")
    parts = frame.with_columns(bucket).partition_by("_bucket", as_dict=True, include_key=False)
    return {int(key[0]): part.to_arrow() for key, part in parts.items()}


def classify_bucket(
    ledger: pa.Table | None, stripe: pa.Table | None, config: MatchConfig
) -> BucketOutput:
    """First pass over one bucket's records; finished rows except the charges."""
    found = classify_objects(
        empty_or_frame(ledger, _LEDGER_INPUT), empty_or_frame(stripe, _STRIPE_INPUT), config
    )
    matches = found.matches.sort("event_id")
    return BucketOutput(
        to_discrepancies(found.findings, config),
        match_rows(matches.filter(pl.col("status") == "matched"), config),
        match_rows(matches.filter(pl.col("status") == "pending"), config),
        to_arrow(found.counts, RECON_COUNT_V1),
        to_arrow(found.totals, RECON_TOTALS_V1),
        found.charges,
    )


def double_charges(charges: pa.Table, config: MatchConfig) -> pa.Table:
    """Second pass over one bucket of the charges table."""
    return to_discrepancies(find_double_charges(polars_frame(charges), config), config)


def to_discrepancies(findings: pl.DataFrame, config: MatchConfig) -> pa.Table:
    """Findings as ``DISCREPANCY_V1`` rows: ids, severity, delta, hint, run and window."""
    kinds = findings.get_column("kind").to_list()
    keys = findings.get_column("id_keys").to_list()
    objects = findings.get_column("stripe_object_id").to_list()
    frame = findings.with_columns(
        discrepancy_id=pl.Series([discrepancy_id(k, v) for k, v in zip(kinds, keys, strict=True)]),
        repair_hint=pl.Series(
            [repair_hint(o or v.split("|", 1)[0]) for o, v in zip(objects, keys, strict=True)],
            dtype=pl.String,
        ),
        severity=severity_expr(),
        amount_delta=pl.col("stripe_amount") - pl.col("ledger_amount"),
        run_id=pl.lit(config.run_id),
        detected_at=pl.lit(config.detected_at),
        window_start=pl.lit(config.window_start),
        window_end=pl.lit(config.window_end),
    )
    return to_arrow(frame, DISCREPANCY_V1)


def sort_discrepancies(table: pa.Table) -> pa.Table:
    """Kinds in DESIGN.md's order, then object, order and id: a stable presentation."""
    frame = polars_frame(table)
    order = pl.col("kind").replace_strict(_KIND_ORDER, return_dtype=pl.Int64)
    frame = frame.sort(order, "stripe_object_id", "order_id", "discrepancy_id", nulls_last=True)
    return to_arrow(frame, DISCREPANCY_V1)


def match_rows(matches: pl.DataFrame, config: MatchConfig) -> pa.Table:
    frame = matches.with_columns(
        run_id=pl.lit(config.run_id),
        detected_at=pl.lit(config.detected_at),
        window_start=pl.lit(config.window_start),
        window_end=pl.lit(config.window_end),
    )
    return to_arrow(frame, RECON_MATCH_V1)


def sorted_matches(parts: list[pa.Table]) -> pa.Table:
    """One table sorted by ``event_id`` (each bucket's part is sorted already)."""
    if len(parts) == 1:
        return parts[0]
    frame = polars_frame(concat_tables(parts, RECON_MATCH_V1))
    return to_arrow(frame.sort("event_id"), RECON_MATCH_V1)


def empty_or_frame(table: pa.Table | None, schema: pa.Schema) -> pl.DataFrame:
    return polars_frame(table if table is not None else schema.empty_table())


def polars_frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    arrow = frame.select(schema.names).to_arrow()
    return pa.Table.from_arrays([arrow.column(f.name).cast(f.type) for f in schema], schema=schema)


def concat_tables(tables: Iterable[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([schema.empty_table(), *tables])
