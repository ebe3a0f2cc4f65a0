"""``payrecon report``: one HTML file about a reconcile run, for finance and on-call people.

Reads recon_runs, recon_discrepancies, discrepancy_aging, daily_revenue and recon_health
through the warehouse interface and writes a self-contained page (inline CSS, charts as
inline SVG, no script, nothing fetched from the network), so it opens offline:
  - the run: window, status, counts in and out, dead letters by reason, discrepancies by
    kind with the money at stake, data-quality failures, totals per currency;
  - matched vs discrepancies per run, and the run's discrepancies by kind;
  - open discrepancies by age, kind and currency with the money at stake: the latest
    discrepancy_aging snapshot on or before the --as-of day;
  - gross, fees and net per day and currency, in major units (JPY 0 decimals, KWD 3);
  - run health from recon_health, failed runs included: status, error, duration,
    freshness, records in, dead letters, quarantined rows, data-quality failures (from
    recon_runs, without failed runs, in a warehouse older than recon_health).

Exit codes: 0 written; 2 bad usage (unknown run id, no reconcile run in the warehouse,
--out not writable); 3 the warehouse could not be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from pipelines.cli_args import OneLineParser
from pipelines.options import rfc3339
from pipelines.report_charts import (
    discrepancies_chart,
    health_chart,
    revenue_chart,
    runs_chart,
)
from pipelines.report_data import ReportError, load_report_data, recent_runs
from pipelines.report_html import Charts, render_page
from transforms.warehouse import Warehouse, WarehouseError, open_warehouse
from transforms.warehouse.base import redact

PROG = "payrecon report"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--warehouse",
        required=True,
        metavar="URL",
        help="The warehouse `payrecon reconcile` loaded: duckdb:///path.duckdb, "
        "bigquery://project/dataset or snowflake://account/db/schema.",
    )
    parser.add_argument(
        "--run-id",
        dest="run_id",
        default=None,
        metavar="ID",
        help="The recon_runs.run_id to report on (default: the latest run, by window end, "
        "then by finish time).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="The HTML file to write, e.g. report.html (missing folders are created; an "
        "existing file is replaced).",
    )
    parser.add_argument(
        "--as-of",
        dest="as_of",
        type=rfc3339,
        default=None,
        metavar="TIME",
        help="RFC 3339 time whose UTC day picks the discrepancy_aging snapshot shown: the "
        "latest on or before it (default: now).",
    )
    return parser


def build_report(
    warehouse: Warehouse,
    run_id: str | None,
    now: datetime,
    *,
    source: str = "",
    generated_at: datetime | None = None,
) -> str:
    """The report's HTML for ``run_id`` (None: the latest run), as of ``now``.

    Raises ``ReportError`` when the warehouse has no reconcile run or no such run.
    """
    data = load_report_data(warehouse, run_id, now)
    selected = data.run.run_id
    history = recent_runs(data.runs, selected)
    health_history = recent_runs(data.health.runs, selected)
    charts = Charts(
        runs=runs_chart(history, selected),
        discrepancies=discrepancies_chart(data.run, data.aging),
        revenue=revenue_chart(data.revenue),
        health=health_chart(health_history, selected),
    )
    return render_page(
        data,
        charts,
        history=history,
        health_history=health_history,
        source=source,
        generated_at=generated_at or now,
    )


def write_report(html: str, out: Path) -> None:
    """Write ``out`` whole or not at all (a reader never sees half a page)."""
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with partial.open("x", encoding="utf-8") as f:
                f.write(html)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot write the report there: {_reason(exc)}") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    now = datetime.now(UTC)
    try:
        _check_out(args.out)
        with _open(args.warehouse) as warehouse:
            html = build_report(
                warehouse,
                args.run_id,
                args.as_of or now,
                source=redact(args.warehouse),
                generated_at=now,
            )
        write_report(html, args.out)
    except ReportError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except WarehouseError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 3
    print(f"report written to {args.out.resolve()}")
    return 0


def _check_out(out: Path) -> None:
    """Fail before querying the warehouse when the report could not be written anyway."""
    if out.is_dir():
        raise ReportError(f"--out {out} is a directory; give a file such as {out / 'report.html'}")
    folder = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ReportError(f"--out {out}: {folder} is not a writable directory")


def _open(url: str) -> Warehouse:
    parts = urlparse(url)
    # DuckDB creates a missing file on open: a mistyped path would leave an empty one behind.
    path = parts.netloc + parts.path
    if parts.scheme == "duckdb" and path and path != ":memory:" and not Path(path).exists():
        raise ReportError(
            f"--warehouse {url}: no such DuckDB file; run `payrecon reconcile --warehouse "
            f"{url} ...` first"
        )
    try:
        return open_warehouse(url)
    except ValueError as exc:
        raise ReportError(str(exc)) from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
