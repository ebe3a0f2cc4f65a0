"""The typed outcome of validating one batch against one suite, and what it means for rows.

Rows are identified by their position in the validated Arrow table (0-based), so a caller
can ``take``/``filter`` the original batch with them: the quarantine and the passed rows
are exactly the batch, split.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from schemas.dq_result import DQ_RESULT_V1, with_quarantine_reason
from transforms.quality_suites import OnFailure

SAMPLE_SIZE = 5


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation on one batch.

    ``unexpected_rows``: positions of every failing row, for a row-level (column map) expectation
    that could be evaluated; ``None`` for table-level ones (a column type, a missing column),
    whose failure concerns the whole batch. ``sample``: up to 5 ``(row, value)`` pairs.
    """

    expectation: str
    columns: tuple[str, ...]
    success: bool
    unexpected_count: int | None = None
    evaluated_count: int | None = None
    unexpected_rows: tuple[int, ...] | None = None
    sample: tuple[tuple[int, Any], ...] = ()
    observed_value: Any = None
    error: str | None = None

    @property
    def name(self) -> str:
        """``type(columns)``, e.g. ``expect_column_values_to_be_unique(event_id)``."""
        return f"{self.expectation}({','.join(self.columns)})"

    @property
    def row_level(self) -> bool:
        return self.unexpected_rows is not None


@dataclass(frozen=True)
class SuiteResult:
    """One suite on one batch: per expectation outcomes, and the rows that failed any."""

    suite: str
    dataset: str
    on_failure: OnFailure
    batch_id: str
    batch_rows: int
    outcomes: tuple[ExpectationOutcome, ...]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)

    def failing_rows(self) -> np.ndarray:
        """Sorted positions of the rows that failed at least one expectation; every row when
        a table-level expectation failed (the batch as a whole is bad)."""
        failed = self.failed
        if any(not o.row_level for o in failed):
            return np.arange(self.batch_rows, dtype=np.int64)
        rows = [np.asarray(o.unexpected_rows, dtype=np.int64) for o in failed]
        return np.unique(np.concatenate(rows)) if rows else np.empty(0, dtype=np.int64)

    def reasons(self) -> dict[int, str]:
        """For each failing row, the names of the expectations it failed, '; '-separated."""
        names: defaultdict[int, list[str]] = defaultdict(list)
        everyone = [o.name for o in self.failed if not o.row_level]
        for o in self.failed:
            for row in o.unexpected_rows or ():
                names[row].append(o.name)
        return {
            int(row): "; ".join([*everyone, *names.get(int(row), [])])
            for row in self.failing_rows()
        }

    def describe(self) -> str:
        """A few lines for a person: which expectations failed, how often, on which rows."""
        lines = [
            f"suite {self.suite!r} ({self.dataset}) failed on batch {self.batch_id} "
            f"({self.batch_rows} rows):"
        ]
        for o in self.failed:
            what = o.error or (
                f"{o.unexpected_count} of {o.evaluated_count} rows, e.g. {list(o.sample)}"
                if o.row_level
                else f"observed {o.observed_value!r}"
            )
            lines.append(f"  {o.name}: {what}")
        return "\n".join(lines)


class Split(NamedTuple):
    passed: pa.Table
    quarantined: pa.Table


def split(table: pa.Table, result: SuiteResult) -> Split:
    """The rows of ``table`` that passed, and the others with the quarantine columns
    (``QUARANTINE_COLUMNS``: suite, batch id, reason). Together they are ``table``."""
    failing = result.failing_rows()
    keep = np.ones(table.num_rows, dtype=bool)
    keep[failing] = False
    reasons = result.reasons()
    n = len(failing)
    bad = table.take(pa.array(failing, pa.int64()))
    quarantined = pa.Table.from_arrays(
        [
            *bad.columns,
            pa.array([result.suite] * n, pa.string()),
            pa.array([result.batch_id] * n, pa.string()),
            pa.array([reasons[int(i)] for i in failing], pa.string()),
        ],
        schema=with_quarantine_reason(table.schema),
    )
    return Split(table.filter(pa.array(keep)), quarantined)


def results_table(result: SuiteResult, run_id: str, validated_at: datetime) -> pa.Table:
    """``DQ_RESULT_V1`` rows: one per expectation of ``result``."""
    rows = [
        {
            "run_id": run_id,
            "suite": result.suite,
            "dataset": result.dataset,
            "batch_id": result.batch_id,
            "expectation": o.expectation,
            "columns": ",".join(o.columns),
            "success": o.success,
            "unexpected_count": o.unexpected_count,
            "evaluated_count": o.evaluated_count,
            "batch_rows": result.batch_rows,
            "unexpected_sample": _json([{"row": r, "value": v} for r, v in o.sample])
            if o.row_level
            else None,
            "observed_value": None if o.observed_value is None else _json(o.observed_value),
            "error": o.error,
            "on_failure": result.on_failure.value,
            "validated_at": validated_at,
        }
        for o in result.outcomes
    ]
    return pa.Table.from_pylist(rows, schema=DQ_RESULT_V1)


def plain(value: Any) -> Any:
    """A JSON-friendly copy of a value GX reports (numpy scalars, pandas NA, timestamps)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str | int | bool | float):
        return value
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(plain(value), sort_keys=True)
