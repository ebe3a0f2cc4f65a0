"""Stripe export files read as a stream of bounded chunks, every CSV value as text.

A day of a busy account is a report of millions of rows; reading it whole and converting it
at once held about five times the file's size in memory (1.7 GiB for a 300 MB CSV). Read in
chunks of ``batch_rows`` rows, the memory a reader needs is bounded by the chunk, whatever
the size of the file, and the conversion of one chunk can be handed downstream before the
next is read.

CSV goes through pyarrow's streaming reader with every column typed as text (the header is
read first to name them), so an amount is never parsed as a number before the exact decimal
conversion sees it; empty fields are absent values, as in Stripe's reports. Parquet is read
by row groups with pyarrow and keeps its own types (the conversion refuses float money).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

# pyarrow parses CSV blocks of this many bytes in parallel; chunks are re-cut to batch_rows.
_BLOCK_BYTES = 8 << 20
_HEADER_PEEK_BYTES = 1 << 20


class UnreadableExport(ValueError):
    """The bytes are not a CSV or Parquet file pyarrow can read."""


def iter_frames(source: IO[bytes], fmt: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The file's rows as frames of at most ``batch_rows`` rows, in file order.

    A file with a header and no rows yields one empty frame with its columns (so a caller
    can still check them); an empty file yields one frame without columns.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    tables = _parquet_tables(source, batch_rows) if fmt == "parquet" else _csv_tables(source)
    yield from _rebatch(tables, batch_rows)


def _csv_tables(source: IO[bytes]) -> Iterator[pa.Table]:
    stream = io.BufferedReader(source, buffer_size=_HEADER_PEEK_BYTES)  # type: ignore[type-var]
    names = _header(stream.peek(_HEADER_PEEK_BYTES))
    if not names:
        yield pa.table({})
        return
    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        schema = reader.schema
        yield schema.empty_table()
        for batch in reader:
            yield pa.Table.from_batches([batch], schema=schema)
    except pa.ArrowInvalid as exc:
        raise UnreadableExport(str(exc)) from exc


def _header(head: bytes) -> list[str]:
    """The column names of the CSV's first line (a byte-order mark removed)."""
    line = re.split(rb"\r\n?|\n", head, maxsplit=1)[0]  # pyarrow ends a line at CR too
    try:  # pyarrow keeps undecodable names, and fails on them later with a UnicodeDecodeError
        first = next(csv.reader(io.StringIO(line.decode("utf-8").removeprefix("\ufeff"))), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableExport(f"the header line cannot be read ({exc})") from None
    return first


def _parquet_tables(source: IO[bytes], batch_rows: int) -> Iterator[pa.Table]:
    try:
        parquet = pq.ParquetFile(source)
        schema = parquet.schema_arrow
        yield schema.empty_table()
        for batch in parquet.iter_batches(batch_size=batch_rows):
            yield pa.Table.from_batches([batch], schema=schema)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UnreadableExport(str(exc)) from exc


def _rebatch(tables: Iterator[pa.Table], batch_rows: int) -> Iterator[pl.DataFrame]:
    """Exactly ``batch_rows`` rows per frame but the last (each downstream batch has a fixed
    cost, so small ones are merged; pyarrow cuts by bytes, not rows)."""
    empty = next(tables)
    pending: list[pa.Table] = []
    held = 0
    emitted = False
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= batch_rows:
            merged = pa.concat_tables(pending)
            yield _frame(merged.slice(0, batch_rows))
            emitted = True
            rest = merged.slice(batch_rows)
            pending, held = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if held or not emitted:
        yield _frame(pa.concat_tables(pending) if pending else empty)


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table.combine_chunks(), rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame
