"""Event-time windows over payment telemetry and results: counts per window and gateway.

The same transforms serve both ways of running ``payrecon telemetry``:

* streaming (an unbounded Kafka source on Dataflow or Flink, ``early_firing_s`` set):
  windows fire early every ``early_firing_s`` of processing time while data arrives, when
  the watermark passes their end, then once more for each late arrival within the allowed
  lateness. Panes are discarding: each holds only what arrived since the window's previous
  pane, a delta of counts, and says which pane it is (``WindowCounts.pane``), so a sink can
  store each pane under its own key and the sum over a window's panes is the window. Data
  later than the allowed lateness is dropped by the runner;
* bounded micro-batches (the local default): the watermark jumps to the end when the read
  ends, so every window fires once with what this batch read; the job adds the counts of
  earlier batches (``telemetry_window_counts``) before computing the metrics.

Both are the same model, counts summed over batches: a micro-batch is one batch, a pane
is one batch.

Input: decoded ``DECODED_TELEMETRY`` and ``DECODED_RESULT`` tables (and
``DECODED_STRIPE_EVENT`` tables, optionally). Each table is first
reduced to counts per event-time minute (``transforms.telemetry_counts``), so windows see
a few elements per minute instead of one per message. That is exact for every window whose
boundaries are whole minutes, which :class:`WindowSpec` enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from transforms.telemetry_counts import add_counts, minute_counts


@dataclass(frozen=True)
class WindowSpec:
    """Fixed windows of ``size_s`` seconds, or sliding ones starting every ``period_s``."""

    label: str
    size_s: int
    period_s: int | None = None

    def __post_init__(self) -> None:
        for value in (self.size_s, self.period_s or 60):
            if value <= 0 or value % 60:
                raise ValueError(f"window {self.label}: {value}s is not a whole number of minutes")

    def window_fn(self) -> window.WindowFn:
        if self.period_s is None:
            return window.FixedWindows(self.size_s)
        return window.SlidingWindows(self.size_s, self.period_s)


MINUTE = WindowSpec("Minute", 60)
HOUR_EVERY_5_MINUTES = WindowSpec("HourEvery5Minutes", 3600, 300)


class WindowCounts(NamedTuple):
    """The counts of one gateway in one window, ``[start, end)`` in epoch seconds: all of
    them, or (streaming) those that arrived since the window's previous pane, ``pane``
    being the index of the firing (0, 1, ... per window and gateway)."""

    start: int
    end: int
    gateway: str
    counts: dict[str, int]
    pane: int = 0


class _StampMinutesFn(beam.DoFn):
    """A decoded table in; ``(gateway, counts)`` per minute out, stamped with the minute."""

    def __init__(self, time_column: str):
        self._time_column = time_column

    def process(self, table):
        for m in minute_counts(table, self._time_column):
            yield window.TimestampedValue((m.gateway, m.counts), m.minute)


class SumCounts(beam.CombineFn):
    """Adds count maps component by component (associative and commutative)."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, accumulator: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
        return add_counts(accumulator, counts)

    def merge_accumulators(self, accumulators) -> dict[str, int]:
        merged: dict[str, int] = {}
        for accumulator in accumulators:
            add_counts(merged, accumulator)
        return merged

    def extract_output(self, accumulator: dict[str, int]) -> dict[str, int]:
        return dict(sorted(accumulator.items()))


class _WindowBoundsFn(beam.DoFn):
    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        gateway, counts = element
        yield WindowCounts(int(w.start), int(w.end), gateway, counts, pane.index)


class CountPaymentMinutes(beam.PTransform):
    """``(telemetry tables, result tables[, Stripe event tables])`` in; ``(gateway, counts)``
    per event-time minute out, each element time-stamped with its minute's start."""

    def expand(self, inputs):
        telemetry, results, *stripe_events = inputs
        counted = [
            telemetry | "CountAttemptsPerMinute" >> beam.ParDo(_StampMinutesFn("at")),
            results | "CountResultsPerMinute" >> beam.ParDo(_StampMinutesFn("processed_at")),
        ]
        for events in stripe_events:
            counted.append(
                events | "CountStripeEventsPerMinute" >> beam.ParDo(_StampMinutesFn("created"))
            )
        return tuple(counted) | "AllMinuteCounts" >> beam.Flatten()


class SumCountsPerWindow(beam.PTransform):
    """Minute counts in; one ``WindowCounts`` per window, gateway and pane out (in the
    global window: each element carries its window's bounds and pane index).

    Each window fires when the watermark passes its end and again for each late minute
    count within ``allowed_lateness_s``. Without ``early_firing_s`` panes accumulate, so the
    last pane of a window holds all of it (a sink upserting on the window's key keeps the
    latest). With it (streaming) the window also fires every ``early_firing_s`` of
    processing time before its end while data arrives, and panes are discarding: each is
    the delta since the previous one. Later data is dropped by the runner.
    """

    def __init__(
        self,
        windows: tuple[WindowSpec, ...],
        allowed_lateness_s: int,
        early_firing_s: int | None = None,
    ):
        super().__init__()
        self._windows = windows
        self._lateness = Duration(seconds=allowed_lateness_s)
        self._early_s = early_firing_s

    def _firing(self) -> dict:
        if self._early_s is None:
            return {
                "trigger": trigger.AfterWatermark(late=trigger.AfterCount(1)),
                "accumulation_mode": trigger.AccumulationMode.ACCUMULATING,
            }
        return {
            "trigger": trigger.AfterWatermark(
                early=trigger.AfterProcessingTime(self._early_s), late=trigger.AfterCount(1)
            ),
            "accumulation_mode": trigger.AccumulationMode.DISCARDING,
        }

    def expand(self, minute_counts):
        per_window = []
        for spec in self._windows:
            per_window.append(
                minute_counts
                | f"Window{spec.label}"
                >> beam.WindowInto(
                    spec.window_fn(), allowed_lateness=self._lateness, **self._firing()
                )
                | f"SumPer{spec.label}" >> beam.CombinePerKey(SumCounts())
                | f"Bounds{spec.label}" >> beam.ParDo(_WindowBoundsFn())
                # Each element now names its window; one windowing lets the specs flatten.
                | f"Unwindow{spec.label}" >> beam.WindowInto(window.GlobalWindows())
            )
        return tuple(per_window) | "AllWindows" >> beam.Flatten()


class WindowedPaymentCounts(beam.PTransform):
    """Decoded ``(telemetry tables, result tables[, Stripe event tables])`` in;
    ``WindowCounts`` out, for every window of ``windows`` that holds data (per pane: see
    :class:`SumCountsPerWindow` for what ``early_firing_s`` changes)."""

    def __init__(
        self,
        windows: tuple[WindowSpec, ...] = (MINUTE, HOUR_EVERY_5_MINUTES),
        allowed_lateness_s: int = 3600,
        early_firing_s: int | None = None,
    ):
        super().__init__()
        self._windows = windows
        self._lateness = allowed_lateness_s
        self._early_s = early_firing_s

    def expand(self, inputs):
        return (
            inputs
            | "CountPaymentMinutes" >> CountPaymentMinutes()
            | "SumCountsPerWindow"
            >> SumCountsPerWindow(self._windows, self._lateness, self._early_s)
        )
