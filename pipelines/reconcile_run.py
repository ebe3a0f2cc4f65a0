"""Running ``payrecon reconcile``: validate the request, run the pipeline, then finish.

The order is what makes a run safe to kill and retry: plan the Kafka offsets, run the Beam
pipeline (Kafka writes are keyed by deterministic ids, staged files are named by content),
load the warehouse in one transaction, and only then commit the consumer group's offsets.
A crash anywhere before the commit leaves a state that the rerun of the same window
overwrites with identical rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.job_setup import check_warehouse, clear_staging
from pipelines.options import UsageError, rfc3339
from pipelines.pipeline_errors import PipelineFailed, quiet_reported_failures
from pipelines.reconcile_finish import finish_run
from pipelines.run_health import record_failure, unplanned_run_id
from schemas.dead_letter import dlq_topic
from transforms.kafka import ReadKafkaRanges
from transforms.kafka_admin import ensure_topics
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import BadReadRequest, BrokerUnavailable, ReadPlan, plan_read
from transforms.ledger_mapping import LedgerFieldMap
from transforms.match import MatchConfig
from transforms.stripe_io import API, API_KEY_ENV, ReadStripeBalanceTransactions
from transforms.warehouse import WarehouseError
from transforms.warehouse.base import IncompatibleSchema

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``1h``, ``2d`` (a plain number means seconds)."""
    text = text.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    m = _DURATION.match(text)
    if not m:
        raise UsageError(f"--lateness-margin {text!r}: expected a duration like 30s, 10m or 1h")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


@dataclass(frozen=True)
class ReconcileRequest:
    """A checked ``payrecon reconcile`` invocation."""

    bootstrap_servers: str
    kafka_overrides: dict
    broker_timeout: float
    window_start: datetime
    window_end: datetime
    margin: timedelta
    as_of: datetime
    stripe_source: str
    stripe_api_base: str | None
    warehouse: str
    ledger_topics: tuple[str, ...]  # the repairs topic included
    repairs_topic: str | None
    discrepancies_topic: str
    group_id: str
    max_discrepancies: int | None
    staging_dir: str | None
    buckets: int
    max_payload_bytes: int
    field_map: LedgerFieldMap | None = None

    @classmethod
    def from_args(cls, args, *, now: datetime) -> ReconcileRequest:
        if args.window_start is None or args.window_end is None:
            raise UsageError("--window-start and --window-end are required (RFC 3339, UTC)")
        if args.window_end <= args.window_start:
            raise UsageError(
                f"--window-end {args.window_end.isoformat()} is not after "
                f"--window-start {args.window_start.isoformat()}"
            )
        if not args.stripe_source:
            raise UsageError("--stripe-source is required: api, or an itemized export file")
        if args.stripe_source != API:
            _check_export_exists(args.stripe_source)
        elif not os.environ.get(API_KEY_ENV):
            raise UsageError(f"--stripe-source api needs the Stripe key in ${API_KEY_ENV}")
        if args.buckets < 1:
            raise UsageError(f"--buckets must be at least 1, got {args.buckets}")
        if args.max_discrepancies is not None and args.max_discrepancies < 0:
            raise UsageError("--max-discrepancies must not be negative")
        try:
            overrides = parse_overrides(args.kafka_config)
            as_of = rfc3339(args.as_of) if args.as_of else now
            field_map = _field_map(getattr(args, "ledger_field_map", None))
        except Exception as exc:  # argparse.ArgumentTypeError or ValueError, both user input
            raise UsageError(str(exc)) from None
        return cls(
            bootstrap_servers=args.bootstrap_servers,
            kafka_overrides=overrides,
            broker_timeout=args.broker_timeout,
            window_start=args.window_start,
            window_end=args.window_end,
            margin=parse_duration(args.lateness_margin),
            as_of=as_of,
            stripe_source=args.stripe_source,
            stripe_api_base=args.stripe_api_base,
            warehouse=args.warehouse,
            ledger_topics=tuple(
                dict.fromkeys(
                    [*(args.ledger_topics or ["ledger.transactions"]), args.repairs_topic]
                    if args.repairs_topic
                    else (args.ledger_topics or ["ledger.transactions"])
                )
            ),
            repairs_topic=args.repairs_topic or None,
            discrepancies_topic=args.discrepancies_topic,
            group_id=args.group_id,
            max_discrepancies=args.max_discrepancies,
            staging_dir=args.staging_dir,
            buckets=args.buckets,
            max_payload_bytes=args.max_payload_bytes,
            field_map=field_map,
        )


