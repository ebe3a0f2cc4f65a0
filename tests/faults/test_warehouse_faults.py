"""``payrecon reconcile`` when the warehouse fails: a load that fails midway leaves nothing of
the run visible and commits no Kafka offsets, so a rerun starts from the same place; a
warehouse that cannot be written ends the command with one line and DESIGN.md's exit code
(3, a dependency unavailable; 2 for an existing table whose schema the run would break).

The full disk is a tmpfs of a few hundred KiB and the read-only filesystem a tmpfs mounted
read-only: both need root (CAP_SYS_ADMIN); they are skipped, saying so, without it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Consumer, TopicPartition

from pipelines.reconcile import main
from tests.reconcile_helpers import published_day, reconcile_argv
from transforms.warehouse.duckdb_sink import DuckDBWarehouse

pytestmark = pytest.mark.slow

PARTITIONS = 2


@pytest.fixture(scope="module")
def day(broker, tmp_path_factory) -> dict:
    """A small generated day with discrepancies, published once."""
    return published_day(
        broker.bootstrap_servers,
        tmp_path_factory.mktemp("warehouse-faults-day"),
        events=300,
        seed=5,
        discrepancy_rate=0.05,
        partitions=PARTITIONS,
    )


class Run:
    """One ``payrecon reconcile`` of the day into ``warehouse``, with its own group."""

    def __init__(self, broker, day: dict, warehouse: Path, staging: Path | None = None):
        self.broker, self.day, self.warehouse = broker, day, warehouse
        self.group = f"g-warehouse-faults-{uuid.uuid4().hex[:8]}"
        self.argv = reconcile_argv(
            broker.bootstrap_servers,
            day,
            warehouse,
            buckets=2,
            discrepancies_topic=f"{day['topic']}.discrepancies",
            group_id=self.group,
        )
        if staging is not None:
            self.argv += ["--staging-dir", str(staging)]

    def __call__(self) -> int:
        return main(self.argv)

    def committed(self) -> list[int]:
        consumer = Consumer(
            {"bootstrap.servers": self.broker.bootstrap_servers, "group.id": self.group}
        )
        try:
            offsets = consumer.committed(
                [TopicPartition(self.day["topic"], p) for p in range(PARTITIONS)], timeout=10
            )
        finally:
            consumer.close()
        return [tp.offset for tp in offsets]

    def committed_nothing(self) -> bool:
        return all(offset < 0 for offset in self.committed())


def one_line(capfd) -> str:
    """The command's reason on stderr; fails on a traceback."""
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    [line] = [x for x in err.splitlines() if x.startswith("payrecon reconcile:")]
    return line


def first_line(capfd) -> str:
    """The command's reason: the first of its lines on stderr (the second may say that the
    failure could not be recorded in the warehouse either); fails on a traceback."""
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    return next(x for x in err.splitlines() if x.startswith("payrecon reconcile:"))


def tables_of(warehouse: Path) -> dict[str, int]:
    """Every table of the file and its row count (the file must open)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = [
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        ]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


# -- a load that fails midway ------------------------------------------------------------------


class InjectedFailure(duckdb.IOException):
    """Stands for the warehouse failing under the load (a disk error, a lost file)."""


def test_a_load_failing_at_its_second_table_shows_nothing_and_commits_no_offsets(
    broker, day, tmp_path, capfd, monkeypatch
):
    real_upsert = DuckDBWarehouse._upsert
    upserts: list[str] = []

    def fail_second(self, table, rows):
        upserts.append(table.name)
        if len(upserts) == 2:
            raise InjectedFailure(f"injected: writing {table.name} failed")
        real_upsert(self, table, rows)

    monkeypatch.setattr(DuckDBWarehouse, "_upsert", fail_second)
    run = Run(broker, day, tmp_path / "w.duckdb")

    assert run() == 3
    line = one_line(capfd)
    assert "nothing written" in line and "injected" in line, line
    assert tables_of(run.warehouse) == {}, "a part of the load is visible"
    assert run.committed_nothing()

    monkeypatch.setattr(DuckDBWarehouse, "_upsert", real_upsert)
    assert run() == 0, "the rerun after the failure"
    tables = tables_of(run.warehouse)
    assert tables["recon_runs"] == 1 and tables["fact_ledger_events"] > 0
    assert all(offset > 0 for offset in run.committed())


def test_an_existing_table_the_run_would_break_refuses_the_load_with_exit_2(
    broker, day, tmp_path, capfd
):
    """``recon_matches`` is loaded after three other tables were created in the load's
    transaction: none of them stays, and the user's table is left as it was."""
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE recon_matches (run_id INTEGER, note VARCHAR)")
        con.execute("INSERT INTO recon_matches VALUES (1, 'kept')")
    run = Run(broker, day, warehouse)

    assert run() == 2
    line = one_line(capfd)
    assert "recon_matches" in line and "incompatible schema" in line, line
    assert tables_of(warehouse) == {"recon_matches": 1}
    assert run.committed_nothing()


