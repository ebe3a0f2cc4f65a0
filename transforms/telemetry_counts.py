"""Additive counts per minute and gateway: what every telemetry metric is computed from.

A decoded batch of payment telemetry (attempts: one call to a gateway each) or of payment
results becomes, per (event-time minute, gateway), a map of named integer counts:

============================  ===============================================================
``attempts``                  calls to the gateway (telemetry ``kind = attempt``)
``outcome:<outcome>``         calls by outcome (success, retry, permanent, give_up)
``reason:<reason>``           calls that gave no result, by classified reason (http_429 ...)
``http_429``                  calls answered 429 Too Many Requests
``latency:<bucket>``          calls by latency bucket (``transforms.latency_sketch``)
``results``                   payment results decided
``status:<status>``           results by status (succeeded, failed ...)
``decline:<error_code>``      failed results by the gateway's code (card_declined ...)
``succeeded:<currency>``      succeeded results per currency
``revenue:<currency>``        their amount, integer minor units
``webhooks``                  Stripe events received (``stripe.events``), gateway ``stripe``
``webhook:<type>``            Stripe events by type (payment_intent.succeeded ...)
============================  ===============================================================

Counts add up: the counts of a window are the sum of its minutes' counts, whatever batches
or bundles they were counted in, so windows can be fired, re-fired with late data, or merged
across micro-batches exactly. Every count is also kept under gateway ``*`` (all gateways).
Telemetry events are time-stamped by ``at``, results by ``processed_at``, Stripe events by
their ``created``.
"""

from __future__ import annotations

from typing import NamedTuple

import polars as pl
import pyarrow as pa

from transforms.latency_sketch import bucket_expr

ALL = "*"
STRIPE = "stripe"  # the gateway Stripe's events are counted under


class MinuteCounts(NamedTuple):
    """The counts of one gateway in the minute starting at ``minute`` (epoch seconds)."""

    minute: int
    gateway: str
    counts: dict[str, int]


def _named(prefix: str, column: str) -> pl.Expr:
    return pl.lit(prefix + ":") + pl.col(column).fill_null("unknown")


def _part(frame: pl.DataFrame, component: pl.Expr, n: pl.Expr | None = None) -> pl.DataFrame:
    n = pl.lit(1, pl.Int64) if n is None else n.cast(pl.Int64)
    return frame.select("minute", "gateway", component.alias("component"), n.alias("n"))


def _attempt_counts(frame: pl.DataFrame) -> pl.DataFrame:
    attempts = frame.filter(pl.col("kind") == "attempt").unique("event_id", keep="first")
    attempts = attempts.with_columns(pl.col("gateway").fill_null("unknown"))
    timed = attempts.filter(pl.col("latency_ms").is_not_null())
    return pl.concat(
        [
            _part(attempts, pl.lit("attempts")),
            _part(attempts, _named("outcome", "outcome")),
            _part(attempts.filter(pl.col("outcome") != "success"), _named("reason", "reason")),
            _part(attempts.filter(pl.col("http_status") == 429), pl.lit("http_429")),
            _part(timed, pl.lit("latency:") + bucket_expr(pl.col("latency_ms"))),
        ]
    )


def _result_counts(frame: pl.DataFrame) -> pl.DataFrame:
    results = frame.unique("request_id", keep="first")
    succeeded = results.filter(pl.col("status") == "succeeded")
    return pl.concat(
        [
            _part(results, pl.lit("results")),
            _part(results, _named("status", "status")),
            _part(results.filter(pl.col("status") == "failed"), _named("decline", "error_code")),
            _part(succeeded, _named("succeeded", "currency")),
            _part(succeeded, _named("revenue", "currency"), pl.col("amount")),
        ]
    )


def _webhook_counts(frame: pl.DataFrame) -> pl.DataFrame:
    events = frame.unique("event_id", keep="first").with_columns(gateway=pl.lit(STRIPE))
    return pl.concat(
        [_part(events, pl.lit("webhooks")), _part(events, pl.lit("webhook:") + pl.col("type"))]
    )


_COUNTS_BY_TIME = {
    "at": _attempt_counts,
    "processed_at": _result_counts,
    "created": _webhook_counts,
}


def minute_counts(table: pa.Table, time_column: str) -> list[MinuteCounts]:
    """The counts of a decoded telemetry (``time_column`` ``at``), results
    (``processed_at``) or Stripe events (``created``) batch, per minute and gateway,
    gateway ``*`` included."""
    if table.num_rows == 0:
        return []
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        minute=pl.col(time_column).dt.truncate("1m").dt.epoch("s"),
    )
    long = _COUNTS_BY_TIME[time_column](frame)
    long = pl.concat([long, long.with_columns(gateway=pl.lit(ALL))])
    summed = long.group_by("minute", "gateway", "component").agg(pl.col("n").sum())
    out: dict[tuple[int, str], dict[str, int]] = {}
    for minute, gateway, component, n in summed.sort("minute", "gateway", "component").iter_rows():
        out.setdefault((minute, gateway), {})[component] = n
    return [MinuteCounts(m, g, c) for (m, g), c in out.items()]


def add_counts(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """``into`` plus ``more``, component by component (``into`` is updated and returned)."""
    for name, n in more.items():
        into[name] = into.get(name, 0) + n
    return into
