"""What one run of ``payrecon gateway`` did, and the proof that its counts add up.

Requests in = results out + dead letters + unfinished. Results and dead letters are counted
when the broker acknowledged them (only then is their offset committable); unfinished
requests (the consumer stopped during their retries, or a dependency failed) are not
committed and are processed again, idempotently, after a restart. A run that stopped
normally has none.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from transforms.payment_records import TelemetryEvent


@dataclass
class GatewaySummary:
    requests_topic: str
    consumed: int = 0
    results: Counter = field(default_factory=Counter)  # by status
    dead_letters: Counter = field(default_factory=Counter)  # by reason
    attempts: int = 0
    retries: Counter = field(default_factory=Counter)  # by reason
    backoff_s: float = 0.0
    longest_backoff_s: float = 0.0
    telemetry_sent: int = 0
    telemetry_lost: int = 0
    concurrency: tuple[int, int, int, int] = (0, 0, 0, 0)  # initial, lowest, highest, final
    changes: tuple[int, int] = (0, 0)  # increases, decreases
    alerts: Counter = field(default_factory=Counter)  # telemetry alerts read, by verdict
    governor: Counter = field(default_factory=Counter)  # alert-driven changes, by reason
    ceiling_and_backoff: tuple[int, float] = (0, 1.0)  # final ceiling, backoff factor
    committed: dict = field(default_factory=dict)  # (topic, partition) -> offset
    seconds: float = 0.0
    stopped_by: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def results_out(self) -> int:
        return sum(self.results.values())

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def unfinished(self) -> int:
        return self.consumed - self.results_out - self.dead_lettered

    def observe(self, event: TelemetryEvent) -> None:
        """Count an attempt (called from the worker threads)."""
        if event.kind != "attempt":
            return
        with self._lock:
            self.attempts += 1
            if event.outcome == "retry" and event.backoff_ms is not None:
                self.retries[event.reason or "unknown"] += 1
                self.backoff_s += event.backoff_ms / 1000
                self.longest_backoff_s = max(self.longest_backoff_s, event.backoff_ms / 1000)

    def telemetry_delivered(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.telemetry_sent += 1
            else:
                self.telemetry_lost += 1

    def render(self) -> str:
        results = _breakdown(self.results)
        dead = _breakdown(self.dead_letters)
        retries = _breakdown(self.retries)
        initial, lowest, highest, final = self.concurrency
        committed = ", ".join(f"{p}: {o}" for (_, p), o in sorted(self.committed.items()))
        return "\n".join(
            [
                f"payrecon gateway: {self.consumed:,} requests read from "
                f"{self.requests_topic} in {self.seconds:.1f}s (stopped: {self.stopped_by})",
                f"  results:      {self.results_out:,}{results}",
                f"  dead letters: {self.dead_lettered:,}{dead}",
                f"  unfinished:   {self.unfinished:,} (not committed; processed again "
                "after a restart)",
                f"  counts: {self.consumed:,} in = {self.results_out:,} results + "
                f"{self.dead_lettered:,} dead letters + {self.unfinished:,} unfinished",
                f"  gateway calls: {self.attempts:,}, retried {sum(self.retries.values()):,}"
                f"{retries}; backoff {self.backoff_s:.1f}s in all, longest "
                f"{self.longest_backoff_s:.2f}s",
                f"  concurrency: started {initial}, lowest {lowest}, highest {highest}, "
                f"final {final} ({self.changes[0]} increases, {self.changes[1]} decreases)",
                f"  telemetry alerts: {sum(self.alerts.values()):,} read"
                f"{_breakdown(self.alerts)}; slowed down / recovered: "
                f"{sum(self.governor.values()):,}{_breakdown(self.governor)}; final ceiling "
                f"{self.ceiling_and_backoff[0]}, backoff x{self.ceiling_and_backoff[1]:g}",
                f"  telemetry events: {self.telemetry_sent:,} published, "
                f"{self.telemetry_lost:,} lost",
                f"  committed offsets: {committed or 'none'}",
            ]
        )


def _breakdown(counts: Counter) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{k} {n:,}" for k, n in sorted(counts.items())) + ")"
