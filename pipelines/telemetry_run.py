"""One ``payrecon telemetry`` micro-batch: plan, run the pipeline, load, then commit.

The batch is the consumer group's committed offsets to each partition's end of both topics.
Its run id is a hash of where it starts (the group and the start offsets), not where it
ends: a batch killed before its commit is retried from the same offsets, reads the same
messages and maybe more, and replaces everything the killed attempt may have loaded
(its window counts are keyed by the run id). The order is the reconcile job's: pipeline
(dead letters keyed as they came, staged files named by content), one warehouse
transaction, then the forward-only offset commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.config import STALL_GROUPS
from pipelines.job_setup import check_warehouse, clear_staging
from pipelines.options import UsageError
from pipelines.pipeline_errors import PipelineFailed, quiet_reported_failures
from pipelines.reconcile_run import staging_root
from pipelines.run_health import record_failure, unplanned_run_id
from pipelines.telemetry import (
    JOB,
    build,
    parse_groups,
    parse_windows,
    seconds_of,
    wire_sinks,
)
from pipelines.telemetry_finish import finish_batch
from pipelines.telemetry_lag import lag_rows
from schemas.dead_letter import dlq_topic
from transforms.consumer_lag import measure_lag
from transforms.kafka import ReadKafkaRanges
from transforms.kafka_admin import ensure_topics
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import BadReadRequest, BrokerUnavailable, ReadPlan, plan_read
from transforms.telemetry_windows import WindowSpec
from transforms.warehouse import WarehouseError
from transforms.warehouse.base import IncompatibleSchema


@dataclass(frozen=True)
class TelemetryRequest:
    """A checked ``payrecon telemetry`` invocation."""

    bootstrap_servers: str
    kafka_overrides: dict
    broker_timeout: float
    telemetry_topic: str
    results_topic: str
    stripe_events_topic: str | None
    alerts_topic: str
    group_id: str
    warehouse: str
    windows: tuple[WindowSpec, ...]
    allowed_lateness_s: int
    staging_dir: str | None
    max_payload_bytes: int
    repeat_every_s: int | None
    lag_groups: tuple[str, ...] | None = None  # None: every group the broker lists
    stall_groups: tuple[str, ...] = STALL_GROUPS
    stall_after_s: int = 120
    streaming: bool = False
    early_firing_s: int = 30
    stream_id: str | None = None
    finish_only: bool = False

    @classmethod
    def from_args(cls, args) -> TelemetryRequest:
        events = None if args.stripe_events_topic == "none" else args.stripe_events_topic
        inputs = [args.telemetry_topic, args.results_topic, *([events] if events else [])]
        if len(set(inputs)) < len(inputs):
            raise UsageError(
                "--telemetry-topic, --results-topic and --stripe-events-topic must be "
                f"different topics, got {', '.join(inputs)}"
            )
        if args.alerts_topic in inputs:
            raise UsageError(f"--alerts-topic {args.alerts_topic!r} must not be an input topic")
        if args.max_payload_bytes < 1:
            raise UsageError(f"--max-payload-bytes must be positive, got {args.max_payload_bytes}")
        try:
            overrides = parse_overrides(args.kafka_config)
        except Exception as exc:  # argparse.ArgumentTypeError or ValueError: user input
            raise UsageError(str(exc)) from None
        repeat = seconds_of("--repeat-every", args.repeat_every) if args.repeat_every else None
        stall_after = seconds_of("--stall-after", args.stall_after)
        if stall_after < 1:
            raise UsageError(f"--stall-after {args.stall_after!r}: must be at least 1s")
        early = seconds_of("--early-firing", args.early_firing)
        if early < 1:
            raise UsageError(f"--early-firing {args.early_firing!r}: must be at least 1s")
        if args.streaming and (args.finish_only or repeat):
            raise UsageError(
                "--streaming submits a job that runs until drained: it takes neither "
                "--finish-only (run that beside it) nor --repeat-every"
            )
        return cls(
            bootstrap_servers=args.bootstrap_servers,
            kafka_overrides=overrides,
            broker_timeout=args.broker_timeout,
            telemetry_topic=args.telemetry_topic,
            results_topic=args.results_topic,
            stripe_events_topic=events,
            alerts_topic=args.alerts_topic,
            group_id=args.group_id,
            warehouse=args.warehouse,
            windows=parse_windows(args.windows),
            allowed_lateness_s=seconds_of("--allowed-lateness", args.allowed_lateness),
            staging_dir=args.staging_dir,
            max_payload_bytes=args.max_payload_bytes,
            repeat_every_s=repeat,
            lag_groups=parse_groups("--lag-groups", args.lag_groups, everything=True),
            stall_groups=parse_groups("--stall-groups", args.stall_groups, everything=False) or (),
            stall_after_s=stall_after,
            streaming=args.streaming,
            early_firing_s=early,
            stream_id=args.stream_id,
            finish_only=args.finish_only,
        )

    @property
    def topics(self) -> tuple[str, ...]:
        events = (self.stripe_events_topic,) if self.stripe_events_topic else ()
        return self.telemetry_topic, self.results_topic, *events


def run_id_of(plan: ReadPlan) -> str:
    """The same id for every attempt of the batch that starts at these offsets."""
    starts = [[r.topic, r.partition, r.start] for r in plan.ranges]
    identity = json.dumps({"job": JOB, "group": plan.group_id, "starts": starts}, sort_keys=True)
    return "tel_" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def run_telemetry(request: TelemetryRequest, beam_args: list[str]) -> int:
    """One micro-batch; returns the exit code (messages for the user go to stderr)."""
    started = datetime.now(UTC)
    run_id = unplanned_run_id(JOB, started)
    try:
        check_warehouse(request.warehouse)
        ensure_topics(
            request.bootstrap_servers,
            [*request.topics, *map(dlq_topic, request.topics), request.alerts_topic],
            overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )
        plan = plan_read(
            request.bootstrap_servers,
            request.topics,
            group_id=request.group_id,
            consumer_overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )
        run_id = run_id_of(plan)
        lag = lag_rows(measure_groups_lag(request), datetime.now(UTC), run_id)
        staging = staging_root(request, run_id)  # type: ignore[arg-type]
        clear_staging(staging)
        _say(f"run {run_id}: {plan.total_offsets:,} messages from the committed offsets")
        if plan.total_offsets:
            _run_pipeline(request, plan, staging, beam_args)
        code = finish_batch(request, plan, run_id, staging, started=started, lag=lag)
        if code == 0:
            clear_staging(staging)  # loaded and committed; kept only when a run needs a look
        return code
    except (UsageError, BadReadRequest, IncompatibleSchema) as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        return 2
    except WarehouseError as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        return 3
    except (BrokerUnavailable, PipelineFailed) as exc:
        print(f"payrecon telemetry: {exc}", file=sys.stderr)
        code = exc.exit_code if isinstance(exc, PipelineFailed) else 3
        record_failure(
            request.warehouse, job=JOB, run_id=run_id, window=(started, started),
            started_at=started, exit_code=code, error=str(exc),
        )  # fmt: skip
        return code


def build_for(request: TelemetryRequest, messages, early_firing_s: int | None = None):
    """``build`` with the request's topics, windows and limits (``TelemetryOutputs``)."""
    return build(
        messages,
        telemetry_topic=request.telemetry_topic,
        results_topic=request.results_topic,
        stripe_events_topic=request.stripe_events_topic,
        windows=request.windows,
        allowed_lateness_s=request.allowed_lateness_s,
        max_payload_bytes=request.max_payload_bytes,
        early_firing_s=early_firing_s,
    )


