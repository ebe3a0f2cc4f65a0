"""An AIMD limit on concurrent calls to a rate-limited API.

TCP's congestion control applied to a payment gateway: the limit grows by one after
``increase_after`` successful calls in a row (additive increase) and is multiplied by
``decrease_factor`` when a call is throttled or times out (multiplicative decrease), never
leaving ``[minimum, maximum]``. A 429 surge thus slows the consumer down within a few calls
and lets it speed up again once the gateway copes, instead of failing it.

One congestion event decreases the limit once: calls that were already in flight when the
limit was cut (they started with an older :meth:`AimdController.ticket`) report their own
429s for the same surge, and those are not counted again.

A **ceiling** (:meth:`AimdController.set_ceiling`, at most ``maximum``) lets a slower signal
hold the limit down: the telemetry alerts of ``transforms.alert_governor``, which see a
surge across every consumer and minute, lower the ceiling, and additive increase stops
there until they raise it again. One limiter, two inputs: the calls' own 429s cut the limit
at once, the alerts keep it from growing back into the storm.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

# Failures that say "too much load", as classified by transforms.retry.classify.
CONGESTION_REASONS = frozenset({"http_429", "timeout"})


@dataclass(frozen=True)
class AimdSettings:
    initial: int = 4
    minimum: int = 1
    maximum: int = 16
    increase_after: int = 10
    decrease_factor: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.initial <= self.maximum:
            raise ValueError(
                "concurrency must satisfy 1 <= minimum <= initial <= maximum, got "
                f"{self.minimum}, {self.initial}, {self.maximum}"
            )
        if self.increase_after < 1:
            raise ValueError(f"increase_after must be at least 1, got {self.increase_after}")
        if not 0.0 < self.decrease_factor < 1.0:
            raise ValueError(f"decrease_factor must be in (0, 1), got {self.decrease_factor}")


@dataclass(frozen=True)
class LimitChange:
    """One change of the limit: ``direction`` is ``increase`` or ``decrease``; ``reason``
    is ``successes`` or the congestion signal (``http_429``, ``timeout``)."""

    previous: int
    limit: int
    direction: str
    reason: str


class AimdController:
    """Thread-safe. ``on_change`` is called (outside the lock) after every change the
    controller makes by itself (successes, congestion); a change that
    :meth:`set_ceiling` forces is returned to its caller instead, who reports it with its
    own reason."""

    def __init__(
        self,
        settings: AimdSettings | None = None,
        on_change: Callable[[LimitChange], None] | None = None,
    ):
        self.settings = settings or AimdSettings()
        self._on_change = on_change
        self._lock = threading.Lock()
        self._limit = self.settings.initial
        self._ceiling = self.settings.maximum
        self._generation = 0
        self._streak = 0
        self.lowest = self.highest = self._limit
        self.increases = self.decreases = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def set_ceiling(self, ceiling: int, reason: str) -> LimitChange | None:
        """Let the limit grow no higher than ``ceiling`` (kept within ``[minimum,
        maximum]``); a limit above it drops to it at once. Returns that change of the limit,
        if any (not passed to ``on_change``)."""
        with self._lock:
            self._ceiling = min(self.settings.maximum, max(self.settings.minimum, ceiling))
            if self._limit <= self._ceiling:
                return None
            self._generation += 1  # the calls in flight do not cut the lowered limit again
            return self._set(self._ceiling, "decrease", reason)

    def ticket(self) -> int:
        """Take before a call; give it back to :meth:`on_failure`."""
        with self._lock:
            return self._generation

    def on_success(self) -> None:
        with self._lock:
            self._streak += 1
            if self._streak < self.settings.increase_after or self._limit >= self._ceiling:
                return
            change = self._set(self._limit + 1, "increase", "successes")
        self._notify(change)

    def on_failure(self, ticket: int, reason: str) -> None:
        """A transient failure: a congestion signal (:data:`CONGESTION_REASONS`) from a call
        started since the last decrease cuts the limit; any failure ends the success
        streak."""
        with self._lock:
            self._streak = 0
            if reason not in CONGESTION_REASONS or ticket != self._generation:
                return
            self._generation += 1
            cut = math.floor(self._limit * self.settings.decrease_factor)
            lowered = max(self.settings.minimum, cut)
            if lowered == self._limit:
                return
            change = self._set(lowered, "decrease", reason)
        self._notify(change)

    def _set(self, limit: int, direction: str, reason: str) -> LimitChange:
        change = LimitChange(self._limit, limit, direction, reason)
        self._limit = limit
        self._streak = 0
        self.lowest = min(self.lowest, limit)
        self.highest = max(self.highest, limit)
        if direction == "increase":
            self.increases += 1
        else:
            self.decreases += 1
        return change

    def _notify(self, change: LimitChange) -> None:
        if self._on_change is not None:
            self._on_change(change)
