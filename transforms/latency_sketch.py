"""Latency quantiles that can be merged: a DDSketch-style log-bucketed histogram.

A latency of ``x`` ms is counted in bucket ``ceil(log(x) / log(GAMMA))``; a bucket stands for
``2 * GAMMA**i / (GAMMA + 1)``, within ``RELATIVE_ACCURACY`` (1%) of every value in it
(Masson et al., "DDSketch", VLDB 2019). Bucket counts add up, so the p50/p95/p99 of a window
are the same whether its calls were counted in one run or spread over several micro-batches,
and a late call only adds to its window's counts. Zero (or negative) latencies have their
own bucket.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
ZERO = "zero"
_MIN_MS = 1e-6


def bucket_expr(latency_ms: pl.Expr) -> pl.Expr:
    """The bucket name of each latency (``"zero"``, or the integer index as text)."""
    index = (latency_ms.clip(lower_bound=_MIN_MS).log() / math.log(GAMMA)).ceil().cast(pl.Int64)
    return pl.when(latency_ms <= _MIN_MS).then(pl.lit(ZERO)).otherwise(index.cast(pl.String))


def bucket_value(bucket: str) -> float:
    """The latency a bucket stands for, in milliseconds."""
    if bucket == ZERO:
        return 0.0
    return 2 * GAMMA ** int(bucket) / (GAMMA + 1)


def quantile(buckets: Mapping[str, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the latencies counted in ``buckets``; None when empty."""
    ordered = sorted(
        ((bucket_value(b), n) for b, n in buckets.items() if n > 0), key=lambda vn: vn[0]
    )
    total = sum(n for _, n in ordered)
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for value, n in ordered:
        seen += n
        if seen > rank:
            return round(value, 3)
    return round(ordered[-1][0], 3)