# -- a warehouse that cannot be written ----------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (skips the test if this process may not mount)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_during_the_load_exits_3_with_one_line_and_commits_nothing(
    broker, day, tmp_path, capfd
):
    """The file is created (the job checks it first), then the disk fills up under the
    load; the staging folder is elsewhere, so only the warehouse write fails."""
    with tmpfs(tmp_path / "small", "size=256k") as disk:
        run = Run(broker, day, disk / "w.duckdb", staging=tmp_path / "staging")

        assert run() == 3
        line = one_line(capfd)
        assert "No space left on device" in line, line
        assert "recon_runs" not in tables_of(run.warehouse)
        assert run.committed_nothing()


def test_a_full_disk_under_the_staging_folder_exits_3_with_one_line_and_commits_nothing(
    broker, day, tmp_path, capfd
):
    """By default the run stages its tables beside the DuckDB file, so a full disk there
    first fails the pipeline's staging writes (it was a traceback)."""
    with tmpfs(tmp_path / "small", "size=256k") as disk:
        run = Run(broker, day, disk / "w.duckdb")

        assert run() == 3
        line = first_line(capfd)
        assert "cannot write the staging file" in line and "No space left" in line, line
        assert "recon_runs" not in tables_of(run.warehouse)
        assert run.committed_nothing()


def test_a_read_only_filesystem_exits_3_with_one_line_before_reading(broker, day, tmp_path, capfd):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        run = Run(broker, day, disk / "w.duckdb")

        assert run() == 3
        line = one_line(capfd)
        assert "cannot open DuckDB file" in line and "Read-only file system" in line, line
        assert run.committed_nothing()


def test_a_warehouse_path_under_a_file_exits_3_with_one_line(broker, day, tmp_path, capfd):
    (tmp_path / "a-file").write_text("not a directory")
    run = Run(broker, day, tmp_path / "a-file" / "w.duckdb")

    assert run() == 3
    line = one_line(capfd)
    assert "cannot open DuckDB file" in line, line
    assert run.committed_nothing()


def test_a_file_that_is_not_a_duckdb_database_exits_3_with_one_line(broker, day, tmp_path, capfd):
    warehouse = tmp_path / "w.duckdb"
    warehouse.write_bytes(b"PK\x03\x04 this is a zip file, not a database" * 100)
    run = Run(broker, day, warehouse)

    assert run() == 3
    line = one_line(capfd)
    assert "cannot open DuckDB file" in line, line
    assert run.committed_nothing()


@pytest.fixture
def held_open() -> Iterator[Callable[[Path], None]]:
    """``hold(path)``: another process opens the DuckDB file for writing and keeps it."""
    holders: list[subprocess.Popen] = []

    def hold(path: Path) -> None:
        code = (
            "import duckdb, sys, time\n"
            "con = duckdb.connect(sys.argv[1])\n"
            "print('open', flush=True)\n"
            "time.sleep(120)\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait(timeout=10)


def test_a_warehouse_another_process_holds_exits_3_with_one_line(
    broker, day, tmp_path, capfd, held_open
):
    warehouse = tmp_path / "w.duckdb"
    held_open(warehouse)
    run = Run(broker, day, warehouse)

    assert run() == 3
    line = one_line(capfd)
    assert "cannot open DuckDB file" in line and "lock" in line, line
    assert run.committed_nothing()
