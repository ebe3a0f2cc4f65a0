"""Event-time windows of ``payrecon telemetry`` under a controlled watermark (TestStream).

TestStream runs only on the BundleBasedDirectRunner in streaming mode; these tests drive the
same transforms the job runs, with decoded telemetry tables as input.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from schemas.kafka_message import KAFKA_MESSAGE
from schemas.payments import PAYMENT_TELEMETRY_V1
from tests.telemetry_helpers import START, attempt, request_of
from transforms.arrow_coder import ArrowTableCoder
from transforms.payment_decode import decode_payment_batch
from transforms.telemetry_windows import HOUR_EVERY_5_MINUTES, MINUTE, WindowedPaymentCounts


def calls_at(*offsets: timedelta) -> pa.Table:
    """Decoded telemetry: one successful gateway call at each ``START + offset``."""
    rng = random.Random(1)
    records = [
        attempt(request_of(i, rng, START + o), START + o, 1, "success", latency_ms=50.0)
        for i, o in enumerate(offsets)
    ]
    messages = pa.Table.from_pylist(
        [
            {"topic": "payments.telemetry", "partition": 0, "offset": i, "timestamp": r.at,
             "key": r.key, "value": r.value}
            for i, r in enumerate(records)
        ],
        schema=KAFKA_MESSAGE,
    )  # fmt: skip
    decoded = decode_payment_batch(messages, PAYMENT_TELEMETRY_V1, job="test")
    assert decoded.dead_letters.num_rows == 0
    return decoded.events


def seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def at(minutes: float) -> int:
    return seconds(START + timedelta(minutes=minutes))


def stream() -> TestStream:
    return TestStream(coder=ArrowTableCoder()).advance_watermark_to(at(0))


def test_minute_windows_count_each_call_in_the_minute_it_happened():
    events = stream().add_elements(
        [
            TimestampedValue(
                calls_at(timedelta(seconds=10), timedelta(seconds=50), timedelta(seconds=65)), at(0)
            )
        ]
    )
    options = PipelineOptions(runner="BundleBasedDirectRunner", streaming=True)
    with TestPipeline(options=options) as p:
        panes = windowed(p, events.advance_watermark_to_infinity(), (MINUTE,), 300)
        assert_that(panes, equal_to([(at(0), at(1), 2), (at(1), at(2), 1)]))


def test_a_late_call_within_the_allowed_lateness_refires_its_window_with_all_its_calls():
    events = (
        stream()
        .add_elements(
            [TimestampedValue(calls_at(timedelta(seconds=10), timedelta(seconds=20)), at(0))]
        )
        .advance_watermark_to(at(2))  # the 10:00 window fires on time with 2 calls
        .add_elements([TimestampedValue(calls_at(timedelta(seconds=30)), at(2))])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(runner="BundleBasedDirectRunner", streaming=True)
    with TestPipeline(options=options) as p:
        panes = windowed(p, events, (MINUTE,), lateness_s=300)
        assert_that(panes, equal_to([(at(0), at(1), 2), (at(0), at(1), 3)]))


def test_a_call_later_than_the_allowed_lateness_is_dropped():
    events = (
        stream()
        .add_elements(
            [TimestampedValue(calls_at(timedelta(seconds=10), timedelta(seconds=20)), at(0))]
        )
        .advance_watermark_to(at(5))  # past 10:01 + 60 s of allowed lateness
        .add_elements([TimestampedValue(calls_at(timedelta(seconds=30)), at(5))])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(runner="BundleBasedDirectRunner", streaming=True)
    with TestPipeline(options=options) as p:
        panes = windowed(p, events, (MINUTE,), lateness_s=60)
        assert_that(panes, equal_to([(at(0), at(1), 2)]))


def test_hour_windows_slide_every_five_minutes():
    events = (
        stream()
        .add_elements([TimestampedValue(calls_at(timedelta(minutes=7)), at(0))])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(runner="BundleBasedDirectRunner", streaming=True)
    with TestPipeline(options=options) as p:
        panes = windowed(p, events, (HOUR_EVERY_5_MINUTES,), 300)
        starts = [at(7) - 120 - 300 * k for k in range(12)]  # 10:05, 10:00 ... 09:10
        assert_that(panes, equal_to([(s, s + 3600, 1) for s in starts]))


def windowed(p, events: TestStream, windows, lateness_s: int):
    """``(start, end, attempts)`` of every pane of gateway ``*``."""
    telemetry = p | "Calls" >> events
    results = p | "NoResults" >> beam.Create([]).with_output_types(pa.Table)
    return (
        (telemetry, results)
        | WindowedPaymentCounts(windows, lateness_s)
        | beam.Filter(lambda w: w.gateway == "*")
        | beam.Map(lambda w: (w.start, w.end, w.counts["attempts"]))
    )
