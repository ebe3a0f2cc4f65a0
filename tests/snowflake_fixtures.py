"""fakesnow fixtures shared by the Snowflake tests: the real Snowflake connector over HTTP,
DuckDB underneath. One server serves the whole session; every warehouse opened here gets a
database of its own, so tests never see each other's tables.

Use it from a test module with ``pytest_plugins = ("tests.snowflake_fixtures",)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import fakesnow
import pytest

from transforms.warehouse.snowflake_sink import SnowflakeWarehouse


@pytest.fixture(scope="session")
def fakesnow_server() -> Iterator[dict]:
    """``snowflake.connector.connect`` keyword arguments that reach the fakesnow server."""
    with fakesnow.server() as connect_kwargs:
        yield connect_kwargs


@pytest.fixture
def snowflake_connect(fakesnow_server) -> Iterator[Callable[[], SnowflakeWarehouse]]:
    """``connect() -> SnowflakeWarehouse`` on this test's own database (each call opens a new
    connection to the same database, as a second job run would); all are closed after it."""
    database = f"T_{uuid.uuid4().hex[:12]}"
    opened: list[SnowflakeWarehouse] = []

    def _connect() -> SnowflakeWarehouse:
        opened.append(
            SnowflakeWarehouse.connect(**fakesnow_server, database=database, schema="RECON")
        )
        return opened[-1]

    yield _connect
    for wh in opened:
        wh.close()
