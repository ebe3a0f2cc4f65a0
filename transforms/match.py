"""Matching the ledger with Stripe and classifying every difference.

:func:`reconcile` is the whole computation as a pure function over Arrow tables (testable
without Beam); :class:`MatchAndClassify` is the same computation as a Beam composite that
shards it by key hash. Both give identical results for any number of buckets.

Inputs: ledger events (``DECODED_LEDGER_EVENT`` or ``LEDGER_EVENT_V1`` rows) with
``occurred_at`` in ``[window_start - margin, window_end + margin)``, and Stripe balance
transactions (``BALANCE_TRANSACTION_V1``) created in the same range (rows outside it are
ignored and counted as ``outside_read_range``). Outputs (:class:`ReconResult`):

- ``discrepancies``: ``DISCREPANCY_V1`` rows of the window, each kind of DESIGN.md (rules in
  :mod:`transforms.match_objects`, :mod:`transforms.match_charges`; severity, ids and repair
  hints in :mod:`transforms.match_rules`). Amounts are magnitudes; ``amount_delta`` is
  ``stripe_amount - ledger_amount``, null when a side is missing; ``currency`` is the
  ledger's, else Stripe's.
- ``matches`` and ``pending``: ``RECON_MATCH_V1`` pairs owned by the window, the latter
  with Stripe's funds not yet available (``status`` pending). Pending pairs are kept apart
  from matches; they are not discrepancies. (A pending balance transaction that disagrees
  with the ledger is still reported as a discrepancy, as the generator's answer key wants.)
- ``counts``: ``RECON_COUNT_V1``, rows and amounts per side, outcome and currency.
- ``totals``: ``RECON_TOTALS_V1``, the window's money per side and currency.

Ownership: a record belongs to the window of its own time. A pair (and its finding) belongs
to its ledger event's window, ``missing_in_ledger`` to its balance transaction's,
``duplicate_in_ledger`` and ``duplicate_charge`` to the record that made the duplicate.
Records in the margins are matched with, never reported, so consecutive windows never
report a record twice.

Conservation (checked by :func:`conservation_problems`), per side and currency, in rows
and in amounts:

    input rows = outside_read_range + margin + rows in the window
    ledger rows in the window = redelivered + matched + pending + amount_mismatch
        + currency_mismatch + status_mismatch + missing_in_stripe + duplicate_in_ledger
        + failed + informational
    stripe rows in the window = redelivered + matched + pending + amount_mismatch
        + currency_mismatch + status_mismatch + failed + missing_in_ledger + out_of_scope

``duplicate_charge`` is an order-level finding over rows counted elsewhere, so it is not a
row outcome. With the decoder's dead letters, ledger messages read = dead letters + the
ledger input here.

Bucketing: the first pass is keyed by the Stripe object (ledger ``stripe_object_id``,
Stripe ``source_id``), which decides every kind but ``duplicate_charge`` within a bucket,
and needs no order id on the Stripe side (reports and API rows often lack one). The first
pass emits each succeeded charge once per order and idempotency key; a second keyed pass
groups those small rows to find double charges.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import polars as pl
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas.discrepancy import DISCREPANCY_V1
from schemas.match import RECON_COUNT_V1, RECON_TOTALS_V1
from transforms.arrow_coder import ArrowTableCoder  # noqa: F401 (registers the pa.Table coder)
from transforms.join_spill import read_part, spill_part
from transforms.match_buckets import (
    classify_bucket,
    concat_tables,
    double_charges,
    polars_frame,
    project_ledger,
    project_stripe,
    sort_discrepancies,
    sorted_matches,
    split_by_bucket,
    to_arrow,
)
from transforms.match_findings import CHARGE_SCHEMA
from transforms.match_tally import merge_counts, merge_totals
from transforms.match_window import DEFAULT_MARGIN, MatchConfig

__all__ = [
    "DEFAULT_MARGIN",
    "MatchAndClassify",
    "MatchConfig",
    "MatchOutputs",
    "ReconResult",
    "conservation_problems",
    "reconcile",
]

NAMESPACE = "payrecon.match"
DEFAULT_BUCKETS = 16


class ReconResult(NamedTuple):
    discrepancies: pa.Table  # DISCREPANCY_V1
    matches: pa.Table  # RECON_MATCH_V1, status matched
    pending: pa.Table  # RECON_MATCH_V1, status pending
    counts: pa.Table  # RECON_COUNT_V1
    totals: pa.Table  # RECON_TOTALS_V1


def reconcile(
    ledger: pa.Table, stripe: pa.Table, config: MatchConfig, *, buckets: int = 1
) -> ReconResult:
    """Classifies one window (see the module docstring); ``buckets`` > 1 processes one
    bucket at a time, as the Beam composite does, with the same result."""
    ledger_parts = split_by_bucket(project_ledger(ledger), "ledger", buckets)
    stripe_parts = split_by_bucket(project_stripe(stripe), "stripe", buckets)
    outputs = [
        classify_bucket(ledger_parts.get(b), stripe_parts.get(b), config)
        for b in sorted(set(ledger_parts) | set(stripe_parts))
    ]
    charges = pl.concat([CHARGE_SCHEMA.to_frame(), *(o.charges for o in outputs)])
    doubles = [
        double_charges(part, config)
        for part in split_by_bucket(charges.to_arrow(), "charges", buckets).values()
    ]
    return ReconResult(
        sort_discrepancies(
            concat_tables([o.discrepancies for o in outputs] + doubles, DISCREPANCY_V1)
        ),
        sorted_matches([o.matches for o in outputs]),
        sorted_matches([o.pending for o in outputs]),
        to_arrow(merge_counts([polars_frame(o.counts) for o in outputs]), RECON_COUNT_V1),
        to_arrow(merge_totals([polars_frame(o.totals) for o in outputs]), RECON_TOTALS_V1),
    )


def conservation_problems(counts: pa.Table, ledger: pa.Table, stripe: pa.Table) -> list[str]:
    """Where the counts do not add up to the inputs (per side and currency, rows and
    amounts); empty when every input row has exactly one outcome."""
    frame = polars_frame(counts)
    problems = []
    for side, table in (("ledger", ledger), ("stripe", stripe)):
        source = polars_frame(table.select(["currency", "amount"]))
        expected = source.group_by("currency").agg(
            rows=pl.len().cast(pl.Int64), amount=pl.col("amount").sum()
        )
        got = (
            frame.filter(pl.col("side") == side)
            .group_by("currency")
            .agg(pl.col("rows").sum(), pl.col("amount").sum())
        )
        joined = expected.join(got, on="currency", how="full", suffix="_out", coalesce=True)
        for row in joined.fill_null(0).iter_rows(named=True):
            if (row["rows"], row["amount"]) != (row["rows_out"], row["amount_out"]):
                problems.append(
                    f"{side} {row['currency']}: {row['rows']} rows ({row['amount']}) in, "
                    f"{row['rows_out']} rows ({row['amount_out']}) accounted for"
                )
    return problems


# -- Beam ---------------------------------------------------------------------------------


class MatchOutputs(NamedTuple):
    discrepancies: beam.PCollection  # DISCREPANCY_V1 tables
    matches: beam.PCollection  # RECON_MATCH_V1 tables, status matched
    pending: beam.PCollection  # RECON_MATCH_V1 tables, status pending
    counts: beam.PCollection  # one RECON_COUNT_V1 table
    totals: beam.PCollection  # one RECON_TOTALS_V1 table


class _SplitFn(beam.DoFn):
    """A batch -> ``(bucket, (side, sub-table))`` for each bucket it has rows of; with a
    spill directory the sub-table is written there and its path is emitted instead."""

    def __init__(self, side: str, buckets: int, spill_dir: str | None):
        self._side = side
        self._buckets = buckets
        self._spill_dir = spill_dir

    def process(self, table: pa.Table):
        if self._side == "ledger":
            table = project_ledger(table)
        elif self._side == "stripe":
            table = project_stripe(table)
        for bucket, part in split_by_bucket(table, self._side, self._buckets).items():
            if self._spill_dir is None:
                yield bucket, (self._side, part)
            else:
                yield bucket, (self._side, spill_part(self._spill_dir, self._side, bucket, part))


def _split(side: str, buckets: int, spill_dir: str | None) -> beam.ParDo:
    # Typed, so the shuffle encodes the tables with ArrowTableCoder rather than pickle.
    part = pa.Table if spill_dir is None else str
    return beam.ParDo(_SplitFn(side, buckets, spill_dir)).with_output_types(
        beam.typehints.Tuple[int, beam.typehints.Tuple[str, part]]
    )


def _sides(parts) -> dict[str, list[pa.Table]]:
    """A bucket's grouped ``(side, sub-table or spilled path)`` parts, as tables per side."""
    sides: dict[str, list[pa.Table]] = {"ledger": [], "stripe": [], "charges": []}
    for side, part in parts:
        sides[side].append(read_part(part))
    return sides


