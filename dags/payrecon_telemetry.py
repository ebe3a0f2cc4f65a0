"""payrecon_telemetry: a ``payrecon telemetry`` micro-batch every ``telemetry.interval``.

Created only when ``telemetry.enabled`` is true in ``payrecon.yaml`` (it needs the payment
gateway's topics). One task, ``telemetry``, runs one micro-batch per DAG run: it reads
``topics.payments_telemetry`` and ``topics.payments_results`` from the consumer group's
(``telemetry.group_id``) committed offsets to each partition's end, loads
``telemetry_minutely``, ``payment_conversion``, ``telemetry_anomalies`` and a
``recon_health`` row (job ``telemetry``) into ``telemetry.warehouse`` (default:
``reconcile.warehouse``), publishes alerts to ``topics.telemetry_alerts``, and only then
commits the group's offsets.

A batch is defined by the committed offsets, not by the DAG run's data interval, so:

- ``catchup`` is off: a missed interval is not a missing batch, the next run reads
  everything since the last commit (the windows it touches are recomputed from all batches'
  counts, so one late batch gives the tables several punctual ones would have);
- ``max_active_runs`` is 1: two batches at once would read the same offsets;
- a retry, or a run killed before its commit, repeats the same batch from the same offsets
  with the same run id and replaces what it loaded.

Exit codes become task states as in ``payrecon_reconcile``: 2 (bad configuration) fails the
task at once with the job's reason; 3 (broker or warehouse unreachable) is retried
``schedule.retries`` times (the next run would also pick the batch up).

Same runner, configuration lookup and secret handling as ``payrecon_reconcile`` (see its
docstring; ``runner.name`` and ``runner.options`` become the job's Beam flags).
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.timetables.trigger import DeltaTriggerTimetable

from pipelines.airflow_tasks import config_path, telemetry_batch
from pipelines.config import duration, load_config

config = load_config(config_path())

if config.telemetry.enabled:
    with DAG(
        dag_id="payrecon_telemetry",
        description="Payment telemetry micro-batches from committed offsets.",
        doc_md=__doc__,
        schedule=DeltaTriggerTimetable(duration(config.telemetry.interval)),
        start_date=datetime.combine(config.schedule.start_date, time(), UTC),
        catchup=False,
        max_active_runs=1,
        default_args={
            "retries": config.schedule.retries,
            "retry_delay": duration(config.schedule.retry_delay),
            "retry_exponential_backoff": True,
        },
        tags=["payrecon"],
    ) as dag:
        PythonOperator(task_id="telemetry", python_callable=telemetry_batch)
