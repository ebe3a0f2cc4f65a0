"""``payrecon telemetry --streaming``: the micro-batch job's transforms on an unbounded read.

The graph is the micro-batch's (``pipelines.telemetry.build``) between a different source
and different sinks:

* source: Beam's KafkaIO (``ReadFromKafka`` with metadata, cross-language: it runs on
  Dataflow and Flink) from the consumer group's committed offsets, its rows turned into the
  bounded read's ``KAFKA_MESSAGE`` batches (``transforms.kafka_rows``);
* windows: fire early every ``--early-firing`` (processing time), on the watermark, and on
  each late arrival within ``--allowed-lateness``, as discarding panes: each pane is the
  counts that arrived since the window's previous pane;
* window counts: each pane's rows upserted (one load per ``--early-firing`` interval) into
  ``telemetry_window_counts`` under
  ``batch_id = <stream id>/<pane index>`` (the window and gateway are in the key too). A
  retried bundle rewrites the same rows, and a window's counts are the sum of its panes, as
  they are the sum of its micro-batches in the local mode: the finish step is the same;
* request partials: reduced per batch and upserted into ``telemetry_request_partials``,
  keyed by their values (their merge into ``fact_payment_requests`` ignores repeats);
* dead letters: to ``<topic>.dlq``, as in the micro-batches. Every message is decoded or
  dead-lettered; the proof is in the job's metrics (``payrecon.telemetry.decode``:
  ``messages_in`` = ``records_out`` + ``dead_letters``), since a stream has no end to count at.

The metrics, anomalies, conversion and alerts come from ``payrecon telemetry --finish-only``
(``pipelines.telemetry_stream_finish``), run periodically beside the job.

Stopping: drain the job (every open window fires, then the read stops) or ``--update`` it
with the same ``--stream-id``; do not cancel it. KafkaIO commits the group's offsets when
the runner finalizes a checkpoint, once the messages are in the runner's durable state,
not after the sinks wrote: a cancelled job loses the counts of windows that had not fired,
and a new job resumes after them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime

import apache_beam as beam
import polars as pl
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.job_setup import check_warehouse
from pipelines.options import UsageError
from pipelines.reconcile_run import local_runner
from pipelines.telemetry import TelemetryOutputs
from pipelines.telemetry_run import TelemetryRequest, build_for
from schemas.dead_letter import dlq_topic
from schemas.tables import TABLES
from transforms.dead_letters import WriteDeadLetters
from transforms.kafka_admin import ensure_topics
from transforms.kafka_offsets import BrokerUnavailable
from transforms.kafka_rows import KafkaRowsToMessages, read_from_kafka
from transforms.payment_request_facts import partial_schema, reduce_requests
from transforms.upsert_sink import UpsertToWarehouse
from transforms.warehouse import WarehouseError

STATE = TABLES["telemetry_window_counts"]
PARTIALS = TABLES["telemetry_request_partials"]
Reader = Callable[[beam.Pipeline, TelemetryRequest], beam.PCollection]


def streaming_runner_problem(beam_args: list[str]) -> str | None:
    """Why ``--streaming`` cannot run with these Beam options (None: it can)."""
    if not local_runner(PipelineOptions(beam_args)):
        return None
    return (
        "--streaming needs a streaming runner and Beam's KafkaIO expansion service (Java): "
        "--runner=DataflowRunner (with --project, --region, --temp_location) or "
        "--runner=FlinkRunner (with --flink_master); the local runners run micro-batches "
        "only (drop --streaming)"
    )


def default_stream_id(group_id: str, launched: datetime) -> str:
    return f"{group_id}@{launched:%Y%m%dT%H%M%SZ}"


def pane_state(window_counts: pa.Table, stream_id: str) -> pa.Table:
    """``telemetry_window_counts`` rows of panes (``WINDOW_COUNTS`` rows), one batch per
    pane: ``<stream id>/<pane index>``."""
    frame = pl.from_arrow(window_counts)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        batch_id=pl.lit(stream_id + "/") + pl.col("pane").cast(pl.String),
        loaded_at=pl.lit(None, pl.Datetime("us", "UTC")),
    )
    return frame.select(STATE.schema.names).to_arrow().cast(STATE.schema)


def partial_rows(partials: pa.Table) -> pa.Table:
    """``telemetry_request_partials`` rows of a batch's partial rows: one per request (the
    batch reduced), keyed by a hash of its values."""
    reduced = reduce_requests(partials, run_id="").select(partial_schema().names)
    frame = pl.from_arrow(reduced)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        partial_id=frame.hash_rows(seed=0).cast(pl.String),
        loaded_at=pl.lit(None, pl.Datetime("us", "UTC")),
    )
    return frame.select(PARTIALS.schema.names).to_arrow().cast(PARTIALS.schema)


def wire_streaming_sinks(
    outputs: TelemetryOutputs,
    *,
    bootstrap: str,
    overrides: dict,
    warehouse: str,
    stream_id: str,
    every_s: int,
) -> None:
    """Dead letters to ``<topic>.dlq``; window panes and request partials upserted into the
    warehouse, one load per table every ``every_s``. The message counts stay in the
    decoder's metrics."""
    outputs.dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
        bootstrap, producer_overrides=overrides
    )
    (
        outputs.window_counts
        | "PaneRows" >> beam.Map(pane_state, stream_id).with_output_types(pa.Table)
        | "UpsertPanes"
        >> UpsertToWarehouse(warehouse, STATE, loaded_at="loaded_at", every_s=every_s)
    )
    (
        outputs.request_partials
        | "PartialRows" >> beam.Map(partial_rows).with_output_types(pa.Table)
        | "UpsertPartials"
        >> UpsertToWarehouse(warehouse, PARTIALS, loaded_at="loaded_at", every_s=every_s)
    )