class _ClassifyFn(beam.DoFn):
    def __init__(self, config: MatchConfig):
        self._config = config
        self.buckets = Metrics.counter(NAMESPACE, "object_buckets")
        self.found = Metrics.counter(NAMESPACE, "discrepancies")
        self.matched = Metrics.counter(NAMESPACE, "matched")
        self.pending = Metrics.counter(NAMESPACE, "pending")

    def process(self, element):
        sides = _sides(element[1])
        ledger = pa.concat_tables(sides["ledger"]) if sides["ledger"] else None
        stripe = pa.concat_tables(sides["stripe"]) if sides["stripe"] else None
        out = classify_bucket(ledger, stripe, self._config)
        self.buckets.inc()
        self.found.inc(out.discrepancies.num_rows)
        self.matched.inc(out.matches.num_rows)
        self.pending.inc(out.pending.num_rows)
        if out.discrepancies.num_rows:
            yield out.discrepancies
        for tag in ("matches", "pending", "counts", "totals"):
            table = getattr(out, tag)
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        if out.charges.height:
            yield beam.pvalue.TaggedOutput("charges", out.charges.to_arrow())


class _DoubleChargesFn(beam.DoFn):
    def __init__(self, config: MatchConfig):
        self._config = config

    def process(self, element):
        found = double_charges(pa.concat_tables(_sides(element[1])["charges"]), self._config)
        if found.num_rows:
            yield found


