"""``payrecon telemetry``: payment metrics per event-time window, and conversion by cohort.

Reads ``payments.telemetry`` (one message per gateway call), ``payments.results`` (one
per payment) and ``stripe.events`` (one per webhook Stripe delivered) from the consumer
group's committed offsets to their end, as one bounded micro-batch: decodes them (bad
messages to ``<topic>.dlq``), counts calls, results and Stripe events per
event-time window (1-minute fixed and 1-hour windows sliding every 5 minutes) and per
gateway, and assembles one row per payment request. Then, in one warehouse transaction:
the batch's window counts (``telemetry_window_counts``), the metrics of every window it
touched recomputed from all batches' counts (``telemetry_minutely``: attempts, 429 rate,
error rate by reason, latency p50/p95/p99, results, successes, conversion, decline rate by
code, revenue per currency), the request rows (``fact_payment_requests``), conversion per
day and cohort (``payment_conversion``), the minute windows the anomaly model finds
anomalous (``telemetry_anomalies``: a 429 surge, a latency p95 spike, a conversion drop,
scored against the history of the same metric by time of day and week; a cohort whose
conversion dropped significantly against its own last two hours), the lag of every consumer
group per partition measured when the run started (``telemetry_consumer_lag``), the watched
groups found stalled (messages waiting, no commit for ``--stall-after``:
``telemetry_anomalies`` too) and the run's ``recon_health`` row; then one alert per anomaly
to ``telemetry.alerts``; only then the group's offsets are committed. A run killed anywhere
before the commit is repeated by the next run with the same result; two micro-batches give
the tables one batch over the same
messages gives. ``--repeat-every 1m`` runs micro-batches until interrupted.

``--streaming`` (``pipelines.telemetry_stream``) submits the same transforms as a streaming
job on Dataflow or Flink: Beam's KafkaIO from the group's offsets, windows firing early
(``--early-firing``), on the watermark and late (``--allowed-lateness``) as discarding panes,
each pane's counts upserted into ``telemetry_window_counts`` as a batch of its own
(``<stream id>/<pane index>``), so the counts add up as micro-batches' do. ``--finish-only``
(``pipelines.telemetry_stream_finish``), run periodically beside it, does what a
micro-batch does after its pipeline for what the stream loaded since the last finish. No
local runner fires windows of an unbounded source before it ends, so the local mode is
micro-batches, and ``--streaming`` on a local runner exits 2 saying what it needs.

Exit codes: 0 done; 2 bad usage or configuration; 3 broker or warehouse unreachable
(nothing committed: rerun).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa

from pipelines.config import STALL_GROUPS
from pipelines.options import KafkaOptions, UsageError
from pipelines.reconcile_run import parse_duration
from transforms.dead_letters import WriteDeadLetters
from transforms.decode import DEFAULT_MAX_PAYLOAD_BYTES
from transforms.payment_decode import (
    RESULTS,
    STRIPE_EVENTS,
    TELEMETRY,
    DecodePaymentMessages,
)
from transforms.payment_request_facts import request_partials
from transforms.staging import StageTables
from transforms.telemetry_windows import (
    HOUR_EVERY_5_MINUTES,
    MINUTE,
    WindowedPaymentCounts,
    WindowSpec,
)

JOB = "telemetry"
WINDOWS = {"minute": MINUTE, "hour": HOUR_EVERY_5_MINUTES}
WINDOW_COUNTS = pa.schema(
    [
        ("window_start", pa.timestamp("us", tz="UTC")),
        ("window_end", pa.timestamp("us", tz="UTC")),
        ("gateway", pa.string()),
        ("component", pa.string()),
        ("count", pa.int64()),
        ("pane", pa.int64()),  # the window's firing (streaming panes are deltas)
    ]
)
log = logging.getLogger(__name__)


class TelemetryOptions(KafkaOptions):
    """Options of ``payrecon telemetry``."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add = parser.add_argument
        add(
            "--telemetry-topic",
            dest="telemetry_topic",
            default="payments.telemetry",
            help="Payment telemetry v1, one message per gateway call (default: %(default)s).",
        )
        add(
            "--results-topic",
            dest="results_topic",
            default="payments.results",
            help="Payment result v1, one message per payment (default: %(default)s).",
        )
        add(
            "--stripe-events-topic",
            dest="stripe_events_topic",
            default="stripe.events",
            help="Stripe events as `payrecon webhooks serve` publishes them, counted per "
            "minute and type (webhook_events) and against the succeeded payments "
            "(webhook_coverage); none: do not read them (default: %(default)s).",
        )
        add(
            "--alerts-topic",
            dest="alerts_topic",
            default="telemetry.alerts",
            help="Where anomalies are published, one JSON message per anomalous window keyed "
            "by its alert id (default: %(default)s).",
        )
        add(
            "--group-id",
            dest="group_id",
            default="payrecon-telemetry",
            help="Consumer group: each run reads from its committed offsets to the end and "
            "commits after the warehouse load (default: %(default)s).",
        )
        add(
            "--warehouse",
            default="duckdb:///payrecon.duckdb",
            help="Where the tables go: duckdb:///path.duckdb, bigquery://project/dataset or "
            "snowflake://account/database/schema (default: %(default)s).",
        )
        add(
            "--windows",
            default="minute,hour",
            help="Event-time windows: minute (1-minute fixed), hour (1 hour sliding every "
            "5 minutes), comma-separated (default: %(default)s).",
        )
        add(
            "--allowed-lateness",
            dest="allowed_lateness",
            default="1h",
            help="Streaming only: how long after a window's end late data still updates "
            "it, e.g. 10m, 1h (micro-batches merge late data into its window at any age; "
            "default: %(default)s).",
        )
        add(
            "--staging-dir",
            dest="staging_dir",
            default=None,
            help="Where a run stages its rows before the warehouse load (default: beside a "
            "DuckDB warehouse, else the system temp dir; gs:// on Dataflow).",
        )
        add(
            "--max-payload-bytes",
            dest="max_payload_bytes",
            type=int,
            default=DEFAULT_MAX_PAYLOAD_BYTES,
            help="Larger messages are dead-lettered (default: %(default)s).",
        )
        add(
            "--lag-groups",
            dest="lag_groups",
            default="all",
            help="Consumer groups whose lag per partition each run measures into "
            "telemetry_consumer_lag, comma-separated; all: every group the broker lists; "
            "none: measure nothing (default: %(default)s).",
        )
        add(
            "--stall-groups",
            dest="stall_groups",
            default=",".join(STALL_GROUPS),
            help="Continuous consumers to alert on when stalled: messages waiting and no "
            "commit for --stall-after; not batch jobs' groups, which wait by design; none: "
            "no stall alerts (default: %(default)s).",
        )
        add(
            "--stall-after",
            dest="stall_after",
            default="2m",
            help="How long a watched group may keep messages waiting without committing "
            "before it is alerted as stalled, e.g. 90s, 2m (default: %(default)s).",
        )
        add("--repeat-every", dest="repeat_every", default=None,
            help="Run a micro-batch (or, with --finish-only, a finish step) every interval "
            "(e.g. 1m) until interrupted (default: once, then exit).")  # fmt: skip
        add(
            "--streaming",
            action="store_true",
            help="Submit the streaming job instead of a micro-batch: an unbounded read "
            "(Beam's KafkaIO) on a streaming runner (--runner=DataflowRunner or FlinkRunner), "
            "window panes written to the warehouse as they fire; run --finish-only "
            "periodically beside it.",
        )
        add(
            "--early-firing",
            dest="early_firing",
            default="30s",
            help="Streaming only: how often a window still open fires its counts so far, "
            "in processing time, e.g. 30s, 1m (default: %(default)s).",
        )
        add(
            "--stream-id",
            dest="stream_id",
            default=None,
            help="Streaming only: names the job's panes in telemetry_window_counts; keep it "
            "across --update of a running job, change it for a new job (default: the group "
            "id and the launch time).",
        )
        add(
            "--finish-only",
            dest="finish_only",
            action="store_true",
            help="Read no messages: recompute telemetry_minutely, requests, conversion and "
            "anomalies of what the streaming job loaded since the last finish, publish "
            "alerts and measure consumer lag.",
        )


