"""``payrecon report``: a self-contained HTML page showing a real reconcile run's numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipelines.cli import main as payrecon
from pipelines.reconcile import main as reconcile
from pipelines.report import main as report
from pipelines.run_health import health_row, unplanned_run_id
from schemas.tables import AGE_BUCKETS, TABLES
from tests.browser_helpers import live_processes_naming, run_headless
from tests.reconcile_helpers import published_day, reconcile_argv
from transforms.warehouse import open_warehouse

REPO = Path(__file__).resolve().parent.parent
MORNING = ("2026-11-20T00:00:00Z", "2026-11-20T12:00:00Z")
AFTERNOON = ("2026-11-20T12:00:00Z", "2026-11-21T00:00:00Z")
AS_OF = "2026-11-25T00:00:00Z"
# XML namespace names in the inline SVG: identifiers, never fetched.
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


@pytest.fixture(scope="module")
def warehouse(broker, tmp_path_factory) -> Path:
    """A DuckDB warehouse holding two reconcile runs of one generated day: the morning's,
    then the afternoon's (the latest)."""
    out = tmp_path_factory.mktemp("report")
    day = published_day(
        broker.bootstrap_servers,
        out,
        events=2000,
        seed=5,
        discrepancy_rate=0.03,
        malformed_rate=0.005,
    )
    path = out / "w.duckdb"
    for start, end in (MORNING, AFTERNOON):
        argv = reconcile_argv(
            broker.bootstrap_servers,
            day,
            path,
            discrepancies_topic=f"{day['topic']}.discrepancies",
            group_id=f"g-report-{start}",
        )
        # The helper's window is the whole day; later flags win.
        assert reconcile([*argv, "--window-start", start, "--window-end", end]) == 0
    return path


@pytest.fixture(scope="module")
def runs(warehouse) -> dict[str, dict]:
    """recon_runs by window start, e.g. runs[MORNING[0]]."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        cursor = con.execute("SELECT * FROM recon_runs")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    return {f"{r['window_start']:%Y-%m-%dT%H:%M:%SZ}": r for r in rows}


@pytest.fixture(scope="module")
def page(warehouse, tmp_path_factory) -> Path:
    """The default report (the latest run)."""
    out = tmp_path_factory.mktemp("page") / "report.html"
    assert (
        report(["--warehouse", f"duckdb:///{warehouse}", "--out", str(out), "--as-of", AS_OF]) == 0
    )
    return out


class Page(HTMLParser):
    """The cells of every table, by the id of the section they are in, and its attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.tables: dict[str, list[list[list[str]]]] = {}
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self._section = dict(attrs)["id"]
            self.sections[self._section] = dict(attrs)
        elif tag == "table":
            self.tables.setdefault(self._section, []).append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._section][-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, section: str, first_heading: str) -> list[list[str]]:
        """The section's table whose first column heading is ``first_heading``."""
        return next(t for t in self.tables[section] if t[0][0] == first_heading)

    def facts(self) -> dict[str, str]:
        """The run's summary, label -> value."""
        return dict(self.tables["summary"][0])


def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def test_report_defaults_to_the_latest_run_and_shows_its_counts(page, runs):
    run = runs[AFTERNOON[0]]
    shown = parse(page)
    assert shown.sections["summary"]["data-run-id"] == run["run_id"]
    facts = shown.facts()
    assert facts["Run id"] == run["run_id"]
    assert facts["Window (UTC)"] == "[2026-11-20 12:00:00Z, 2026-11-21 00:00:00Z)"
    assert facts["Status"] == "succeeded"
    for label, column in [
        ("Messages in", "messages_in"),
        ("Ledger events out", "events_out"),
        ("Dead letters", "dead_letters"),
        ("Stripe rows", "stripe_rows"),
        ("Matched", "matched"),
        ("Pending", "pending"),
        ("Discrepancies", "discrepancies"),
        ("Data-quality failures", "dq_failures"),
    ]:
        assert facts[label] == f"{run[column]:,}", label
    reasons = shown.table("summary", "Reason")[1:]
    assert {r: int(n) for r, n in reasons} == json.loads(run["dead_letters_by_reason"])


