"""``payrecon report``: a self-contained HTML page showing a real reconcile run's numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from pipelines.cli import main as payrecon
from pipelines.reconcile import main as reconcile
from pipelines.report import main as report
from pipelines.report_data import AGE_BUCKETS, age_bucket
from schemas.tables import TABLES
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


def test_open_discrepancies_are_bucketed_by_age(page, warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        [(count, detected_at)] = con.execute(
            "SELECT count(*), max(detected_at) FROM recon_discrepancies"
        ).fetchall()
    bucket = age_bucket(datetime.fromisoformat(AS_OF) - detected_at)
    rows = parse(page).table("discrepancies", "Kind")
    heading, total = rows[0], rows[-1]
    assert total[0] == "total"
    assert total[heading.index(bucket)] == total[-1] == f"{count:,}"


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


def test_age_buckets():
    assert [label for label, _ in AGE_BUCKETS] == [
        age_bucket(timedelta(hours=h)) for h in (5, 30, 100, 200, 24 * 31)
    ]
    assert age_bucket(timedelta(hours=-1)) == AGE_BUCKETS[0][0]


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
