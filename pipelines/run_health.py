"""The ``recon_health`` row of a run: written with the run's results, or alone when it failed.

A failed run writes its row on a best-effort basis: when the warehouse itself is what
failed, or cannot be reached, nothing more can be recorded and the job's own error (and
exit code) is what the scheduler sees; recording the failure never hides it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import pyarrow as pa

from schemas.tables import TABLES

HEALTH = TABLES["recon_health"]


def health_row(
    *,
    job: str,
    run_id: str,
    window: tuple[datetime, datetime],
    started_at: datetime,
    finished_at: datetime,
    status: str,
    exit_code: int,
    error: str | None = None,
    counts: dict | None = None,
) -> pa.Table:
    """One ``RECON_HEALTH_V1`` row; ``counts`` holds the count columns a run got to."""
    row = {
        "job": job,
        "run_id": run_id,
        "window_start": window[0],
        "window_end": window[1],
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_ms": round((finished_at - started_at).total_seconds() * 1000),
        "freshness_s": round((finished_at - window[1]).total_seconds()),
        "status": status,
        "exit_code": exit_code,
        "error": error,
        **(counts or {}),
    }
    for name in ("dead_letters_by_reason",):
        if isinstance(row.get(name), dict):
            row[name] = json.dumps(row[name], sort_keys=True)
    return pa.Table.from_pylist([row], schema=HEALTH.schema)


def unplanned_run_id(job: str, window_start: datetime) -> str:
    """The id of a run that failed before it knew its inputs (see RECON_HEALTH_V1)."""
    return f"{job}_{window_start:%Y%m%dT%H%M%SZ}_unplanned"


def record_failure(
    warehouse_url: str,
    *,
    job: str,
    run_id: str,
    window: tuple[datetime, datetime],
    started_at: datetime,
    exit_code: int,
    error: str,
    status: str = "failed",
) -> bool:
    """Writes a failed run's row; True when it was written."""
    from transforms.warehouse import open_warehouse

    row = health_row(
        job=job,
        run_id=run_id,
        window=window,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        status=status,
        exit_code=exit_code,
        error=error.splitlines()[0][:2000] if error else None,
    )
    try:
        with open_warehouse(warehouse_url) as warehouse:
            warehouse.load({HEALTH: row})
    except Exception as exc:  # best effort: the run's own error is what gets reported
        print(
            f"payrecon {job}: the failure was not recorded in recon_health: {exc}", file=sys.stderr
        )
        return False
    return True
