"""Stalled consumers: a group that has messages waiting and stopped committing.

A continuous consumer (the gateway, the Stripe events consumer) commits its position every
few seconds while there is work. It is **stalled** on a partition when, in the lag
measurements of that group and partition (``telemetry_consumer_lag``):

* the latest measurement has messages waiting (lag > 0), and
* its committed offset has not changed since the first measurement, in the run of
  measurements with that same committed offset, that had messages waiting (the *stall
  start*), and
* that was at least ``stall_after`` ago.

So a consumer that is idle because nothing arrives (lag 0) is not stalled, one that is
slow but moving is not stalled, and one that stopped is stalled ``stall_after`` after the
first measurement that saw messages waiting for it: with one measurement per micro-batch and
``stall_after`` one micro-batch interval, within two windows of the stop.

Only continuous consumers can be judged this way: a daily batch job's group (the reconcile)
has messages waiting all day by design, so the groups to watch are named
(``--stall-groups``), while lag is measured for every group.

The stall start stays the same for as long as the stall lasts (within the history read), so
each run finds the same stall under the same alert id, with the latest lag as its evidence.
Pure: polars frames in and out, the clock passed in.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import polars as pl

METRIC = "consumer_stalled"
MODEL = "stalled_offset"
SERIES = ["group_id", "topic", "partition"]


def stalls(
    measurements: pl.DataFrame,
    now: datetime,
    stall_after: timedelta,
    groups: Collection[str],
) -> pl.DataFrame:
    """The stalled series among ``measurements`` (``measured_at``, ``group_id``, ``topic``,
    ``partition``, ``committed_offset``, ``lag``; every measurement up to ``now``, the
    latest one of each series included), for the watched ``groups``.

    One row per stalled series: its keys, ``stalled_since`` (the stall start), ``lag`` and
    ``committed_offset`` now, ``stalled_seconds`` and ``measurements`` (in the stall)."""
    watched = measurements.filter(
        pl.col("group_id").is_in(list(groups)) & (pl.col("measured_at") <= now)
    ).sort(*SERIES, "measured_at")
    committed = pl.col("committed_offset")
    same_run = (
        watched.with_columns(
            run=committed.ne_missing(committed.shift(1)).fill_null(True).cum_sum().over(SERIES)
        )
        .filter(pl.col("run") == pl.col("run").max().over(SERIES))
        .group_by(SERIES)
        .agg(
            stalled_since=pl.col("measured_at").filter(pl.col("lag") > 0).min(),
            measurements=(pl.col("lag") > 0).sum(),
            lag=pl.col("lag").last(),
            committed_offset=committed.last(),
        )
    )
    return (
        same_run.filter((pl.col("lag") > 0) & pl.col("stalled_since").is_not_null())
        .with_columns(stalled_seconds=(pl.lit(now) - pl.col("stalled_since")).dt.total_seconds())
        .filter(pl.col("stalled_seconds") >= stall_after.total_seconds())
        .sort(SERIES)
    )


# The alert's ``dims``: which group is stuck where.
DIMS = pl.format("group={},topic={},partition={}", *SERIES)


def action_of(group_id: str, topic: str, partition: int, lag: int, seconds: float) -> str:
    return (
        f"consumer group {group_id} has not committed on {topic}[{partition}] for "
        f"{seconds / 60:.1f} min with {lag:,} messages waiting: check that its process is "
        "alive and not stuck on one message (logs, the topic's .dlq), then restart it"
    )