def _field_map(text: str | None) -> LedgerFieldMap | None:
    if not text:
        return None
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--ledger-field-map is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError("--ledger-field-map must be a JSON object with fields and constants")
    try:
        return LedgerFieldMap.from_json(parsed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--ledger-field-map: {exc}") from None


def _check_export_exists(pattern: str) -> None:
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # a filesystem error is a bad path given by the user
        raise UsageError(f"--stripe-source {pattern!r}: {exc}") from None
    if not found:
        raise UsageError(f"--stripe-source {pattern!r}: no such file")


def run_id_of(request: ReconcileRequest, plan: ReadPlan) -> str:
    """The same id for the same window, inputs and settings, so reruns overwrite themselves."""
    identity = {
        "job": "reconcile",
        "window": [request.window_start.isoformat(), request.window_end.isoformat()],
        "margin_s": request.margin.total_seconds(),
        "as_of": request.as_of.isoformat(),
        "ranges": [[r.topic, r.partition, r.start, r.stop] for r in plan.ranges],
        "stripe": _stripe_identity(request.stripe_source),
    }
    if request.field_map:  # only when set, so existing runs keep their ids
        identity["field_map"] = request.field_map.to_json()
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"rcn_{request.window_start:%Y%m%dT%H%M%SZ}_{digest[:16]}"


def _stripe_identity(source: str) -> list[str]:
    if source == API:
        return [API]
    identity = []
    for m in sorted(FileSystems.match([source])[0].metadata_list, key=lambda m: m.path):
        digest = hashlib.sha256()
        with FileSystems.open(m.path) as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
        identity.append(f"{Path(m.path).name}:{digest.hexdigest()}")
    return identity


def staging_root(request: ReconcileRequest, run_id: str) -> str:
    if request.staging_dir:
        return FileSystems.join(request.staging_dir, run_id)
    parts = urlparse(request.warehouse)
    if parts.scheme == "duckdb":
        path = Path(parts.netloc + parts.path)
        return str(path.with_name(path.name + ".staging") / run_id)
    return str(Path(tempfile.gettempdir()) / "payrecon-staging" / run_id)


def run_reconcile(request: ReconcileRequest, beam_args: list[str]) -> int:
    """Run the job; return the exit code (messages for the user go to stderr)."""
    started = time.time()
    run_id = unplanned_run_id("reconcile", request.window_start)
    try:
        check_warehouse(request.warehouse)
        read_start = request.window_start - request.margin
        read_end = request.window_end + request.margin
        _say(
            f"planning the read of {', '.join(request.ledger_topics)} "
            f"[{read_start:%Y-%m-%dT%H:%M:%SZ}, {read_end:%Y-%m-%dT%H:%M:%SZ})"
        )
        if request.repairs_topic:  # a first run may come before anything was repaired
            ensure_topics(
                request.bootstrap_servers,
                [request.repairs_topic],
                overrides=request.kafka_overrides,
                timeout=request.broker_timeout,
            )
        plan = plan_read(
            request.bootstrap_servers,
            request.ledger_topics,
            read_start,
            read_end,
            consumer_overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )
        run_id = run_id_of(request, plan)
        ensure_topics(
            request.bootstrap_servers,
            [request.discrepancies_topic, *map(dlq_topic, request.ledger_topics)],
            overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )
        staging = staging_root(request, run_id)
        clear_staging(staging)
        config = MatchConfig(
            request.window_start,
            request.window_end,
            run_id,
            detected_at=request.as_of,
            margin=request.margin,
        )
        _say(
            f"run {run_id}: {plan.total_offsets:,} ledger offsets, Stripe from "
            f"{request.stripe_source}"
        )
        _run_pipeline(request, plan, config, staging, beam_args)
        code = finish_run(request, plan, config, staging, started=started)
        if code == 0:
            clear_staging(staging)  # loaded and committed; kept only when a run needs a look
        return code
    except (UsageError, BadReadRequest, IncompatibleSchema) as exc:
        print(f"payrecon reconcile: {exc}", file=sys.stderr)
        return 2  # the warehouse may be the bad configuration: nothing is recorded
    except WarehouseError as exc:
        print(f"payrecon reconcile: {exc}", file=sys.stderr)
        return 3
    except (BrokerUnavailable, PipelineFailed) as exc:
        print(f"payrecon reconcile: {exc}", file=sys.stderr)
        code = exc.exit_code if isinstance(exc, PipelineFailed) else 3
        record_failure(
            request.warehouse,
            job="reconcile",
            run_id=run_id,
            window=(request.window_start, request.window_end),
            started_at=datetime.fromtimestamp(started, UTC),
            exit_code=code,
            error=str(exc),
            # exit 1 from inside the pipeline: a data-quality suite that fails the run
            status="data_quality_failed" if code == 1 else "failed",
        )
        return code


def _run_pipeline(
    request: ReconcileRequest,
    plan: ReadPlan,
    config: MatchConfig,
    staging: str,
    beam_args: list[str],
) -> None:
    pipeline = build_pipeline(request, plan, config, staging, beam_args)
    _say("running the pipeline (decode, validate, match, classify, publish, stage)")
    with quiet_reported_failures():
        try:
            pipeline.run().wait_until_finish()
        except Exception as exc:
            reported = PipelineFailed.of(exc)
            if reported is None:
                raise  # a bug: the traceback is what its reader needs
            raise reported from None
    clear_staging(join_spill_dir(staging))  # the join's files are read; the load needs none


def join_spill_dir(staging: str) -> str:
    """Where the join's shuffle goes through files on a local runner (a run's staging)."""
    return FileSystems.join(staging, "_join")


def local_runner(options: PipelineOptions) -> bool:
    """Whether the runner is one of Beam's in-process runners, which hold every shuffle's
    input in memory (Dataflow, Flink and Spark have a shuffle of their own)."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return (name or "DirectRunner").lower().removesuffix("runner") in LOCAL_RUNNERS


LOCAL_RUNNERS = {"direct", "bundlebaseddirect", "switchingdirect", "fnapi", "prism"}


def build_pipeline(
    request: ReconcileRequest,
    plan: ReadPlan,
    config: MatchConfig,
    staging: str,
    beam_args: list[str],
) -> beam.Pipeline:
    """The run's Beam pipeline, read to sinks, not yet run (a test builds it for Dataflow)."""
    from pipelines.reconcile import build, wire_sinks

    options = PipelineOptions(beam_args)
    pipeline = beam.Pipeline(options=options)
    ledger = pipeline | "ReadLedgerWindow" >> ReadKafkaRanges(
        request.bootstrap_servers,
        plan,
        consumer_overrides=request.kafka_overrides,
        idle_timeout_s=request.broker_timeout,
    )
    stripe = pipeline | "ReadStripe" >> ReadStripeBalanceTransactions(
        request.stripe_source,
        read_start=config.read_start,
        read_end=config.read_end,
        as_of=request.as_of,
        api_base=request.stripe_api_base,
    )
    outputs = build(
        ledger,
        stripe,
        config=config,
        buckets=request.buckets,
        max_payload_bytes=request.max_payload_bytes,
        field_map=request.field_map,
        spill_dir=join_spill_dir(staging) if local_runner(options) else None,
    )
    wire_sinks(
        outputs,
        bootstrap=request.bootstrap_servers,
        producer_overrides=request.kafka_overrides,
        discrepancies_topic=request.discrepancies_topic,
        staging=staging,
    )
    return pipeline


def _say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


__all__ = ["UTC", "ReconcileRequest", "parse_duration", "run_id_of", "run_reconcile"]
