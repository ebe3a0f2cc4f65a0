"""Stripe's side of a reconciliation, from either source, as Arrow batches.

``ReadStripeBalanceTransactions`` hides where the rows come from: the API (through
:class:`~transforms.stripe_api.StripeClient`, paging the balance transactions created in the
read range) or itemized report exports (CSV or Parquet files, :mod:`transforms.stripe_files`).
Either way the output is ``BALANCE_TRANSACTION_V1`` tables plus the rejected export rows, so
the matcher never cares which source a run used.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from transforms.stripe_files import ReadStripeExport, StripeExportBatches

if TYPE_CHECKING:
    from transforms.stripe_api import StripeClient

API = "api"
API_KEY_ENV = "STRIPE_API_KEY"
NAMESPACE = "payrecon.stripe_api"


class _FetchWindowFn(beam.DoFn):
    """Pages through the API. The key is read from the environment in ``setup()`` so it is
    never pickled into the pipeline graph (Dataflow job specs are visible to many people)."""

    def __init__(self, start: datetime, end: datetime, api_base: str | None, batch_rows: int):
        self._start, self._end = start, end
        self._api_base = api_base
        self._batch_rows = batch_rows
        self._client: StripeClient | None = None
        self.rows = Metrics.counter(NAMESPACE, "rows_read")

    def setup(self):
        from transforms.stripe_api import StripeClient

        key = os.environ.get(API_KEY_ENV)
        if not key:
            raise RuntimeError(f"--stripe-source api needs the {API_KEY_ENV} environment variable")
        self._client = StripeClient(key, api_base=self._api_base)

    def teardown(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def process(self, _):
        from transforms.stripe_rows import fetch_window

        assert self._client is not None
        table = fetch_window(self._client, self._start, self._end)
        self.rows.inc(table.num_rows)
        for batch in table.to_batches(max_chunksize=self._batch_rows):
            yield pa.Table.from_batches([batch], schema=BALANCE_TRANSACTION_V1)


class ReadStripeBalanceTransactions(beam.PTransform):
    """Balance transactions created in ``[read_start, read_end)`` from ``source``.

    ``source`` is ``api`` or a file pattern of itemized exports (every Beam filesystem).
    ``as_of`` decides which export rows are still pending. Output: :class:`StripeExportBatches`
    (``rows``, and ``rejected`` export rows with their reasons; the API source rejects none,
    it fails the run on a row it cannot convert).
    """

    def __init__(
        self,
        source: str,
        *,
        read_start: datetime,
        read_end: datetime,
        as_of: datetime,
        api_base: str | None = None,
        batch_rows: int = 100_000,
    ):
        super().__init__()
        self._source = source
        self._range = (read_start, read_end)
        self._as_of = as_of
        self._api_base = api_base
        self._batch_rows = batch_rows

    def expand(self, pbegin):
        if self._source != API:
            return pbegin | "ReadExports" >> ReadStripeExport(
                self._source, as_of=self._as_of, batch_rows=self._batch_rows
            )
        rows = (
            pbegin
            | "Once" >> beam.Impulse()
            | "FetchFromApi"
            >> beam.ParDo(
                _FetchWindowFn(*self._range, self._api_base, self._batch_rows)
            ).with_output_types(pa.Table)
        )
        nothing = pbegin | "NoRejects" >> beam.Create([], reshuffle=False).with_output_types(
            pa.Table
        )
        return StripeExportBatches(rows, nothing)