def test_report_counts_each_discrepancy_kind_of_the_run(page, runs, warehouse):
    run = runs[AFTERNOON[0]]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        stored = dict(
            con.execute(
                "SELECT kind, count(*) FROM recon_discrepancies WHERE run_id = ? GROUP BY kind",
                [run["run_id"]],
            ).fetchall()
        )
    shown = {k: int(n.replace(",", "")) for k, n, _ in parse(page).table("summary", "Kind")[1:]}
    total = shown.pop("total")
    assert total == run["discrepancies"] == sum(stored.values()) > 0
    assert {k: n for k, n in shown.items() if n} == stored
    assert shown == json.loads(run["discrepancies_by_kind"])


def test_report_shows_money_in_each_currencys_major_units(page, runs):
    totals = json.loads(runs[AFTERNOON[0]]["totals"])
    stripe = {t["currency"]: t for t in totals if t["side"] == "stripe"}
    rows = parse(page).table("summary", "Currency")
    gross = {(r[0], r[1]): r[7] for r in rows[1:]}
    # JPY has no minor unit: 1,164,090 JPY, not 11,640.90; KWD has three decimals.
    jpy = stripe["jpy"]["gross"]
    assert gross[("JPY", "stripe")] == f"{jpy:,}"
    assert f"{jpy / 100:,.2f}" not in page.read_text()
    kwd = stripe["kwd"]["gross"]
    assert gross[("KWD", "stripe")] == f"{kwd // 1000:,}.{kwd % 1000:03d}"
    usd = stripe["usd"]["gross"]
    assert gross[("USD", "stripe")] == f"{usd // 100:,}.{usd % 100:02d}"


def test_report_shows_daily_revenue_of_the_runs_day(page, warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        [(gross, fees, net)] = con.execute(
            "SELECT gross, fees, net FROM daily_revenue WHERE currency = 'jpy'"
        ).fetchall()
    rows = parse(page).table("revenue", "Day")
    [jpy] = [r for r in rows if r[1] == "JPY"]
    assert (jpy[0], jpy[3], jpy[6], jpy[7]) == ("2026-11-20", f"{gross:,}", f"{fees:,}", f"{net:,}")


def _latest_snapshot(warehouse: Path, as_of: str) -> tuple[str, list[tuple]]:
    """The latest discrepancy_aging snapshot on or before ``as_of``'s day, and its rows."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT as_of_date, kind, currency, age_bucket, open_discrepancies, "
            "amount_at_stake_major FROM discrepancy_aging WHERE as_of_date = "
            "(SELECT max(as_of_date) FROM discrepancy_aging WHERE as_of_date <= ?) "
            "AND open_discrepancies > 0",
            [datetime.fromisoformat(as_of).date()],
        ).fetchall()
    assert rows
    return f"{rows[0][0]:%Y-%m-%d}", [r[1:] for r in rows]


def test_open_discrepancies_by_age_are_the_latest_aging_snapshots(page, warehouse):
    day, rows = _latest_snapshot(warehouse, AS_OF)
    stored: dict[tuple[str, str], int] = {}
    for kind, _, bucket, n, _ in rows:
        stored[(kind, bucket)] = stored.get((kind, bucket), 0) + n
    shown = parse(page)
    table = shown.table("discrepancies", "Kind")
    heading, body, total = table[0], table[1:-1], table[-1]
    assert heading == ["Kind", *AGE_BUCKETS, "Total"]
    cells = {
        (row[0], bucket): int(n.replace(",", ""))
        for row in body
        for bucket, n in zip(heading[1:-1], row[1:-1], strict=True)
    }
    assert {k: n for k, n in cells.items() if n} == stored
    assert total[-1] == f"{sum(stored.values()):,}"
    html = page.read_text()
    assert f"discrepancy_aging snapshot of {day}" in html
    assert f"Open discrepancies by age (snapshot {day})" in html


def test_amount_at_stake_by_age_is_in_each_currencys_major_units(page, warehouse):
    _, rows = _latest_snapshot(warehouse, AS_OF)
    stored: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for _, currency, bucket, n, major in rows:
        count, amount = stored.get((currency.upper(), bucket), (0, Decimal(0)))
        stored[(currency.upper(), bucket)] = (count + n, amount + major)
    table = parse(page).table("discrepancies", "Currency")[1:]
    shown = {
        (currency, bucket): (int(n.replace(",", "")), Decimal(amount.replace(",", "")))
        for currency, bucket, n, amount in table
        if bucket != "all ages"
    }
    assert shown == stored
    # JPY has no minor unit: whole yen, never a decimal point.
    assert all("." not in amount for currency, _, _, amount in table if currency == "JPY")


def test_report_is_self_contained(page):
    html = page.read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"<link\b|<img\b|<iframe\b|@import|\bsrc\s*=", html, re.IGNORECASE)
    assert set(re.findall(r"https?://[^\s\"'<>)]*", html)) <= NAMESPACES
    assert re.findall(r"url\(([^)]*)\)", html) and all(
        u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", html)
    )
    assert html.count("<svg") == 4


def test_run_id_selects_an_older_run(warehouse, runs, tmp_path):
    morning = runs[MORNING[0]]
    out = tmp_path / "morning.html"
    argv = ["--warehouse", f"duckdb:///{warehouse}", "--out", str(out), "--run-id"]
    assert report([*argv, morning["run_id"]]) == 0
    shown = parse(out)
    assert shown.sections["summary"]["data-run-id"] == morning["run_id"]
    assert shown.facts()["Matched"] == f"{morning['matched']:,}"
    assert shown.facts()["Window (UTC)"] == "[2026-11-20 00:00:00Z, 2026-11-20 12:00:00Z)"


def test_unknown_run_id_exits_2_saying_how_to_list_the_ids(warehouse, tmp_path, capsys):
    out = tmp_path / "r.html"
    argv = ["--warehouse", f"duckdb:///{warehouse}", "--out", str(out), "--run-id", "rcn_nope"]
    assert report(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'rcn_nope'" in err and "SELECT run_id" in err
    assert not out.exists()


def test_warehouse_without_recon_runs_exits_2_saying_to_reconcile_first(tmp_path, capsys):
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert report(["--warehouse", f"duckdb:///{empty}", "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "recon_runs" in err and "payrecon reconcile" in err


def test_missing_duckdb_file_exits_2_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "typo.duckdb"
    assert report(["--warehouse", f"duckdb:///{missing}", "--out", str(tmp_path / "r.html")]) == 2
    assert "payrecon reconcile" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_unwritable_out_exits_2(warehouse, tmp_path, capsys, where):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "r.html" if where == "under_a_file" else tmp_path
    assert report(["--warehouse", f"duckdb:///{warehouse}", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err


def test_values_from_the_warehouse_are_html_escaped(tmp_path):
    path = tmp_path / "w.duckdb"
    hostile = "<script>alert(1)</script>"
    with open_warehouse(f"duckdb:///{path}") as warehouse:
        warehouse.load({TABLES["recon_runs"]: _run_rows(run_id=f"rcn_{hostile}", status=hostile)})
    out = tmp_path / "r.html"
    assert report(["--warehouse", f"duckdb:///{path}", "--out", str(out)]) == 0
    html = out.read_text()
    assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert parse(out).facts()["Status"] == hostile


def test_a_failed_run_shows_in_run_health_with_its_error_escaped(warehouse, runs, tmp_path):
    copy = tmp_path / "w.duckdb"
    shutil.copyfile(warehouse, copy)
    start = datetime(2026, 11, 21, tzinfo=UTC)
    error = 'broker <kafka:9092> unreachable: "timed out" & gave up'
    failed = health_row(
        job="reconcile",
        run_id=unplanned_run_id("reconcile", start),
        window=(start, start + timedelta(hours=12)),
        started_at=start + timedelta(hours=12, minutes=3),
        finished_at=start + timedelta(hours=12, minutes=5, seconds=30),
        status="failed",
        exit_code=3,
        error=error,
    )
    with open_warehouse(f"duckdb:///{copy}") as w:
        w.load({TABLES["recon_health"]: failed})
    out = tmp_path / "r.html"
    assert report(["--warehouse", f"duckdb:///{copy}", "--out", str(out), "--as-of", AS_OF]) == 0
    shown = parse(out)
    # The failed run is the latest, but the report is still about the latest recon_runs run.
    assert shown.sections["summary"]["data-run-id"] == runs[AFTERNOON[0]]["run_id"]
    heading, *rows = shown.table("health", "Run id")
    assert [r[0] for r in rows if len(r) > 1] == [
        unplanned_run_id("reconcile", start),
        runs[AFTERNOON[0]]["run_id"],
        runs[MORNING[0]]["run_id"],
    ]
    latest = dict(zip(heading, rows[0], strict=True))
    assert latest["Status"] == "failed"
    assert (latest["Duration"], latest["Freshness"]) == ("2 min 30 s", "5 min 30 s")
    assert latest["Records in"] == latest["Dead letters"] == "—"
    assert rows[1] == [f"exit code 3: {error}"]
    with duckdb.connect(str(copy), read_only=True) as con:
        [stored] = con.execute(
            "SELECT records_in, dead_letters, quarantined, dq_failures, discrepancies "
            "FROM recon_health WHERE run_id = ?",
            [runs[AFTERNOON[0]]["run_id"]],
        ).fetchall()
    afternoon = dict(zip(heading, rows[2], strict=True))
    columns = ["Records in", "Dead letters", "Quarantined", "DQ failures", "Discrepancies"]
    assert [afternoon[c] for c in columns] == [f"{n:,}" for n in stored]
    html = out.read_text()
    assert "<kafka:9092>" not in html
    assert "broker &lt;kafka:9092&gt; unreachable: &quot;timed out&quot; &amp; gave up" in html


def test_run_health_reads_recon_runs_in_a_warehouse_without_recon_health(tmp_path):
    path = tmp_path / "w.duckdb"
    with open_warehouse(f"duckdb:///{path}") as warehouse:
        warehouse.load({TABLES["recon_runs"]: _run_rows()})
    out = tmp_path / "r.html"
    assert report(["--warehouse", f"duckdb:///{path}", "--out", str(out)]) == 0
    shown = parse(out)
    [heading, row] = shown.table("health", "Run id")
    assert dict(zip(heading, row, strict=True))["Duration"] == "1 min 00 s"
    assert "no recon_health table" in out.read_text()


def test_without_an_aging_snapshot_the_page_says_so_instead_of_a_chart(tmp_path):
    path = tmp_path / "w.duckdb"
    with open_warehouse(f"duckdb:///{path}") as warehouse:
        warehouse.load({TABLES["recon_runs"]: _run_rows()})
    out = tmp_path / "r.html"
    argv = ["--warehouse", f"duckdb:///{path}", "--out", str(out), "--as-of", AS_OF]
    assert report(argv) == 0
    html = out.read_text()
    assert "discrepancy_aging has no snapshot on or before 2026-11-25" in html
    assert "Open discrepancies by age (snapshot" not in html


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exited:
        payrecon(["report", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--warehouse", "--run-id", "--out", "--as-of"):
        assert re.search(rf"{flag} \S+\s+\S", out), flag


def test_report_renders_in_headless_chromium(page, runs, tmp_path):
    run = runs[AFTERNOON[0]]
    home = tmp_path / "chromium"
    dom = run_headless(page, home, "--dump-dom")
    shown = Page(dom)
    assert shown.sections["summary"]["data-run-id"] == run["run_id"]
    assert shown.facts()["Matched"] == f"{run['matched']:,}"
    assert shown.facts()["Discrepancies"] == f"{run['discrepancies']:,}"
    assert dom.count("<svg") == 4
    screenshot = tmp_path / "report.png"
    run_headless(page, home, f"--screenshot={screenshot}", "--window-size=1280,2000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _png_size(screenshot) == (1280, 2000)
    _keep_artifact(screenshot, REPO / "test-artifacts" / "report.png")
    assert live_processes_naming(str(home)) == []


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def _keep_artifact(source: Path, target: Path) -> None:
    """Copy a test artifact into the repository, only where git ignores it."""
    if shutil.which("git") is None:
        return
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", str(target.relative_to(REPO))],
        check=False,
    )
    if ignored.returncode == 0:
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, target)


def _run_rows(**overrides) -> pa.Table:
    start = datetime(2026, 11, 20, tzinfo=UTC)
    row = {
        "run_id": "rcn_test",
        "job": "reconcile",
        "window_start": start,
        "window_end": start + timedelta(days=1),
        "started_at": start + timedelta(days=1, minutes=5),
        "finished_at": start + timedelta(days=1, minutes=6),
        "status": "succeeded",
        "stripe_source": "export.csv",
        "offsets": "[]",
        "messages_in": 3,
        "events_out": 3,
        "dead_letters": 0,
        "dead_letters_by_reason": "{}",
        "stripe_rows": 3,
        "matched": 3,
        "pending": 0,
        "discrepancies": 0,
        "discrepancies_by_kind": "{}",
        "totals": "[]",
        "dq_failures": 0,
    } | overrides
    return pa.Table.from_pylist([row], schema=TABLES["recon_runs"].schema)
