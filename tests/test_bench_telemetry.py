"""bench/telemetry.py at a tiny size: both variants run and their windows are compared."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench(monkeypatch):
    """bench/telemetry.py as a module (it imports its sibling ``common`` by plain name)."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.delitem(sys.modules, "common", raising=False)
    spec = importlib.util.spec_from_file_location("bench_telemetry", BENCH / "telemetry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("common", None)


def test_the_telemetry_bench_runs_job_and_plain_and_finds_their_windows_equal(bench, tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "telemetry.py"), "--events", "3000", "--keep"],
        env={**os.environ, "TMPDIR": str(tmp_path)},  # the kept work dir lands in tmp_path
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for variant in ("job", "plain"):
        assert re.search(rf"^{variant}: 3,000 messages in, 3,000 decoded", done.stdout, re.M)
    assert re.search(r"^job/plain +\d+\.\d\dx", done.stdout, re.M)
    equal = re.search(r"job and plain equal: yes \(([\d,]+) rows", done.stdout)
    assert equal and int(equal.group(1).replace(",", "")) > 0, done.stdout

    # The check is not vacuous: one changed metric value is two rows in only one table.
    (work,) = tmp_path.glob("payrecon-bench-telemetry-*")
    job, plain = work / "job.duckdb", work / "plain.duckdb"
    with duckdb.connect(str(plain)) as con:
        con.execute(
            "UPDATE telemetry_minutely SET value = value / 2 WHERE metric = 'attempts' AND "
            "gateway = '*' AND window_start = (SELECT min(window_start) FROM telemetry_minutely)"
        )
    rows, differences = bench.compare_minutely(job, plain)
    assert rows == int(equal.group(1).replace(",", ""))
    assert [d.split(":")[0] for d in differences] == ["job only", "plain only"]
