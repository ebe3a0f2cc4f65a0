"""Failures inside a Beam pipeline that are not bugs, turned into DESIGN.md's exit codes.

A DoFn that raises ``DataQualityError`` (a ``fail`` suite failed), ``StripeUnavailable`` or
``BrokerUnavailable`` (a dependency down after retries), ``StagingUnwritable`` (a full disk)
or ``StripePermanentError`` (a key Stripe refuses) ends the command with one line and the
matching exit code, not a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from transforms.kafka_offsets import BrokerUnavailable
from transforms.quality import DataQualityError
from transforms.staging import StagingUnwritable
from transforms.stripe_api import StripePermanentError, StripeUnavailable


class PipelineFailed(Exception):
    """A failure inside the pipeline that is not a bug: the command ends with ``exit_code``
    and this one-line message (DESIGN.md's exit codes), not a traceback.

    Beam re-raises a DoFn's exception as another: the same type with the step's name
    appended when it can rebuild it, else a ``RuntimeError`` with its text; the in-process
    runner keeps the original as ``__context__``, runners with worker processes send only
    its text. :meth:`of` finds it either way.
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def of(cls, exc: BaseException) -> PipelineFailed | None:
        for kind, exit_code in _REPORTED:
            original = _in_chain(exc, kind)
            if original is not None:
                return cls(_describe(original), exit_code)
            text = _text_of(str(exc), kind)
            if text is not None:
                return cls(text, exit_code)
        return None


# What a pipeline failure means for the command; the first match wins.
_REPORTED: tuple[tuple[type[Exception], int], ...] = (
    (DataQualityError, 1),
    (StripeUnavailable, 3),
    (BrokerUnavailable, 3),
    (StagingUnwritable, 3),
    (StripePermanentError, 2),
)


def _in_chain(exc: BaseException | None, kind: type[Exception]) -> Exception | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, DataQualityError):
        result = exc.result
        failed = "; ".join(
            f"{o.name} {o.unexpected_count} of {o.evaluated_count} rows"
            if o.row_level
            else f"{o.name} {o.error or f'observed {o.observed_value!r}'}"
            for o in result.failed
        )
        return _one_line(
            f"data-quality suite {result.suite!r} (on_failure: fail) failed on a batch of "
            f"{result.batch_rows} rows; nothing loaded, no offsets committed: {failed}"
        )
    if isinstance(exc, StripePermanentError) and exc.status in (401, 403):
        return _one_line(f"{exc}; check the key in $STRIPE_API_KEY")
    return _one_line(str(exc))


def _text_of(text: str, kind: type[Exception]) -> str | None:
    """The message of a ``kind`` exception in a worker's traceback text: its first line
    and the indented detail lines after it, on one line (None: not there)."""
    marker = f"{kind.__module__}.{kind.__qualname__}: "
    at = text.rfind(marker)
    if at < 0:
        return None
    first, *rest = text[at + len(marker) :].splitlines()
    details = []
    for line in rest:
        if not line.startswith("  ") or line.startswith("  File "):
            break
        details.append(line.strip())
    return _one_line(" ".join([first, *details]))


def _one_line(text: str) -> str:
    return " ".join(re.sub(r" \[while running '[^']*'\]", "", text).split())


class _ReportedFailureFilter(logging.Filter):
    """Drops Beam's log of a DoFn exception (message and traceback) when the command
    reports that failure itself in one line; every other error is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or PipelineFailed.of(exc) is None


@contextlib.contextmanager
def quiet_reported_failures() -> Iterator[None]:
    logger = logging.getLogger("apache_beam.runners.common")
    quiet = _ReportedFailureFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
