"""Every pipeline as Dataflow would receive it (reconcile, telemetry, read, and the streaming
telemetry job): built with DataflowRunner options and ``--dry_run=True``, which runs
Dataflow's own translation (the portable pipeline proto, the Docker environment, staging
``setup.py`` as an sdist) and stops before any call to Google.

No broker and no cloud: the read plans are made up, the Stripe export is an empty local file.
The streaming job's ``ReadFromKafka`` needs its Java expansion service, which cannot run
here: an unbounded Python source of the rows it emits (``PeriodicImpulse``) stands in for it,
so what is checked is everything after the read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms.periodicsequence import PeriodicImpulse

from pipelines import read, reconcile_run, telemetry, telemetry_run, telemetry_stream
from pipelines.reconcile import _parser
from pipelines.reconcile_run import ReconcileRequest
from transforms.kafka_offsets import PartitionRange, ReadPlan
from transforms.kafka_rows import KafkaReadRow
from transforms.match import MatchConfig

ROOT = Path(__file__).resolve().parent.parent
# Primitives every portable runner (Dataflow runner v2, Flink) executes.
PORTABLE_PRIMITIVES = {
    "beam:transform:impulse:v1",
    "beam:transform:pardo:v1",
    "beam:transform:group_by_key:v1",
    "beam:transform:flatten:v1",
    "beam:transform:window_into:v1",
    "beam:transform:reshuffle:v1",
    "beam:transform:combine_per_key:v1",
    "beam:transform:combine_grouped_values:v1",
}
DATAFLOW_OPTIONS = [
    "--runner=DataflowRunner",
    "--project=payrecon-test",
    "--region=europe-west1",
    "--temp_location=gs://payrecon-test/tmp",
    f"--setup_file={ROOT / 'setup.py'}",
    "--dry_run=True",
]


def plan_of(*topics: str) -> ReadPlan:
    """A made-up read plan: three partitions of each topic, 10,000 offsets each."""
    return ReadPlan(tuple(PartitionRange(t, p, 0, 10_000) for t in topics for p in range(3)))


def reconcile_pipeline(tmp_path_factory):
    export = tmp_path_factory.mktemp("stripe") / "balance_change_from_activity.csv"
    export.write_text("balance_transaction_id,created_utc\n")
    args, _ = _parser().parse_known_args(
        [
            "--bootstrap-servers", "kafka-1.internal:9092",
            "--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z",
            "--as-of", "2026-11-22T00:00:00Z", "--stripe-source", str(export),
        ]
    )  # fmt: skip
    request = ReconcileRequest.from_args(args, now=datetime.now(UTC))
    plan = plan_of("ledger.transactions")
    config = MatchConfig(
        request.window_start,
        request.window_end,
        "rcn_dataflow_check",
        detected_at=request.as_of,
        margin=request.margin,
    )
    return reconcile_run.build_pipeline(
        request, plan, config, "gs://payrecon-test/staging/rcn_dataflow_check", DATAFLOW_OPTIONS
    )


def telemetry_pipeline(tmp_path_factory):
    args, _ = telemetry._parser().parse_known_args(
        ["--bootstrap-servers", "kafka-1.internal:9092",
         "--warehouse", "bigquery://payrecon-test/payrecon"]
    )  # fmt: skip
    request = telemetry_run.TelemetryRequest.from_args(args)
    plan = plan_of(*request.topics)
    staging = "gs://payrecon-test/staging/tel_dataflow_check"
    return telemetry_run.build_pipeline(request, plan, staging, DATAFLOW_OPTIONS)


STAND_IN = "KafkaRowsStandIn"


def kafka_rows_standing_in(pipeline, request):
    """An unbounded source of ``ReadFromKafka`` rows (one a second) instead of KafkaIO."""
    return (
        pipeline
        | STAND_IN >> PeriodicImpulse(fire_interval=1.0)
        | "AsKafkaRows"
        >> beam.Map(
            lambda t: KafkaReadRow(request.telemetry_topic, 0, int(t), int(t * 1000), None, b"{}")
        )
    )


def streaming_telemetry_pipeline(tmp_path_factory):
    args, _ = telemetry._parser().parse_known_args(
        ["--bootstrap-servers", "kafka-1.internal:9092", "--streaming",
         "--warehouse", "bigquery://payrecon-test/payrecon"]
    )  # fmt: skip
    request = telemetry_run.TelemetryRequest.from_args(args)
    return telemetry_stream.build_streaming_pipeline(
        request, "tel-stream@check", DATAFLOW_OPTIONS, read=kafka_rows_standing_in
    )


def read_pipeline(tmp_path_factory):
    options, pipeline_args = read.parse_args(
        ["--bootstrap-servers", "kafka-1.internal:9092",
         "--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z",
         "--out", "gs://payrecon-test/read", *DATAFLOW_OPTIONS]
    )  # fmt: skip
    return read.build_pipeline(options, plan_of("ledger.transactions"), {}, pipeline_args)


PIPELINES = {
    "reconcile": reconcile_pipeline,
    "telemetry": telemetry_pipeline,
    "read": read_pipeline,
    "streaming telemetry": streaming_telemetry_pipeline,
}


@pytest.fixture(scope="module", params=sorted(PIPELINES))
def dataflow_pipeline(request, tmp_path_factory):
    pipeline = PIPELINES[request.param](tmp_path_factory)
    result = pipeline.run()
    return result, pipeline.runner.proto_pipeline


def local_only_primitives(proto: beam_runner_api_pb2.Pipeline) -> dict[str, str]:
    """Leaf transforms whose URN is not a primitive every portable runner executes."""
    transforms = proto.components.transforms
    primitives = {t.unique_name: t.spec.urn for t in transforms.values() if not t.subtransforms}
    # The stand-in for ReadFromKafka is the test's, not the job's (its Create reshuffles).
    primitives = {n: urn for n, urn in primitives.items() if not n.startswith(STAND_IN)}
    return {name: urn for name, urn in primitives.items() if urn not in PORTABLE_PRIMITIVES}


def test_dataflow_accepts_the_graph_without_a_cloud_call(dataflow_pipeline):
    result, proto = dataflow_pipeline
    assert str(result.state) == "DONE"
    assert len(proto.components.transforms) > 10


def test_every_primitive_is_a_portable_transform(dataflow_pipeline):
    _, proto = dataflow_pipeline
    assert local_only_primitives(proto) == {}


def test_the_workers_run_in_the_sdk_container(dataflow_pipeline):
    _, proto = dataflow_pipeline
    urns = {env.urn for env in proto.components.environments.values()}
    assert urns == {"beam:env:docker:v1"}


def test_a_batch_job_is_bounded_and_the_streaming_job_unbounded(dataflow_pipeline, request):
    _, proto = dataflow_pipeline
    bounded = {p.is_bounded for p in proto.components.pcollections.values()}
    if "streaming" in request.node.callspec.id:
        assert beam_runner_api_pb2.IsBounded.UNBOUNDED in bounded
    else:
        assert bounded == {beam_runner_api_pb2.IsBounded.BOUNDED}


def test_the_join_goes_through_files_only_on_local_runners():
    # In-process runners hold a shuffle's input in memory; the others have a shuffle.
    assert reconcile_run.local_runner(PipelineOptions([]))
    assert reconcile_run.local_runner(PipelineOptions(["--runner=DirectRunner"]))
    assert reconcile_run.local_runner(PipelineOptions(["--runner=PrismRunner"]))
    assert not reconcile_run.local_runner(PipelineOptions(DATAFLOW_OPTIONS))
    assert not reconcile_run.local_runner(PipelineOptions(["--runner=FlinkRunner"]))