class _MergeTablesFn(beam.CombineFn):
    """Adds up partial count or totals tables into one."""

    def __init__(self, merge, schema: pa.Schema):
        self._merge = merge
        self._schema = schema

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, table):
        accumulator.append(table)
        return accumulator

    def merge_accumulators(self, accumulators):
        return [table for accumulator in accumulators for table in accumulator]

    def extract_output(self, accumulator):
        frames = [polars_frame(table) for table in accumulator]
        return to_arrow(self._merge(frames), self._schema)


class MatchAndClassify(beam.PTransform):
    """Beam composite of :func:`reconcile`: ``{"ledger": ..., "stripe": ...}`` (or a
    ``(ledger, stripe)`` pair) of Arrow-table PCollections in, :class:`MatchOutputs` out.

    Each batch is split into per-bucket sub-tables keyed by the hash of its Stripe object;
    a GroupByKey brings one bucket's tables together, classified by one polars pass; the
    succeeded charges are re-keyed by order / idempotency key for the double-charge pass.
    Deterministic: the same inputs give the same rows and ``discrepancy_id``s on every run
    and runner, whatever the batching.

    With ``spill_dir``, both shuffles carry paths of files holding the sub-tables instead of
    the tables (:mod:`transforms.join_spill`): for local runners, which hold a shuffle's
    whole input in memory. The results are the same.
    """

    def __init__(
        self, config: MatchConfig, *, buckets: int = DEFAULT_BUCKETS, spill_dir: str | None = None
    ):
        super().__init__()
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets}")
        self._config = config
        self._buckets = buckets
        self._spill_dir = spill_dir

    def expand(self, inputs):
        ledger, stripe = (
            (inputs["ledger"], inputs["stripe"]) if isinstance(inputs, dict) else inputs
        )
        keyed_ledger = ledger | "BucketLedger" >> _split("ledger", self._buckets, self._spill_dir)
        keyed_stripe = stripe | "BucketStripe" >> _split("stripe", self._buckets, self._spill_dir)
        found = (
            (keyed_ledger, keyed_stripe)
            | "BothSides" >> beam.Flatten()
            | "GroupByObjectBucket" >> beam.GroupByKey()
            | "ClassifyObjects"
            >> beam.ParDo(_ClassifyFn(self._config))
            .with_output_types(pa.Table)
            .with_outputs("matches", "pending", "counts", "totals", "charges", main="discrepancies")
        )
        doubles = (
            found.charges
            | "BucketCharges" >> _split("charges", self._buckets, self._spill_dir)
            | "GroupByChargeBucket" >> beam.GroupByKey()
            | "FindDoubleCharges"
            >> beam.ParDo(_DoubleChargesFn(self._config)).with_output_types(pa.Table)
        )
        discrepancies = (found.discrepancies, doubles) | "AllDiscrepancies" >> beam.Flatten()
        counts = found.counts | "SumCounts" >> beam.CombineGlobally(
            _MergeTablesFn(merge_counts, RECON_COUNT_V1)
        )
        totals = found.totals | "SumTotals" >> beam.CombineGlobally(
            _MergeTablesFn(merge_totals, RECON_TOTALS_V1)
        )
        return MatchOutputs(discrepancies, found.matches, found.pending, counts, totals)
