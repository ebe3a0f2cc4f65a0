"""Stripe's itemized report exports (CSV or Parquet) as ``BALANCE_TRANSACTION_V1`` tables.

Reads ``balance_change_from_activity.itemized`` and ``payout_reconciliation.itemized`` files
with the columns of ``reference/stripe/REPORTS.md``. Every value is read as text, then
converted column-wise (no Python loop per row):

- ``gross``, ``fee``, ``net`` and ``customer_facing_amount`` are decimal major units; they
  become integer minor units with the currency's own exponent (JPY 0, KWD 3, most 2), exactly:
  the text is split at the decimal point and the fraction padded, never parsed as a float.
  A fraction with more significant digits than the currency has is refused, not rounded
  (``12.340`` USD is exact and accepted; ``12.345`` USD is refused).
- Signs are Stripe's: ``gross`` and ``net`` are the effect on the balance (negative for
  refunds and disputes), ``fee`` is positive when a fee was charged. ``net`` is computed as
  ``gross - fee`` only when the file has no ``net`` column.
- ``created_utc`` / ``available_on_utc`` are UTC; without the ``_utc`` suffix a column is in
  the report run's ``timezone`` (the ``timezone`` argument, UTC by default).
- ``status`` is ``pending`` when ``available_on`` is after ``as_of`` (when the report was
  run), else ``available``.
- ``order_id`` comes from ``payment_metadata[order_id]`` (the metadata key is configurable),
  else from the ``order_id`` column of payout reconciliation reports.
- ``origin`` is the file name.
- ``payouts.itemized`` rows (one per payout) read as the payout's balance transaction:
  ``payout_id`` is the source, ``effective_at`` the creation time.

Bad rows are not dropped and do not stop the read: each one becomes a
``STRIPE_EXPORT_REJECT_V1`` row naming the file, line, column and reason (the dead-letter
reasons of ``schemas.dead_letter.Reason``), so rows in = rows out + rejected. A file that
lacks a required column, or has float amounts, is refused whole with a
:class:`StripeExportError`. :func:`read_stripe_export` raises on any rejected row instead.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, NamedTuple

import apache_beam as beam
import polars as pl
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.match import STRIPE_EXPORT_REJECT_V1
from transforms.stripe_file_chunks import UnreadableExport, iter_frames
from transforms.stripe_report_values import (
    ERR_SEP,
    Columns,
    plan_conversion,
)

NAMESPACE = "payrecon.stripe_files"
REJECTED = "rejected"
DEFAULT_BATCH_ROWS = 100_000

# Columns without which a file cannot be reconciled (times may also come without _utc).
REQUIRED = ("balance_transaction_id", "currency", "gross", "fee", "reporting_category")
REQUIRED_TIMES = ("created",)
# Report columns copied as they are, when the file has them.
PASSTHROUGH = (
    "source_id",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "customer_id",
    "payment_method_type",
    "card_brand",
    "card_country",
    "automatic_payout_id",
)


class StripeExportError(ValueError):
    """The file cannot be read as a Stripe itemized export (or has rejected rows)."""


class StripeExport(NamedTuple):
    rows: pa.Table  # BALANCE_TRANSACTION_V1
    rejected: pa.Table  # STRIPE_EXPORT_REJECT_V1


def load_stripe_export(
    source: str | Path | bytes | IO[bytes],
    as_of: datetime,
    *,
    origin: str | None = None,
    file_format: str | None = None,
    **options,
) -> StripeExport:
    """Reads one export file; returns its converted rows and its rejected rows.

    ``source`` is a path, the file's bytes or a binary file object; ``origin`` names it
    (default: the path's file name). ``file_format`` is ``csv`` or ``parquet`` (default: from
    the name's suffix, else CSV). ``as_of`` (timezone-aware) decides ``status``. Options are
    those of :func:`convert_report`.
    """
    chunks = list(
        iter_stripe_export(source, as_of, origin=origin, file_format=file_format, **options)
    )
    return StripeExport(
        pa.concat_tables([c.rows for c in chunks]).combine_chunks(),
        pa.concat_tables([c.rejected for c in chunks]),
    )


def iter_stripe_export(
    source: str | Path | bytes | IO[bytes],
    as_of: datetime,
    *,
    origin: str | None = None,
    file_format: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    **options,
) -> Iterator[StripeExport]:
    """:func:`load_stripe_export` one chunk of at most ``batch_rows`` rows at a time, in file
    order, so memory is bounded by the chunk and not by the file (row and line numbers of
    rejected rows count from the start of the file)."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    if origin is None:
        origin = Path(source).name if isinstance(source, str | Path) else "stripe_export"
    fmt = (file_format or _format_of(origin)).lower()
    if fmt not in ("csv", "parquet"):
        raise StripeExportError(f"{origin}: format {fmt!r} is not csv or parquet")
    with _opened(source) as stream:
        first_row = 1
        try:
            for frame in iter_frames(stream, fmt, batch_rows):
                yield convert_report(
                    frame,
                    as_of,
                    origin=origin,
                    csv_lines=fmt == "csv",
                    first_row=first_row,
                    **options,
                )
                first_row += frame.height
        except UnreadableExport as exc:
            raise StripeExportError(f"{origin}: cannot be read as {fmt}: {exc}") from exc


@contextmanager
def _opened(source: str | Path | bytes | IO[bytes]) -> Iterator[IO[bytes]]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    elif isinstance(source, str | Path):
        try:
            with open(source, "rb") as f:
                yield f
        except OSError as exc:
            raise StripeExportError(f"{source}: cannot be opened: {exc}") from exc
    else:
        yield source


def read_stripe_export(path: str | Path, as_of: datetime, **options) -> pa.Table:
    """The ``BALANCE_TRANSACTION_V1`` rows of one export; raises if any row is refused."""
    export = load_stripe_export(path, as_of, **options)
    if export.rejected.num_rows:
        raise StripeExportError(describe_rejects(export.rejected))
    return export.rows


def describe_rejects(rejected: pa.Table, limit: int = 5) -> str:
    """A readable summary: ``file line 7, column gross: ...`` for the first ``limit`` rows."""
    lines = []
    for r in rejected.slice(0, limit).to_pylist():
        where = f"line {r['line']}" if r["line"] is not None else f"row {r['row']}"
        lines.append(f"{r['origin']} {where}, column {r['column']}: {r['detail']}")
    more = rejected.num_rows - limit
    if more > 0:
        lines.append(f"... and {more} more rejected rows")
    return "; ".join(lines)


def _format_of(name: str) -> str:
    return "parquet" if Path(name).suffix.lower() in (".parquet", ".pq") else "csv"


# -- conversion ---------------------------------------------------------------------------


def convert_report(
    frame: pl.DataFrame,
    as_of: datetime,
    *,
    origin: str,
    csv_lines: bool = True,
    first_row: int = 1,
    timezone: str = "UTC",
    order_id_key: str = "order_id",
    decimal_separator: str = ".",
) -> StripeExport:
    """Converts a report already read into a frame (text columns, or Parquet's types);
    ``first_row`` is the 1-based row number of the frame's first row in its file."""
    frame = _payouts_report_aliases(frame)
    columns = _resolve_columns(frame, origin, timezone)
    frame = _as_text(frame, origin, columns)
    frame = frame.with_columns(pl.col(pl.String).replace("", None))  # empty = absent, as in CSV
    frame = frame.with_row_index("_row", offset=first_row)
    frame = frame.with_columns(_normalised_currency(frame.columns))
    amounts = [c for c in ("gross", "fee", "net", "customer_facing_amount") if c in frame.columns]
    if decimal_separator != ".":
        frame = frame.with_columns(
            pl.col(c).str.replace_all(decimal_separator, ".", literal=True) for c in amounts
        )
    plan = plan_conversion(frame.schema, columns, amounts)
    for stage in plan.stages:
        frame = frame.with_columns(stage)
    frame = frame.with_columns(pl.any_horizontal([bad for bad, _ in plan.checks]).alias("_bad"))
    good = frame.filter(~pl.col("_bad"))
    # Only the refused rows pay for building the message (the first failing check's).
    bad = frame.filter(pl.col("_bad")).with_columns(
        pl.coalesce([pl.when(bad).then(detail) for bad, detail in plan.checks]).alias("_error")
    )
    return StripeExport(
        _rows_table(good, frame.columns, as_of, origin, order_id_key),
        _rejects_table(bad, origin, csv_lines),
    )


def _payouts_report_aliases(frame: pl.DataFrame) -> pl.DataFrame:
    """``payouts.itemized`` (one row per payout, its own balance transaction) names its
    object ``payout_id`` and its time ``effective_at``: read them as the source and the
    creation time, so payouts come in like every other balance transaction."""
    names = set(frame.columns)
    if "payout_id" not in names or "source_id" in names:
        return frame
    aliases = [pl.col("payout_id").alias("source_id")]
    for suffix in ("_utc", ""):
        if f"effective_at{suffix}" in names and not names & {"created", "created_utc"}:
            aliases.append(pl.col(f"effective_at{suffix}").alias(f"created{suffix}"))
            break
    return frame.with_columns(aliases)


def _resolve_columns(frame: pl.DataFrame, origin: str, timezone: str) -> Columns:
    names = set(frame.columns)
    missing = [c for c in REQUIRED if c not in names]
    times: dict[str, tuple[str, str] | None] = {}
    for base in ("created", "available_on"):
        if f"{base}_utc" in names:
            times[base] = (f"{base}_utc", "UTC")
        elif base in names:
            times[base] = (base, timezone)
        else:
            times[base] = None
            if base in REQUIRED_TIMES:
                missing.append(f"{base}_utc")
    if "source_id" not in names:
        missing.append("source_id")
    if missing:
        raise StripeExportError(
            f"{origin}: missing column(s) {', '.join(missing)}; an itemized report needs "
            f"{', '.join(REQUIRED)}, created_utc and source_id (has: {', '.join(frame.columns)})"
        )
    created = times["created"]
    assert created is not None
    return Columns(created, times["available_on"])


def _as_text(frame: pl.DataFrame, origin: str, columns: Columns) -> pl.DataFrame:
    """Every column as text except timestamps (kept as they are, converted later)."""
    money = {"gross", "fee", "net", "customer_facing_amount"}
    times = {columns.created[0]} | ({columns.available_on[0]} if columns.available_on else set())
    casts = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String or (name in times and isinstance(dtype, pl.Datetime)):
            continue
        if name in money and dtype.is_float():
            raise StripeExportError(
                f"{origin}: column {name} is {dtype}; money must be decimal text or a "
                "decimal type, floats cannot carry it exactly"
            )
        casts.append(pl.col(name).cast(pl.String))
    return frame.with_columns(casts) if casts else frame


def _normalised_currency(names: list[str]) -> list[pl.Expr]:
    exprs = [pl.col("currency").str.strip_chars().str.to_lowercase()]
    if "customer_facing_currency" in names:
        exprs.append(pl.col("customer_facing_currency").str.strip_chars().str.to_lowercase())
    return exprs


def _rows_table(
    good: pl.DataFrame, names: list[str], as_of: datetime, origin: str, order_id_key: str
) -> pa.Table:
    def text(column: str) -> pl.Expr:
        return pl.col(column) if column in names else pl.lit(None, dtype=pl.String)

    available = pl.col("_available_on") if "_available_on" in names else pl.lit(None)
    metadata_order = f"payment_metadata[{order_id_key}]"
    has_net = "_minor_net" in names
    frame = good.select(
        balance_transaction_id=pl.col("balance_transaction_id").str.strip_chars(),
        source_id=text("source_id"),
        type=pl.lit(None, dtype=pl.String),
        reporting_category=pl.col("reporting_category").str.strip_chars(),
        amount=pl.col("_minor_gross"),
        fee=pl.col("_minor_fee"),
        net=pl.col("_minor_net") if has_net else pl.col("_minor_gross") - pl.col("_minor_fee"),
        currency=pl.col("currency"),
        created=pl.col("_created"),
        available_on=available,
        status=pl.when(available.is_null())
        .then(None)
        .when(available > pl.lit(as_of))
        .then(pl.lit("pending"))
        .otherwise(pl.lit("available")),
        exchange_rate=pl.lit(None, dtype=pl.String),
        customer_facing_amount=(
            pl.col("_minor_customer_facing_amount")
            if "_minor_customer_facing_amount" in names
            else pl.lit(None, dtype=pl.Int64)
        ),
        customer_facing_currency=text("customer_facing_currency"),
        charge_id=text("charge_id"),
        payment_intent_id=text("payment_intent_id"),
        order_id=pl.coalesce(text(metadata_order), text("order_id")),
        idempotency_key=pl.lit(None, dtype=pl.String),
        customer_id=text("customer_id"),
        payment_method_type=text("payment_method_type"),
        card_brand=text("card_brand"),
        card_country=text("card_country"),
        automatic_payout_id=text("automatic_payout_id"),
    )
    arrow = frame.to_arrow()
    n = arrow.num_rows
    arrays = []
    for f in BALANCE_TRANSACTION_V1:
        if f.name == "fee_details":
            arrays.append(pa.nulls(n, f.type))
        elif f.name == "origin":
            arrays.append(pa.array([origin] * n, pa.string()))
        else:
            arrays.append(arrow.column(f.name).cast(f.type))
    return pa.Table.from_arrays(arrays, schema=BALANCE_TRANSACTION_V1)


def _rejects_table(bad: pl.DataFrame, origin: str, csv_lines: bool) -> pa.Table:
    originals = [c for c in bad.columns if not c.startswith("_")]
    reasons, columns, details, records = [], [], [], []
    for error, record in zip(
        bad.get_column("_error").to_list(), bad.select(originals).to_dicts(), strict=True
    ):
        reason, column, detail = error.split(ERR_SEP, 2)
        reasons.append(reason)
        columns.append(column)
        details.append(detail)
        records.append(json.dumps(record, default=str, ensure_ascii=False))
    rows = bad.get_column("_row").cast(pl.Int64).to_list()
    return pa.Table.from_arrays(
        [
            pa.array([origin] * len(rows), pa.string()),
            pa.array(rows, pa.int64()),
            pa.array([r + 1 for r in rows] if csv_lines else [None] * len(rows), pa.int64()),
            pa.array(columns, pa.string()),
            pa.array(reasons, pa.string()),
            pa.array(details, pa.string()),
            pa.array(records, pa.string()),
        ],
        schema=STRIPE_EXPORT_REJECT_V1,
    )


# -- Beam ---------------------------------------------------------------------------------


class StripeExportBatches(NamedTuple):
    rows: beam.PCollection  # pa.Table batches of BALANCE_TRANSACTION_V1
    rejected: beam.PCollection  # pa.Table batches of STRIPE_EXPORT_REJECT_V1


class _ReadExportFn(beam.DoFn):
    def __init__(self, as_of: datetime, batch_rows: int, options: dict):
        self._as_of = as_of
        self._batch_rows = batch_rows
        self._options = options
        self.rows_read = Metrics.counter(NAMESPACE, "rows_read")
        self.rows_rejected = Metrics.counter(NAMESPACE, "rows_rejected")
        self.files_read = Metrics.counter(NAMESPACE, "files_read")

    def process(self, path: str) -> Iterator:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        with FileSystems.open(path) as f:
            for export in iter_stripe_export(
                f, self._as_of, origin=name, batch_rows=self._batch_rows, **self._options
            ):
                self.rows_read.inc(export.rows.num_rows)
                self.rows_rejected.inc(export.rejected.num_rows)
                if export.rejected.num_rows:
                    yield beam.pvalue.TaggedOutput(REJECTED, export.rejected)
                if export.rows.num_rows:
                    yield export.rows.combine_chunks()
        self.files_read.inc()


def _expand_pattern(pattern: str) -> list[str]:
    matched = FileSystems.match([pattern])[0].metadata_list
    if not matched:
        raise StripeExportError(f"no Stripe export matches {pattern!r}")
    return sorted(m.path for m in matched)


class ReadStripeExport(beam.PTransform):
    """Reads the Stripe export files matching ``file_pattern`` (any Beam filesystem).

    Output: :class:`StripeExportBatches`, ``rows`` as ``BALANCE_TRANSACTION_V1`` tables of at
    most ``batch_rows`` rows and ``rejected`` as ``STRIPE_EXPORT_REJECT_V1`` tables. Every
    row of every file lands in exactly one of the two. Options are those of
    :func:`load_stripe_export` (``timezone``, ``order_id_key``, ``decimal_separator``,
    ``file_format``).
    """

    def __init__(
        self,
        file_pattern: str,
        *,
        as_of: datetime,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        **options,
    ):
        super().__init__()
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware (UTC)")
        self._pattern = file_pattern
        self._fn = _ReadExportFn(as_of, batch_rows, options)

    def expand(self, pbegin):
        outputs = (
            pbegin
            | "FilePattern" >> beam.Create([self._pattern])
            | "MatchFiles" >> beam.FlatMap(_expand_pattern)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndConvert"
            >> beam.ParDo(self._fn).with_outputs(REJECTED, main="rows").with_output_types(pa.Table)
        )
        return StripeExportBatches(outputs.rows, outputs[REJECTED])