def kafka_rows(pipeline: beam.Pipeline, request: TelemetryRequest) -> beam.PCollection:
    return read_from_kafka(
        pipeline,
        bootstrap_servers=request.bootstrap_servers,
        topics=request.topics,
        group_id=request.group_id,
        consumer_overrides=request.kafka_overrides,
    )


def build_streaming_pipeline(
    request: TelemetryRequest, stream_id: str, beam_args: list[str], read: Reader = kafka_rows
) -> beam.Pipeline:
    """The streaming job, not yet run; ``read`` gives the Kafka rows (tests give their own)."""
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args, streaming=True))
    messages = read(pipeline, request) | "KafkaRowsToMessages" >> KafkaRowsToMessages()
    outputs = build_for(request, messages, early_firing_s=request.early_firing_s)
    wire_streaming_sinks(
        outputs, bootstrap=request.bootstrap_servers, overrides=request.kafka_overrides,
        warehouse=request.warehouse, stream_id=stream_id, every_s=request.early_firing_s,
    )  # fmt: skip
    return pipeline


def run_streaming(request: TelemetryRequest, beam_args: list[str]) -> int:
    """Submit the streaming job (it runs until drained); returns the exit code."""
    problem = streaming_runner_problem(beam_args)
    if problem is not None:
        print(f"payrecon telemetry: {problem}", file=sys.stderr)
        return 2
    try:
        check_warehouse(request.warehouse)
        ensure_topics(
            request.bootstrap_servers, [*map(dlq_topic, request.topics), request.alerts_topic],
            overrides=request.kafka_overrides, timeout=request.broker_timeout,
        )  # fmt: skip
    except UsageError as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        return 2
    except (WarehouseError, BrokerUnavailable) as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        return 3
    stream_id = request.stream_id or default_stream_id(request.group_id, datetime.now(UTC))
    result = build_streaming_pipeline(request, stream_id, beam_args).run()
    job = getattr(result, "job_id", lambda: None)()
    print(
        f"\ntelemetry stream {stream_id}: submitted{f' as job {job}' if job else ''}; run "
        "`payrecon telemetry --finish-only` periodically for the metrics and alerts"
    )
    return 0
