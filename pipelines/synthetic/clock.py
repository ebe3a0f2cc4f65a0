"""Time: the day's window, a diurnal spread of event times, and the two text formats.

Ledger events carry RFC 3339 UTC with milliseconds (``2026-11-20T13:45:01.123Z``); Stripe's
report CSVs write ``2026-11-20 13:45:01`` (UTC, whole seconds, as balance transactions have).
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

DAY_MS = 86_400_000
DAY_S = 86_400
MINUTES = 1_440


@dataclass(frozen=True)
class Window:
    """One UTC day: ``[start, end)``."""

    day: date
    start_s: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_s", calendar.timegm(self.day.timetuple()))

    @classmethod
    def from_day_number(cls, days_since_epoch: int) -> Window:
        return cls(date(1970, 1, 1) + timedelta(days=days_since_epoch))

    @property
    def end_s(self) -> int:
        return self.start_s + DAY_S

    @property
    def start_ms(self) -> int:
        return self.start_s * 1000

    @property
    def end_ms(self) -> int:
        return self.end_s * 1000

    def contains_s(self, seconds: int) -> bool:
        return self.start_s <= seconds < self.start_s + DAY_S


def diurnal_weights() -> np.ndarray:
    """Relative payment volume per UTC minute: quiet at 05:00, busiest at 17:00
    (Europe's evening overlapping America's afternoon)."""
    minutes = np.arange(MINUTES)
    phase = 2 * math.pi * (minutes / MINUTES - 17 / 24)
    weights = 0.2 + 0.8 * (1 + np.cos(phase)) / 2
    return weights / weights.sum()


def diurnal_offsets(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted millisecond offsets into the day, following :func:`diurnal_weights`."""
    counts = rng.multinomial(n, diurnal_weights())
    minute = np.repeat(np.arange(MINUTES, dtype=np.int64), counts)
    offsets = minute * 60_000 + rng.integers(0, 60_000, n, dtype=np.int64)
    offsets.sort()
    return offsets


class Rfc3339:
    """Formats epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; caches the second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{milli:03d}Z"


def rfc3339_ms(ms: int) -> str:
    return Rfc3339()(ms)


def report_time(seconds: int) -> str:
    """Stripe report CSV time: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
