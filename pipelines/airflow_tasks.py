"""What the Airflow tasks in ``dags/`` run: a payrecon job as a child process, its exit code
turned into the task's outcome.

Exit codes (DESIGN.md) decide whether Airflow retries: 1 (discrepancies over the threshold,
or a data-quality suite failed) and 2 (bad configuration) fail the task at once with the
job's own one-line reason, because a retry would find the same thing; 3 (broker, Stripe or
warehouse unreachable) and anything unexpected raise a retryable error. Runs are idempotent
(same window and as-of, same run id, upserts), so a retry or a cleared task is safe.

The job runs in a child process of the task (``python -m pipelines.<job>``), not inside it:
the Beam pipeline's memory is returned when it ends, and the child inherits the secrets in
the worker's environment, so none of them is on the command line the task log shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from datetime import datetime

from pipelines.config import ConfigError, PayreconConfig, load_config
from pipelines.config_jobs import reconcile_argv, repair_argv, telemetry_argv

CONFIG_ENV = "PAYRECON_CONFIG"
CONFIG_VARIABLE = "payrecon_config"
DEFAULT_CONFIG = "payrecon.yaml"

_MEANING = {
    1: "found discrepancies over reconcile.max_discrepancies, or a data-quality suite failed",
    2: "bad usage or configuration",
    3: "a dependency (broker, Stripe, warehouse) was unreachable after retries",
}


def config_path() -> str:
    """``$PAYRECON_CONFIG``, else the Airflow Variable ``payrecon_config``, else
    ``payrecon.yaml`` in the working directory."""
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    try:
        from airflow.sdk import Variable

        return Variable.get(CONFIG_VARIABLE, default=DEFAULT_CONFIG)
    except Exception:  # no metadata database or API server while parsing, e.g. in tests
        return DEFAULT_CONFIG


class JobFailed(RuntimeError):
    def __init__(self, job: str, code: int, tail: list[str]):
        reason = next((line for line in reversed(tail) if line.startswith("payrecon")), "")
        meaning = _MEANING.get(code, "an unexpected failure (see the log above)")
        super().__init__(
            f"payrecon {job} exited {code}: {meaning}" + (f" -- {reason}" if reason else "")
        )
        self.code = code


def run_job(job: str, argv: list[str]) -> None:
    """Run ``python -m pipelines.<job> argv``, streaming its output to the task log."""
    print(f"payrecon {job} " + " ".join(argv), flush=True)
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        [sys.executable, "-m", f"pipelines.{job}", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            print(line, end="", flush=True)
            tail.append(line.strip())
        code = child.wait()
    if code == 0:
        return
    failure = JobFailed(job, code, list(tail))
    if code in (1, 2):
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(failure))
    raise failure


def reconcile_window(data_interval_start: datetime, data_interval_end: datetime, **_) -> None:
    """The reconcile task: the DAG run's data interval is the window."""
    config = _config()
    run_job("reconcile", reconcile_argv(config, data_interval_start, data_interval_end))


def repair_window(data_interval_start: datetime, data_interval_end: datetime, **_) -> None:
    """The repair task: every discrepancy published since the last repair."""
    config = _config()
    run_job("repair", repair_argv(config, data_interval_start, data_interval_end))


def telemetry_batch(**_) -> None:
    """The telemetry task: one micro-batch from the consumer group's committed offsets to
    the end of both topics (the DAG run's data interval plays no part)."""
    config = _config()
    run_job("telemetry", telemetry_argv(config))


def _config() -> PayreconConfig:
    try:
        return load_config(config_path())
    except ConfigError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"payrecon config: {exc}") from None
