"""Expectation suites: the JSON files in ``expectations/`` and payrecon's settings in them.

Each file is a Great Expectations 1.x suite (``gx.ExpectationSuite(**json)`` loads it) whose
``meta.payrecon`` says how payrecon runs it::

    "meta": {"payrecon": {
        "dataset": "ledger_events",          # what the suite validates (dq_results.dataset)
        "on_failure": "quarantine",          # or "fail": fail the run
        "parameters": ["window_start", ...],  # $PARAMETER names given at validation time
        "derive": ["amount_minus_fee", ...],  # columns computed before validation
        "batch_key": ["event_id"]            # columns whose values identify a batch
    }}

Reading a suite needs no Great Expectations import, so a pipeline is built (and a bad suite
or a missing parameter reported) before any worker pays for importing GX.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import expectations
from transforms.quality_derive import DERIVATIONS

EXPECTATIONS_DIR = Path(expectations.__file__).resolve().parent

LEDGER_EVENTS = "ledger_events"
STRIPE_BALANCE_TRANSACTIONS = "stripe_balance_transactions"
DISCREPANCIES = "discrepancies"
RECONCILIATION_INVARIANTS = "reconciliation_invariants"
PAYOUT_TOTALS = "payout_totals"
SUITES = (
    LEDGER_EVENTS,
    STRIPE_BALANCE_TRANSACTIONS,
    DISCREPANCIES,
    RECONCILIATION_INVARIANTS,
    PAYOUT_TOTALS,
)

_COLUMN_KWARGS = ("column", "column_A", "column_B")


class OnFailure(StrEnum):
    """What a failed suite does: stop the run, or set the failing rows aside."""

    FAIL = "fail"
    QUARANTINE = "quarantine"


class SuiteConfigError(ValueError):
    """A suite file, or the parameters given to it, cannot be used (the message says why)."""


@dataclass(frozen=True)
class SuiteSpec:
    """One suite as payrecon runs it. ``document`` is the suite's JSON text, unchanged."""

    name: str
    dataset: str
    on_failure: OnFailure
    parameters: tuple[str, ...]
    derive: tuple[str, ...]
    batch_key: tuple[str, ...]
    document: str

    @property
    def expectations(self) -> list[dict[str, Any]]:
        return json.loads(self.document)["expectations"]

    def with_on_failure(self, on_failure: OnFailure | str | None) -> SuiteSpec:
        """The same suite with another failure action (``None`` keeps the file's)."""
        if on_failure is None:
            return self
        return SuiteSpec(
            self.name,
            self.dataset,
            _on_failure(on_failure, self.name),
            self.parameters,
            self.derive,
            self.batch_key,
            self.document,
        )

    def referenced_columns(self, available: Iterable[str]) -> list[str]:
        """The columns of ``available`` the expectations read, in ``available``'s order.

        Columns named in row conditions count too, so a condition can use a column that no
        expectation checks.
        """
        named: set[str] = set(self.batch_key)
        for expectation in self.expectations:
            kwargs = expectation["kwargs"]
            named.update(kwargs[k] for k in _COLUMN_KWARGS if k in kwargs)
            named.update(kwargs.get("column_list", ()))
            named.update(_condition_columns(kwargs.get("row_condition")))
        return [c for c in available if c in named]

    def check_parameters(self, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
        """The parameters the suite needs, normalized (datetimes to UTC); raises when one is
        missing or a datetime is naive."""
        given = dict(parameters or {})
        missing = [p for p in self.parameters if p not in given]
        if missing:
            raise SuiteConfigError(
                f"suite {self.name!r} needs the parameters {list(self.parameters)}; "
                f"missing {missing} (see transforms.quality.window_parameters)"
            )
        return {p: _parameter_value(self.name, p, given[p]) for p in self.parameters}


def window_parameters(
    window_start: datetime, window_end: datetime, margin: timedelta = timedelta(0)
) -> dict[str, datetime]:
    """Every window parameter the suites use, from a run's window and lateness margin.

    ``window_start``/``window_end``: the ledger read window [start, end). ``created_from``/
    ``created_until``: the Stripe read range, the window widened by ``margin`` on both sides.
    """
    if window_end <= window_start:
        raise SuiteConfigError(
            f"window_end ({window_end.isoformat()}) must be after "
            f"window_start ({window_start.isoformat()})"
        )
    return {
        "window_start": window_start,
        "window_end": window_end,
        "created_from": window_start - margin,
        "created_until": window_end + margin,
    }


def load_suite(name: str, directory: Path | str | None = None) -> SuiteSpec:
    """The suite ``<directory>/<name>.json`` (``expectations/`` by default)."""
    return _load_suite(name, str(directory or EXPECTATIONS_DIR))


@lru_cache(maxsize=64)
def _load_suite(name: str, directory: str) -> SuiteSpec:
    path = Path(directory) / f"{name}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        known = sorted(p.stem for p in Path(directory).glob("*.json"))
        raise SuiteConfigError(
            f"no suite {name!r}: {path} does not exist; known: {known}"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteConfigError(f"suite file {path} is not valid JSON: {exc}") from None
    if document.get("name") != name:
        raise SuiteConfigError(f"suite file {path} is named {document.get('name')!r}, not {name!r}")
    settings = (document.get("meta") or {}).get("payrecon")
    if not isinstance(settings, dict):
        raise SuiteConfigError(f"suite file {path} has no meta.payrecon settings")
    derive = tuple(settings.get("derive", ()))
    unknown = [d for d in derive if d not in DERIVATIONS]
    if unknown:
        raise SuiteConfigError(
            f"suite file {path}: meta.payrecon.derive names unknown columns {unknown}; "
            f"known: {sorted(DERIVATIONS)}"
        )
    return SuiteSpec(
        name=name,
        dataset=str(settings.get("dataset") or name),
        on_failure=_on_failure(settings.get("on_failure"), str(path)),
        parameters=tuple(settings.get("parameters", ())),
        derive=derive,
        batch_key=tuple(settings.get("batch_key", ())),
        document=text,
    )


def _condition_columns(condition: Any) -> set[str]:
    """Columns a row condition reads: GX 1.x condition objects as JSON
    (``{"type": "nullity", "column": {"name": ...}}``, ``and``/``or`` of them), or a legacy
    condition string (every identifier in it)."""
    if isinstance(condition, str):
        return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", condition))
    if isinstance(condition, dict):
        found = set()
        column = condition.get("column")
        if isinstance(column, dict) and isinstance(column.get("name"), str):
            found.add(column["name"])
        for nested in condition.get("conditions", ()):
            found |= _condition_columns(nested)
        return found
    return set()


def _on_failure(value: Any, where: str) -> OnFailure:
    try:
        return OnFailure(value)
    except ValueError:
        allowed = [a.value for a in OnFailure]
        raise SuiteConfigError(f"{where}: on_failure is {value!r}; allowed: {allowed}") from None


def _parameter_value(suite: str, name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise SuiteConfigError(
                f"suite {suite!r}: parameter {name!r} is a naive datetime ({value.isoformat()}); "
                "give it a timezone (UTC)"
            )
        # pandas compares its UTC timestamp columns with pandas timestamps exactly.
        import pandas as pd

        return pd.Timestamp(value).tz_convert("UTC")
    return value
