"""``payrecon read``: read a window of a ledger topic, decode it, dead-letter what is bad.

The first stage of every payrecon job, runnable on its own to inspect a topic: it prints
how many messages were read, decoded and dead-lettered (by reason), and the offsets read per
partition. With ``--group-id`` it starts after the group's committed offsets, and with
``--commit`` it commits what it read once every sink has succeeded.
"""

from __future__ import annotations

import argparse
import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import KafkaOptions, UsageError, WindowOptions, check_window
from pipelines.run_summary import ReadSummary
from schemas.dead_letter import dlq_topic
from transforms.dead_letters import WriteDeadLetters
from transforms.decode import (
    DECODED_LEDGER_EVENT,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DecodedBatch,
    DecodeLedgerEvents,
)
from transforms.kafka import ReadKafkaRanges
from transforms.kafka_admin import ensure_topics
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import (
    BadReadRequest,
    BrokerUnavailable,
    ReadPlan,
    commit_offsets,
    plan_read,
)
from transforms.staging import StageTables

JOB = "read"


class ReadOptions(KafkaOptions, WindowOptions):
    """Options of ``payrecon read``."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--topic",
            dest="topics",
            action="append",
            default=None,
            help="Topic to read (repeatable; default: ledger.transactions).",
        )
        parser.add_argument(
            "--group-id",
            "--group_id",
            dest="group_id",
            default=None,
            help="Consumer group: start after its committed offsets.",
        )
        parser.add_argument(
            "--commit",
            action="store_true",
            help="Commit the offsets read for --group-id after every sink succeeded.",
        )
        parser.add_argument(
            "--out",
            default=None,
            help="Directory for the decoded events as Parquet, in DIR/events/ (default: none).",
        )
        parser.add_argument(
            "--no-dlq",
            dest="dlq",
            action="store_false",
            help="Do not write dead letters to <topic>.dlq (they are still counted).",
        )
        parser.add_argument(
            "--max-payload-bytes",
            "--max_payload_bytes",
            dest="max_payload_bytes",
            type=int,
            default=DEFAULT_MAX_PAYLOAD_BYTES,
            help="Larger messages are dead-lettered as payload_too_large (default: %(default)s).",
        )


def build(
    messages,
    *,
    bootstrap_servers: str,
    producer_overrides: dict,
    write_dlq: bool,
    out: str | None,
    max_payload_bytes: int,
) -> DecodedBatch:
    """The job's logic on a PCollection of raw message batches (tests feed it directly)."""
    decoded = messages | "DecodeLedgerEvents" >> DecodeLedgerEvents(
        job=JOB, max_payload_bytes=max_payload_bytes
    )
    if write_dlq:
        decoded.dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            bootstrap_servers, producer_overrides=producer_overrides
        )
    if out:
        decoded.events | "WriteEvents" >> StageTables(out, "events", DECODED_LEDGER_EVENT)
    return decoded


def build_pipeline(
    options: ReadOptions, plan: ReadPlan, overrides: dict, pipeline_args: list[str]
) -> beam.Pipeline:
    """The job's Beam pipeline, read to sinks, not yet run (a test builds it for Dataflow)."""
    pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args))
    messages = pipeline | "ReadLedgerWindow" >> ReadKafkaRanges(
        options.bootstrap_servers,
        plan,
        consumer_overrides=overrides,
        idle_timeout_s=options.broker_timeout,
    )
    build(
        messages,
        bootstrap_servers=options.bootstrap_servers,
        producer_overrides=overrides,
        write_dlq=options.dlq,
        out=options.out,
        max_payload_bytes=options.max_payload_bytes,
    )
    return pipeline


def run_read(
    options: ReadOptions, pipeline_args: list[str], plan: ReadPlan | None = None
) -> ReadSummary:
    """Plan (unless given a recorded plan), run, commit if asked; return the counts."""
    check_window(options.window_start, options.window_end)
    if options.commit and not options.group_id:
        raise UsageError("--commit needs --group-id")
    overrides = parse_overrides(options.kafka_config)
    topics = options.topics or ["ledger.transactions"]
    if plan is None:
        plan = plan_read(
            options.bootstrap_servers,
            topics,
            options.window_start,
            options.window_end,
            group_id=options.group_id,
            consumer_overrides=overrides,
            timeout=options.broker_timeout,
        )
    if options.dlq:
        ensure_topics(
            options.bootstrap_servers,
            [dlq_topic(t) for t in topics],
            overrides=overrides,
            timeout=options.broker_timeout,
        )
    pipeline = build_pipeline(options, plan, overrides, pipeline_args)
    result = pipeline.run()
    result.wait_until_finish()
    summary = ReadSummary.from_result(result, plan)
    if options.commit:
        commit_offsets(options.bootstrap_servers, options.group_id, plan.ranges, overrides)
    return summary


def parse_args(argv: list[str]) -> tuple[ReadOptions, list[str]]:
    """The job's options and the Beam flags left over."""
    parser = argparse.ArgumentParser(
        prog="payrecon read",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ReadOptions._add_argparse_args(parser)
    KafkaOptions._add_argparse_args(parser)
    WindowOptions._add_argparse_args(parser)
    known, pipeline_args = parser.parse_known_args(argv)
    return PipelineOptions(pipeline_args, **vars(known)).view_as(ReadOptions), pipeline_args


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    options, pipeline_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = run_read(options, pipeline_args)
    except (UsageError, BadReadRequest) as exc:
        print(f"payrecon read: {exc}", file=sys.stderr)
        return 2
    except BrokerUnavailable as exc:
        print(f"payrecon read: broker unavailable: {exc}", file=sys.stderr)
        return 3
    print(summary.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