class TelemetryOutputs(NamedTuple):
    window_counts: beam.PCollection  # WINDOW_COUNTS tables
    request_partials: beam.PCollection  # partial FACT_PAYMENT_REQUESTS_V1 tables
    dead_letters: beam.PCollection  # DEAD_LETTER_V1 tables
    counts: beam.PCollection  # MESSAGE_COUNTS tables


def _window_rows(batch) -> pa.Table:
    rows = [
        (w.start * 1_000_000, w.end * 1_000_000, w.gateway, component, n, w.pane)
        for w in batch
        for component, n in w.counts.items()
    ]
    columns = list(zip(*rows, strict=True)) if rows else [[]] * len(WINDOW_COUNTS)
    return pa.Table.from_arrays(
        [pa.array(c, t) for c, t in zip(columns, WINDOW_COUNTS.types, strict=True)],
        schema=WINDOW_COUNTS,
    )


def build(
    messages,
    *,
    telemetry_topic: str,
    results_topic: str,
    windows: tuple[WindowSpec, ...],
    allowed_lateness_s: int,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    stripe_events_topic: str | None = None,
    early_firing_s: int | None = None,
) -> TelemetryOutputs:
    """The job's logic, from raw message batches of the topics to every output; with
    ``early_firing_s`` (streaming) the window counts are discarding panes (deltas)."""
    decoded = messages | "DecodePaymentMessages" >> DecodePaymentMessages(
        telemetry_topic=telemetry_topic,
        results_topic=results_topic,
        stripe_events_topic=stripe_events_topic,
        job=JOB,
        max_payload_bytes=max_payload_bytes,
    )
    telemetry, results = decoded[TELEMETRY], decoded[RESULTS]
    counted = (telemetry, results) if stripe_events_topic is None else (
        telemetry, results, decoded[STRIPE_EVENTS]
    )  # fmt: skip
    window_counts = (
        counted
        | "CountPerWindow" >> WindowedPaymentCounts(windows, allowed_lateness_s, early_firing_s)
        | "BatchWindows" >> beam.BatchElements(min_batch_size=1_000, max_batch_size=50_000)
        | "WindowCountsTable" >> beam.Map(_window_rows).with_output_types(pa.Table)
    )
    partials = (
        telemetry
        | "AttemptsPerRequest" >> beam.Map(request_partials, TELEMETRY).with_output_types(pa.Table),
        results
        | "ResultsPerRequest" >> beam.Map(request_partials, RESULTS).with_output_types(pa.Table),
    ) | "AllRequestPartials" >> beam.Flatten()
    return TelemetryOutputs(window_counts, partials, decoded.dead_letters, decoded.counts)


