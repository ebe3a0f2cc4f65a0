"""The window a reconciliation run owns, its lateness margin, and where a record falls.

A record belongs to the window of its own timestamp (ledger ``occurred_at``, Stripe
``created``). The run reads ``[start - margin, end + margin)``; records in the margins are
used for matching only (they are reported by the run of their own window), and anything
outside the read range is ignored (counted, never matched).

The default margin is 10 minutes: the generator's lateness edges need at least their
``max_edge_gap_seconds`` (about 10 s: a charge at 23:59:59 whose balance transaction is
created at 00:00:02), and real ledgers record Stripe's webhooks seconds to minutes late.
The Stripe input must cover the whole read range, or edge events look missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

DEFAULT_MARGIN = timedelta(minutes=10)

OUTSIDE = "outside_read_range"
MARGIN = "margin"
WINDOW = "window"


@dataclass(frozen=True)
class MatchConfig:
    """What one run reconciles: ``[window_start, window_end)`` (UTC), read with ``margin``."""

    window_start: datetime
    window_end: datetime
    run_id: str
    detected_at: datetime
    margin: timedelta = DEFAULT_MARGIN

    def __post_init__(self) -> None:
        for name in ("window_start", "window_end", "detected_at"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")
            object.__setattr__(self, name, value.astimezone(UTC))
        if self.window_end <= self.window_start:
            raise ValueError(
                f"window_end {self.window_end.isoformat()} is not after "
                f"window_start {self.window_start.isoformat()}"
            )
        if self.margin < timedelta(0):
            raise ValueError(f"margin must not be negative, got {self.margin}")
        if not self.run_id:
            raise ValueError("run_id must not be empty")

    @property
    def read_start(self) -> datetime:
        return self.window_start - self.margin

    @property
    def read_end(self) -> datetime:
        return self.window_end + self.margin

    def position(self, ts: pl.Expr) -> pl.Expr:
        """``window``, ``margin`` or ``outside_read_range`` for each timestamp."""
        return (
            pl.when((ts < self.read_start) | (ts >= self.read_end))
            .then(pl.lit(OUTSIDE))
            .when((ts < self.window_start) | (ts >= self.window_end))
            .then(pl.lit(MARGIN))
            .otherwise(pl.lit(WINDOW))
        )

    def in_window(self, ts: pl.Expr) -> pl.Expr:
        return (ts >= self.window_start) & (ts < self.window_end)