def build_pipeline(
    request: TelemetryRequest, plan: ReadPlan, staging: str, beam_args: list[str]
) -> beam.Pipeline:
    """The batch's Beam pipeline, read to sinks, not yet run (a test builds it for Dataflow)."""
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    messages = pipeline | "ReadTelemetryAndResults" >> ReadKafkaRanges(
        request.bootstrap_servers,
        plan,
        consumer_overrides=request.kafka_overrides,
        idle_timeout_s=request.broker_timeout,
    )
    outputs = build_for(request, messages)
    wire_sinks(
        outputs, bootstrap=request.bootstrap_servers, overrides=request.kafka_overrides,
        staging=staging,
    )  # fmt: skip
    return pipeline


def _run_pipeline(
    request: TelemetryRequest, plan: ReadPlan, staging: str, beam_args: list[str]
) -> None:
    pipeline = build_pipeline(request, plan, staging, beam_args)
    _say("running the pipeline (decode, window, count, stage)")
    with quiet_reported_failures():
        try:
            pipeline.run().wait_until_finish()
        except Exception as exc:
            reported = PipelineFailed.of(exc)
            if reported is None:
                raise  # a bug: the traceback is what its reader needs
            raise reported from None


def measure_groups_lag(request: TelemetryRequest) -> list:
    """The lag of ``--lag-groups`` and the watched ``--stall-groups`` (none: nothing)."""
    if request.lag_groups == ():
        return []
    groups = None if request.lag_groups is None else (*request.lag_groups, *request.stall_groups)
    lags = measure_lag(
        request.bootstrap_servers, groups, request.kafka_overrides, request.broker_timeout
    )
    groups = len({x.group_id for x in lags})
    _say(f"consumer lag: {sum(x.lag for x in lags):,} messages waiting for {groups} group(s)")
    return lags


def _say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)