def wire_sinks(outputs: TelemetryOutputs, *, bootstrap: str, overrides: dict, staging: str):
    """Dead letters to ``<topic>.dlq``; every output staged for the warehouse load."""
    outputs.dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
        bootstrap, producer_overrides=overrides
    )
    for name in TelemetryOutputs._fields:
        getattr(outputs, name) | f"Stage_{name}" >> StageTables(staging, name)


def parse_windows(text: str) -> tuple[WindowSpec, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WINDOWS]
    if unknown or not names:
        raise UsageError(f"--windows {text!r}: expected a comma-separated list of minute, hour")
    return tuple(WINDOWS[n] for n in dict.fromkeys(names))


def parse_groups(flag: str, text: str, *, everything: bool) -> tuple[str, ...] | None:
    """Comma-separated group ids; ``none`` is no group, ``all`` (where ``everything``
    allows it) is None: every group the broker lists."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names == ("none",):
        return ()
    if names == ("all",) and everything:
        return None
    if not names or {"all", "none"} & set(names):
        allowed = "all, none" if everything else "none"
        raise UsageError(f"{flag} {text!r}: expected group ids separated by commas, or {allowed}")
    return names


def seconds_of(flag: str, text: str) -> int:
    try:
        return int(parse_duration(text).total_seconds())
    except UsageError:
        raise UsageError(f"{flag} {text!r}: expected a duration like 30s, 10m or 1h") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payrecon telemetry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --flag is passed to Beam (e.g. --direct_num_workers=2).",
    )
    for options in (TelemetryOptions, KafkaOptions):
        options._add_argparse_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.telemetry_run import TelemetryRequest, run_telemetry

    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    known, beam_args = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        request = TelemetryRequest.from_args(known)
    except UsageError as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        return 2
    if request.streaming:
        from pipelines.telemetry_stream import run_streaming

        return run_streaming(request, beam_args)
    if request.finish_only:
        from pipelines.telemetry_stream_finish import run_finish_only as step
    else:
        step = run_telemetry
    while True:
        started = time.monotonic()
        code = step(request, beam_args)
        if code != 0 or request.repeat_every_s is None:
            return code
        time.sleep(max(0.0, request.repeat_every_s - (time.monotonic() - started)))


if __name__ == "__main__":
    raise SystemExit(main())
