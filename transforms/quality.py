"""Data quality: Great Expectations suites validated per Arrow batch, in and out of Beam.

``validate(suite_name, table, parameters)`` runs one suite of ``expectations/`` on one batch
(one GX validation, pandas engine) and returns a typed ``SuiteResult``: per expectation its
success, unexpected count and failing row positions. ``ValidateBatches`` does it in a
pipeline: rows that passed go on, failing rows of a ``quarantine`` suite go to a tagged
output with the reason, every outcome becomes a ``dq_results`` row, and a failed ``fail``
suite stops the run with ``DataQualityError``.

Suites, their parameters and failure actions: see ``transforms.quality_suites`` and the JSON
files. Row positions are 0-based positions in the batch as given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pandas as pd
import pyarrow as pa
from apache_beam.metrics import Metrics

from transforms import quality_gx
from transforms.quality_derive import derive
from transforms.quality_gx import context_builds, gx_context, gx_suite
from transforms.quality_result import ExpectationOutcome, Split, SuiteResult, results_table, split
from transforms.quality_suites import (
    DISCREPANCIES,
    LEDGER_EVENTS,
    PAYOUT_TOTALS,
    RECONCILIATION_INVARIANTS,
    STRIPE_BALANCE_TRANSACTIONS,
    SUITES,
    OnFailure,
    SuiteConfigError,
    SuiteSpec,
    load_suite,
    window_parameters,
)

__all__ = [
    "DISCREPANCIES",
    "LEDGER_EVENTS",
    "PAYOUT_TOTALS",
    "QUARANTINED",
    "RECONCILIATION_INVARIANTS",
    "RESULTS",
    "STRIPE_BALANCE_TRANSACTIONS",
    "SUITES",
    "DataQualityError",
    "ExpectationOutcome",
    "OnFailure",
    "Split",
    "SuiteConfigError",
    "SuiteResult",
    "ValidateBatches",
    "ValidatedBatches",
    "context_builds",
    "gx_context",
    "gx_suite",
    "load_suite",
    "results_table",
    "split",
    "validate",
    "validate_spec",
    "window_parameters",
]

QUARANTINED = "quarantined"
RESULTS = "results"
NAMESPACE = "payrecon.quality"


class DataQualityError(Exception):
    """A ``fail`` suite failed: the run stops. ``result`` says what failed on which rows."""

    def __init__(self, result: SuiteResult):
        super().__init__(result)
        self.result = result

    def __str__(self) -> str:
        return self.result.describe()


def validate(
    suite_name: str,
    table: pa.Table,
    parameters: Mapping[str, Any] | None = None,
    *,
    batch_id: str | None = None,
    directory: Path | str | None = None,
) -> SuiteResult:
    """Validate ``table`` against ``expectations/<suite_name>.json`` (one GX validation).

    ``parameters``: values of the suite's ``$PARAMETER``s (``window_parameters(...)`` gives the
    window ones); tz-aware datetimes. ``batch_id`` defaults to a hash of the batch's key columns
    (the same batch gets the same id on a rerun). Raises ``SuiteConfigError`` for an unknown
    suite or a missing parameter; a batch that breaks expectations is a result, not an error.
    """
    return validate_spec(load_suite(suite_name, directory), table, parameters, batch_id=batch_id)


def validate_spec(
    spec: SuiteSpec,
    table: pa.Table,
    parameters: Mapping[str, Any] | None = None,
    *,
    batch_id: str | None = None,
) -> SuiteResult:
    """``validate`` for an already loaded suite."""
    values = spec.check_parameters(parameters)
    derived = derive(table, spec.derive)
    frame = quality_gx.to_frame(derived.select(spec.referenced_columns(derived.column_names)))
    outcomes = tuple(quality_gx.outcome(r) for r in quality_gx.run(spec, frame, values))
    return SuiteResult(
        suite=spec.name,
        dataset=spec.dataset,
        on_failure=spec.on_failure,
        batch_id=batch_id or _batch_id(spec, frame),
        batch_rows=table.num_rows,
        outcomes=outcomes,
    )


def _batch_id(spec: SuiteSpec, frame: pd.DataFrame) -> str:
    """A hash of the batch's key column values in order (all its columns if it lacks them),
    and its row count: deterministic for the same rows, whatever the process."""
    keys = [c for c in spec.batch_key if c in frame.columns] or list(frame.columns)
    hashed = pd.util.hash_pandas_object(frame[keys], index=False).to_numpy()
    return f"{hashlib.blake2b(hashed.tobytes(), digest_size=8).hexdigest()}-{len(frame)}"


class ValidatedBatches(NamedTuple):
    """``passed``: batches of rows that met the suite (the input's schema). ``quarantined``:
    the failing rows of a ``quarantine`` suite, with ``QUARANTINE_COLUMNS``. ``results``:
    ``DQ_RESULT_V1`` tables, one row per expectation per batch."""

    passed: beam.PCollection
    quarantined: beam.PCollection
    results: beam.PCollection


class ValidateBatches(beam.PTransform):
    """Arrow table batches in; ``ValidatedBatches(passed, quarantined, results)`` out.

    One GX validation per batch; the GX context is built once per worker process. Every input
    row ends in exactly one of ``passed`` or ``quarantined`` (in = passed + quarantined), unless
    a ``fail`` suite fails, which raises ``DataQualityError`` and fails the run. Outputs are
    deterministic for the same batches (batch ids and dq_results keys too), so rerunning a
    window upserts the same rows. Empty batches are skipped.

    ``parameters`` are checked when the transform is built, so a missing one is a
    construction error, not a worker failure. ``on_failure`` overrides the suite's action.
    ``validated_at`` stamps the dq_results rows (a job passes its as-of time, so a rerun
    writes identical rows); by default the wall clock.
    """

    def __init__(
        self,
        suite_name: str,
        parameters: Mapping[str, Any] | None,
        run_id: str,
        *,
        on_failure: OnFailure | str | None = None,
        directory: Path | str | None = None,
        validated_at: datetime | None = None,
    ):
        super().__init__()
        spec = load_suite(suite_name, directory).with_on_failure(on_failure)
        spec.check_parameters(parameters)
        self._fn = _ValidateFn(spec, dict(parameters or {}), run_id, validated_at)

    def expand(self, batches):
        outputs = batches | "ValidateAgainstSuite" >> beam.ParDo(self._fn).with_outputs(
            QUARANTINED, RESULTS, main="passed"
        )
        return ValidatedBatches(outputs.passed, outputs[QUARANTINED], outputs[RESULTS])


class _ValidateFn(beam.DoFn):
    def __init__(
        self,
        spec: SuiteSpec,
        parameters: dict[str, Any],
        run_id: str,
        validated_at: datetime | None,
    ):
        self._validated_at = validated_at
        self._spec = spec
        self._parameters = parameters
        self._run_id = run_id
        name = spec.name
        self.batches = Metrics.counter(NAMESPACE, f"{name}.batches")
        self.rows_in = Metrics.counter(NAMESPACE, f"{name}.rows_in")
        self.rows_passed = Metrics.counter(NAMESPACE, f"{name}.rows_passed")
        self.rows_quarantined = Metrics.counter(NAMESPACE, f"{name}.rows_quarantined")
        self.failed_batches = Metrics.counter(NAMESPACE, f"{name}.failed_batches")
        self.failed_expectations = Metrics.counter(NAMESPACE, f"{name}.failed_expectations")

    def setup(self):
        gx_suite(self._spec)  # builds the process's GX context and this suite once

    def process(self, table: pa.Table):
        if table.num_rows == 0:
            return
        result = validate_spec(self._spec, table, self._parameters)
        self.batches.inc()
        self.rows_in.inc(table.num_rows)
        yield beam.pvalue.TaggedOutput(
            RESULTS, results_table(result, self._run_id, self._validated_at or datetime.now(UTC))
        )
        if result.success:
            self.rows_passed.inc(table.num_rows)
            yield table
            return
        self.failed_batches.inc()
        self.failed_expectations.inc(len(result.failed))
        if result.on_failure is OnFailure.FAIL:
            raise DataQualityError(result)
        passed, quarantined = split(table, result)
        self.rows_passed.inc(passed.num_rows)
        self.rows_quarantined.inc(quarantined.num_rows)
        if passed.num_rows:
            yield passed
        yield beam.pvalue.TaggedOutput(QUARANTINED, quarantined)
