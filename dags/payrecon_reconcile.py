"""payrecon_reconcile: reconcile each window of the ledger against Stripe, then repair.

One DAG run per window; the window is the run's data interval (``reconcile.window`` in
``payrecon.yaml``, a day by default, starting at ``schedule.start_date``). ``catchup`` is on,
so a new deployment, or ``airflow backfill create --dag-id payrecon_reconcile --from-date ...
--to-date ...``, reconciles every past window, one run each.

Tasks:

- ``reconcile``: ``payrecon reconcile`` for the window, with ``--as-of`` = window end +
  ``reconcile.as_of_delay``. The same window always gets the same as-of, so a retry, a
  cleared task or a second backfill of a day produces the same run id and upserts the same
  rows: it changes nothing. Exit 1 (more discrepancies than ``reconcile.max_discrepancies``,
  or a data-quality suite failed) and exit 2 (bad configuration) fail the task at once, with
  the job's reason in the failure message, and are not retried; exit 3 (broker, Stripe or
  warehouse unreachable) is retried ``schedule.retries`` times.
- ``repair`` (when ``repair.enabled``): ``payrecon repair`` for the discrepancies published
  since its consumer group's last commit. It runs only after a successful reconcile; a window
  with discrepancies over the threshold fails ``reconcile`` and leaves ``repair`` for a human
  to trigger (clear it) once the threshold breach is understood.

Why a PythonOperator running the ``payrecon`` job, not ``BeamRunPythonPipelineOperator``:
the operator can start ``python -m pipelines.reconcile`` (``py_file`` with ``py_options=["-m"]``)
and passes Beam options, but reconcile is a launcher with steps around its Beam pipeline: it
plans the Kafka offsets before it, and after it loads the warehouse in one transaction and
commits the consumer group's offsets. On DataflowRunner the operator ends its wait as soon as
it has seen the Dataflow job id, and then follows the Dataflow job, not the launcher, so the
task would succeed before the warehouse load and the offset commit ran (or failed). The
operator also reports every non-zero exit as "Apache Beam process failed with return code N",
which loses the difference between a threshold breach (do not retry) and an unreachable broker
(retry). The job still runs on Dataflow or Flink: ``runner.name`` and ``runner.options`` in
``payrecon.yaml`` become its Beam flags, and the launcher waits for the job to finish.

Configuration: the file named by ``$PAYRECON_CONFIG``, else the Airflow Variable
``payrecon_config``, else ``payrecon.yaml`` in the worker's working directory. Secrets
(``STRIPE_API_KEY``, ``SNOWFLAKE_PASSWORD``, ...) come from the worker's environment and never
appear in the file, the command line, the task log or the warehouse.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable

from pipelines.airflow_tasks import config_path, reconcile_window, repair_window
from pipelines.config import duration, load_config

config = load_config(config_path())
window = duration(config.reconcile.window)

with DAG(
    dag_id="payrecon_reconcile",
    description="Reconcile the ledger against Stripe per window, then repair.",
    doc_md=__doc__,
    schedule=(
        CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
        if window == timedelta(days=1)
        else DeltaDataIntervalTimetable(window)
    ),
    start_date=datetime.combine(config.schedule.start_date, time(), UTC),
    catchup=config.schedule.catchup,
    max_active_runs=config.schedule.max_active_runs,
    default_args={
        "retries": config.schedule.retries,
        "retry_delay": duration(config.schedule.retry_delay),
        "retry_exponential_backoff": True,
    },
    tags=["payrecon"],
) as dag:
    reconcile = PythonOperator(task_id="reconcile", python_callable=reconcile_window)
    if config.repair.enabled:
        reconcile >> PythonOperator(task_id="repair", python_callable=repair_window)
