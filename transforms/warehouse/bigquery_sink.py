"""The BigQuery warehouse (``bigquery://project/dataset``, optionally ``?location=EU``).

A load stages each table's rows in a staging table of its own (Parquet load jobs, tables that
expire within a day), then runs one script that MERGEs every staging table into its target
inside a transaction (``transforms.warehouse.bigquery_merge``): every table's rows become
visible together, or none do. Staging tables are deleted afterwards, on failure too.
Settings and credentials: ``transforms.warehouse.bigquery_config``.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core.exceptions import Conflict, GoogleAPICallError, GoogleAPIError, NotFound
from google.auth.exceptions import GoogleAuthError
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY
from requests.exceptions import RequestException

from schemas.tables import TableDef
from transforms.warehouse.base import (
    ParquetFiles,
    Rows,
    Warehouse,
    WarehouseError,
    refuse_breaking_changes,
)
from transforms.warehouse.bigquery_config import default_client, parse_url
from transforms.warehouse.bigquery_merge import Merge, merge_script
from transforms.warehouse.bigquery_schema import bigquery_schema, new_table, relaxed, signature

log = logging.getLogger(__name__)

_STAGE_LIFETIME = timedelta(days=1)
_JOB_TIMEOUT_S = 1800.0
# Metadata calls retry transient errors (429, 5xx, connection resets) for two minutes.
_RETRY = DEFAULT_RETRY.with_timeout(120.0)
_FAILURES = (
    GoogleAPIError,
    GoogleAuthError,
    RequestException,
    concurrent.futures.TimeoutError,
)


class BigQueryWarehouse(Warehouse):
    """One BigQuery dataset. Loads upsert on primary keys in one multi-table transaction."""

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        location: str | None = None,
        client: bigquery.Client | None = None,
    ):
        self._client = client if client is not None else default_client(project, location)
        self.location = location or self._client.location
        self._dataset = bigquery.DatasetReference(project, dataset)
        self._where = f"{project}.{dataset}"
        self._ensure_dataset()

    @classmethod
    def from_url(cls, url: str) -> BigQueryWarehouse:
        project, dataset, location = parse_url(url)
        return cls(project, dataset, location=location)

    def _ensure_dataset(self) -> None:
        """Fail fast when BigQuery is unreachable; create the dataset on a first run."""
        try:
            try:
                self._client.get_dataset(self._dataset, retry=_RETRY)
            except NotFound:
                dataset = bigquery.Dataset(self._dataset)
                dataset.location = self.location
                self._client.create_dataset(dataset, exists_ok=True, retry=_RETRY)
        except _FAILURES as exc:
            raise WarehouseError(
                f"cannot open BigQuery dataset {self._where}: {_describe(exc)}"
            ) from exc

    def ensure(self, table: TableDef) -> None:
        ref = self._dataset.table(table.name)
        try:
            try:
                existing = self._client.get_table(ref, retry=_RETRY)
            except NotFound:
                try:
                    self._client.create_table(new_table(ref, table), retry=_RETRY)
                    return
                except Conflict:  # another run created it meanwhile
                    existing = self._client.get_table(ref, retry=_RETRY)
            self._widen(existing, table)
        except _FAILURES as exc:
            raise WarehouseError(
                f"cannot create or update table {self._where}.{table.name}: {_describe(exc)}"
            ) from exc

    def _widen(self, existing: bigquery.Table, table: TableDef) -> None:
        """Add the columns the schema gained (NULLABLE, as BigQuery requires) and relax the
        ones it made nullable; refuse changed types and dropped columns."""
        have = {f.name: f for f in existing.schema}
        want = {f.name: f for f in bigquery_schema(table.schema)}
        changed = [n for n in want if n in have and signature(have[n]) != signature(want[n])]
        dropped = [n for n in have if n not in want]
        refuse_breaking_changes(f"table {self._where}.{table.name}", changed, dropped)
        loosened = [n for n in have if have[n].mode == "REQUIRED" and want[n].mode != "REQUIRED"]
        added = [f for n, f in want.items() if n not in have]
        if not added and not loosened:
            return
        existing.schema = [
            relaxed([f])[0] if f.name in loosened else f for f in existing.schema
        ] + relaxed(added)
        self._client.update_table(existing, ["schema"], retry=_RETRY)
        log.info(
            "widened %s.%s: added %s, made nullable %s",
            self._where,
            table.name,
            [f.name for f in added],
            loosened,
        )

    def load(self, batches: Mapping[TableDef, Rows]) -> None:
        # BigQuery runs no DDL on permanent tables inside a transaction: tables are created
        # or widened first. That is additive, so a failed load leaves columns, never rows.
        for table in batches:
            self.ensure(table)
        stages: list[bigquery.TableReference] = []
        try:
            merges = []
            for table, rows in batches.items():
                if _is_empty(rows):
                    continue
                stage = self._create_stage(table)
                stages.append(stage)
                self._fill_stage(stage, table, rows)
                merges.append(Merge(table, f"{self._where}.{table.name}", _dotted(stage)))
            if merges:
                self._merge(merges)
        finally:
            self._drop(stages)

    def _create_stage(self, table: TableDef) -> bigquery.TableReference:
        ref = self._dataset.table(f"payrecon_stage_{table.name}_{uuid.uuid4().hex[:12]}")
        stage = bigquery.Table(ref, schema=relaxed(bigquery_schema(table.schema)))
        stage.expires = datetime.now(UTC) + _STAGE_LIFETIME
        try:
            self._client.create_table(stage, retry=_RETRY)
        except _FAILURES as exc:
            raise WarehouseError(
                f"cannot create the staging table for {table.name} in {self._where}, "
                f"nothing written: {_describe(exc)}"
            ) from exc
        return ref

    def _fill_stage(self, stage: bigquery.TableReference, table: TableDef, rows: Rows) -> None:
        """One Parquet load job per staged file (or one for an Arrow table), all submitted
        before waiting so BigQuery processes them in parallel."""
        jobs: list[tuple[str, bigquery.LoadJob]] = []
        if isinstance(rows, ParquetFiles):
            for source in rows.paths:
                with _loading(table, source, stage), Path(source).open("rb") as fh:
                    size = Path(source).stat().st_size
                    jobs.append((source, self._upload(fh, size, stage)))
        else:
            with _loading(table, "the rows", stage):
                buffer = io.BytesIO()
                pq.write_table(rows.select(table.schema.names).cast(table.schema), buffer)
                jobs.append(("the rows", self._upload(buffer, buffer.tell(), stage)))
        for source, job in jobs:
            with _loading(table, source, stage):
                job.result(timeout=_JOB_TIMEOUT_S)

    def _upload(
        self, data: IO[bytes], size: int, stage: bigquery.TableReference
    ) -> bigquery.LoadJob:
        # Under 5 MB the client sends one multipart request, above it a resumable upload.
        return self._client.load_table_from_file(
            data,
            stage,
            rewind=True,
            size=size,
            job_config=_load_config(),
            job_id_prefix="payrecon_stage_",
        )

    def _merge(self, merges: list[Merge]) -> None:
        script = merge_script(merges)
        try:
            job = self._client.query(script.sql, job_id_prefix="payrecon_merge_")
            job.result(timeout=_JOB_TIMEOUT_S)
        except _FAILURES as exc:
            detail = _describe(exc)
            failed = script.table_at(detail)
            which = f"the MERGE into {failed}" if failed else "the MERGE transaction"
            tables = ", ".join(m.table.name for m in merges)
            raise WarehouseError(
                f"{which} in {self._where} failed, nothing written to {tables}: {detail}"
            ) from exc

    def _drop(self, stages: list[bigquery.TableReference]) -> None:
        for stage in stages:
            try:
                self._client.delete_table(stage, not_found_ok=True, retry=_RETRY)
            except _FAILURES as exc:
                log.warning(
                    "could not delete staging table %s (it expires within a day): %s",
                    _dotted(stage),
                    _describe(exc),
                )

    def has_table(self, name: str) -> bool:
        try:
            self._client.get_table(self._dataset.table(name), retry=_RETRY)
            return True
        except NotFound:
            return False
        except _FAILURES as exc:
            raise WarehouseError(
                f"cannot look up table {self._where}.{name}: {_describe(exc)}"
            ) from exc

    def query_arrow(self, sql: str) -> pa.Table:
        """Run ``sql`` with the dataset as default, so unqualified table names resolve."""
        config = bigquery.QueryJobConfig(default_dataset=self._dataset)
        try:
            job = self._client.query(sql, job_config=config, job_id_prefix="payrecon_query_")
            rows = job.result(timeout=_JOB_TIMEOUT_S)
            # Plain REST paging: no BigQuery Storage API (and its permission) needed.
            return rows.to_arrow(create_bqstorage_client=False)
        except _FAILURES as exc:
            raise WarehouseError(
                f"query on BigQuery dataset {self._where} failed: {_describe(exc)}"
            ) from exc

    def close(self) -> None:
        self._client.close()


def _load_config() -> bigquery.LoadJobConfig:
    """Parquet into an existing staging table, read the way ``bigquery_schema`` maps types:
    lists as REPEATED columns, maps as REPEATED key/value records, wide decimals as
    BIGNUMERIC."""
    parquet = bigquery.ParquetOptions()
    parquet.enable_list_inference = True
    parquet.map_target_type = "ARRAY_OF_STRUCT"
    return bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        parquet_options=parquet,
        decimal_target_types=["NUMERIC", "BIGNUMERIC"],
    )


@contextmanager
def _loading(table: TableDef, source: str, stage: bigquery.TableReference) -> Iterator[None]:
    """Turn a failed upload or load job into a WarehouseError naming table and file."""
    try:
        yield
    except (*_FAILURES, OSError, pa.ArrowException) as exc:
        raise WarehouseError(
            f"loading {table.name} ({source}) into staging table {_dotted(stage)} failed, "
            f"nothing written: {_describe(exc)}"
        ) from exc


def _is_empty(rows: Rows) -> bool:
    return not rows.paths if isinstance(rows, ParquetFiles) else rows.num_rows == 0


def _dotted(ref: bigquery.TableReference) -> str:
    return f"{ref.project}.{ref.dataset_id}.{ref.table_id}"


def _describe(exc: BaseException, limit: int = 1500) -> str:
    """BigQuery's own message on one line, with the job's errors (a load job's say which
    file and column) and its id. Never the request headers, so never a token."""
    if isinstance(exc, GoogleAPICallError):
        text = exc.message
        extra = [
            e["message"]
            for e in (exc.errors or [])
            if isinstance(e, dict) and e.get("message") and e["message"] not in text
        ]
        text = "; ".join([text, *extra[:3]])
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
