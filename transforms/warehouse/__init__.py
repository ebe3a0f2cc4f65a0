"""Warehouse sinks: one interface, an implementation per warehouse, chosen by URL.

``duckdb:///path.duckdb`` (the embedded default), ``bigquery://project/dataset`` and
``snowflake://account/database/schema`` (credentials from the environment). Every load is
an upsert on the table's primary key inside one transaction, so a rerun never duplicates a
row and a failed load leaves nothing half-written.
"""

from transforms.warehouse.base import ParquetFiles, Warehouse, WarehouseError, open_warehouse

__all__ = ["ParquetFiles", "Warehouse", "WarehouseError", "open_warehouse"]
