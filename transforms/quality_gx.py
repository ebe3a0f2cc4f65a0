"""Great Expectations, once per process: the context, the suites, one validation per batch.

Importing GX and building a context takes seconds, so this module imports GX lazily and keeps
one ephemeral context per process (a Beam worker builds it in ``DoFn.setup``): in-memory stores,
analytics off, progress bars off, nothing written to disk. GX is not thread-safe (its
parameter parser is global state), so validations in one process take turns.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from transforms.quality_result import SAMPLE_SIZE, ExpectationOutcome, plain
from transforms.quality_suites import SuiteConfigError, SuiteSpec

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import EphemeralDataContext

# Money stays exact: integer columns become pandas' nullable integers (never float64 because a
# value is null), booleans nullable booleans. Other types keep pyarrow's default conversion.
_NULLABLE: dict[pa.DataType, Any] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}

_LOCK = threading.RLock()
_builds = 0


@dataclass
class _Gx:
    context: EphemeralDataContext
    batches: BatchDefinition
    suites: dict[str, Any]


_gx: _Gx | None = None


def context_builds() -> int:
    """How many GX contexts this process has built (1 once anything was validated)."""
    return _builds


def gx_context() -> EphemeralDataContext:
    """The process's GX context, built on first use."""
    return _state().context


def _state() -> _Gx:
    global _gx, _builds
    with _LOCK:
        if _gx is None:
            _gx = _build()
            _builds += 1
        return _gx


def _build() -> _Gx:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX 1.x reads datetime pairs through Series.values, which pandas 3 deprecates; the values
    # are right (UTC), so the warning would only flood worker logs once per batch.
    warnings.filterwarnings("ignore", message=r"Series\.values returning an ndarray that drops")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batches = (
        context.data_sources.add_pandas("payrecon")
        .add_dataframe_asset("batches")
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    return _Gx(context, batches, {})


def gx_suite(spec: SuiteSpec) -> Any:
    """The ``gx.ExpectationSuite`` of ``spec``, built once per process and suite file."""
    state = _state()
    key = f"{spec.name}:{hash(spec.document)}"
    with _LOCK:
        if key not in state.suites:
            state.suites[key] = _build_suite(spec)
        return state.suites[key]


def _build_suite(spec: SuiteSpec) -> Any:
    import json

    import great_expectations as gx

    document = json.loads(spec.document)
    suite = gx.ExpectationSuite(**document)
    # GX logs and drops an expectation it cannot build; a suite must never shrink silently.
    if len(suite.expectations) != len(document["expectations"]):
        built = {e.expectation_type for e in suite.expectations}
        dropped = [e["type"] for e in document["expectations"] if e["type"] not in built]
        raise SuiteConfigError(
            f"suite {spec.name!r}: GX could not build {dropped or 'some expectations'}; "
            "check their type and kwargs against the GX 1.x expectation gallery"
        )
    return suite


def to_frame(table: pa.Table) -> pd.DataFrame:
    """One Arrow → pandas conversion; integers stay exact (nullable Int64), the index is the
    row position."""
    return table.to_pandas(types_mapper=_NULLABLE.get)


def run(spec: SuiteSpec, frame: pd.DataFrame, parameters: dict[str, Any]) -> list:
    """GX's ``ExpectationValidationResult``s of ``spec`` on ``frame``, in the suite's order."""
    state = _state()
    suite = gx_suite(spec)
    with _LOCK:
        batch = state.batches.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite,
            result_format={"result_format": "COMPLETE"},
            expectation_parameters=parameters,
        )
    order = {
        _key(e.expectation_type, e.configuration.kwargs): i
        for i, e in enumerate(suite.expectations)
    }
    return sorted(
        result.results,
        key=lambda r: order.get(_key(r.expectation_config.type, r.expectation_config.kwargs), 0),
    )


def outcome(result: Any) -> ExpectationOutcome:
    """A typed ``ExpectationOutcome`` from a GX ``ExpectationValidationResult``."""
    config = result.expectation_config
    details = result.result or {}
    error = _error(result.exception_info)
    common = {
        "expectation": config.type,
        "columns": _columns(config.kwargs),
        "success": bool(result.success) and error is None,
        "observed_value": plain(details.get("observed_value")),
        "error": error,
    }
    rows = details.get("unexpected_index_list")
    if error is not None or rows is None:  # table-level, or could not be evaluated
        return ExpectationOutcome(**common)
    values = details.get("unexpected_list") or []
    evaluated = details.get("element_count")
    if evaluated is not None:
        evaluated -= details.get("missing_count") or 0
    return ExpectationOutcome(
        **common,
        unexpected_count=details.get("unexpected_count"),
        evaluated_count=evaluated,
        unexpected_rows=tuple(int(i) for i in rows),
        sample=tuple(
            (int(i), plain(v))
            for i, v in zip(rows[:SAMPLE_SIZE], values[:SAMPLE_SIZE], strict=False)
        ),
    )


def _key(expectation_type: str, kwargs: dict) -> tuple[str, tuple[str, ...]]:
    return expectation_type, _columns(kwargs)


def _columns(kwargs: dict) -> tuple[str, ...]:
    if "column_list" in kwargs:
        return tuple(kwargs["column_list"])
    return tuple(kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs)


def _error(info: Any) -> str | None:
    """The exception message(s) of a result: GX gives either one ``exception_info`` or one
    per metric that failed to compute."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    messages = {
        v.get("exception_message")
        for v in info.values()
        if isinstance(v, dict) and v.get("raised_exception")
    }
    return "; ".join(sorted(m for m in messages if m)) or None
