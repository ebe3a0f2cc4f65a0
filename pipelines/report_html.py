"""The page of ``payrecon report``: one self-contained HTML file.

Inline CSS and inline SVG, no script and no external resource (fonts, styles, images), so
the file opens offline, in a mail attachment or a ticket. Every value that comes from the
warehouse is HTML-escaped here; money is shown in major units, converted exactly with each
currency's exponent (``Decimal``, never floats).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import NamedTuple

from pipelines.report_data import (
    AtStake,
    CurrencyTotal,
    DailyRevenue,
    ReportData,
    Run,
    major_units,
    open_by_age,
)
from schemas.discrepancy import KINDS


class Charts(NamedTuple):
    """Inline ``<svg>`` elements (``revenue`` is None without daily_revenue rows)."""

    runs: str
    discrepancies: str
    revenue: str | None
    health: str


class Safe(str):
    """Markup built here, already escaped: inserted as is."""


def render_page(
    data: ReportData,
    charts: Charts,
    *,
    history: Sequence[Run],
    source: str,
    generated_at: datetime,
) -> str:
    run = data.run
    body = "\n".join(
        [
            _header(run, source, generated_at, data.as_of),
            _summary(run, data.at_stake),
            _section(
                "matching",
                "Matched vs discrepancies over time",
                charts.runs,
                f"The last {len(history)} run(s), one bar per window; pending items are not "
                "yet settled at the run's as-of time and are not discrepancies.",
            ),
            _section(
                "discrepancies",
                "Discrepancies by kind and by age",
                charts.discrepancies,
                "Age is the time since a discrepancy was detected, as of "
                f"{_ts(data.as_of)}; every discrepancy in the warehouse counts as open.",
                _age_table(data),
            ),
            _section(
                "revenue",
                "Revenue, fees and net per currency",
                charts.revenue,
                "From daily_revenue (Stripe balance transactions by UTC day), major units. "
                "The table shows the days of this run's window.",
                _revenue_table(run, data.revenue),
            ),
            _section(
                "health",
                "Recon health",
                charts.health,
                "Duration is finished_at − started_at of each run.",
                _history_table(history, run),
            ),
        ]
    )
    return _PAGE.format(title=escape(f"payrecon report {run.run_id}"), css=_CSS, body=body)


def _header(run: Run, source: str, generated_at: datetime, as_of: datetime) -> str:
    return (
        f'<header><h1>Reconciliation report</h1><p class="meta">Run <code>{escape(run.run_id)}'
        f"</code> · window {escape(_window(run))} · {_status(run.status)}<br>"
        f"Warehouse {escape(source)} · generated {_ts(generated_at)} · ages as of {_ts(as_of)}"
        "</p></header>"
    )


def _summary(run: Run, at_stake: Sequence[AtStake]) -> str:
    facts = [
        ("Run id", Safe(f"<code>{escape(run.run_id)}</code>")),
        ("Window (UTC)", _window(run)),
        ("Status", _status(run.status)),
        ("Started", _ts(run.started_at)),
        ("Finished", _ts(run.finished_at)),
        ("Duration", _duration(run.duration)),
        ("Stripe source", run.stripe_source),
        ("Messages in", _n(run.messages_in)),
        ("Ledger events out", _n(run.events_out)),
        ("Dead letters", _n(run.dead_letters)),
        ("Stripe rows", _n(run.stripe_rows)),
        ("Matched", _n(run.matched)),
        ("Pending", _n(run.pending)),
        ("Discrepancies", _n(run.discrepancies)),
        ("Data-quality failures", _n(run.dq_failures)),
    ]
    rows = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td>{_cell(v)}</td></tr>' for k, v in facts
    )
    reasons = sorted(run.dead_letters_by_reason.items())
    return (
        f'<section id="summary" data-run-id="{escape(run.run_id)}"><h2>This run</h2>'
        f'<div class="cols"><table class="kv">{rows}</table><div>'
        "<h3>Dead letters by reason</h3>"
        + (
            _table(["Reason", "Messages"], [(r, _n(n)) for r, n in reasons], numeric={1})
            if reasons
            else "<p>None.</p>"
        )
        + "<h3>Discrepancies by kind</h3>"
        + _kinds_table(run, at_stake)
        + '<p class="note">Amount at stake: the difference for an amount mismatch, else the '
        "larger side's amount, in major units.</p></div></div>"
        "<h3>Totals per currency (major units)</h3>" + _totals_table(run.totals) + "</section>"
    )


def _kinds_table(run: Run, at_stake: Sequence[AtStake]) -> str:
    kinds = list(KINDS) + sorted(set(run.discrepancies_by_kind) - set(KINDS))
    rows = []
    for kind in kinds:
        money = [_money_with_code(a.amount, a.currency) for a in at_stake if a.kind == kind]
        rows.append((kind, _n(run.discrepancies_by_kind.get(kind, 0)), ", ".join(money) or "—"))
    rows.append(("total", _n(run.discrepancies), ""))
    return _table(["Kind", "Count", "Amount at stake"], rows, numeric={1, 2}, last_is_total=True)


def _totals_table(totals: Sequence[CurrencyTotal]) -> str:
    if not totals:
        return "<p>No money moved in this window.</p>"
    head = ["Currency", "Side", "Rows", "Charges", "Refunds", "Disputes", "Other", "Gross"]
    head += ["Fee", "Net"]
    rows = []
    for currency in sorted({t.currency for t in totals}):
        sides = {t.side: t for t in totals if t.currency == currency}
        for side in sorted(sides):
            t = sides[side]
            money = [t.charges, t.refunds, t.disputes, t.other, t.gross, t.fee, t.net]
            rows.append([currency.upper(), side, _n(t.rows)] + [_money(m, currency) for m in money])
        if {"ledger", "stripe"} <= sides.keys():
            led, stp = sides["ledger"], sides["stripe"]
            diff = [stp.charges - led.charges, stp.refunds - led.refunds]
            diff += [stp.disputes - led.disputes, stp.other - led.other, stp.gross - led.gross]
            rows.append(
                [currency.upper(), Safe("<em>Stripe − ledger</em>"), _n(stp.rows - led.rows)]
                + [_money(m, currency) for m in diff]
                + ["", ""]
            )
    return _table(head, rows, numeric=set(range(2, 10)))


def _age_table(data: ReportData) -> str:
    by_age = open_by_age(data.open_discrepancies, data.as_of)
    kinds = [k for k in KINDS if any(k in b for b in by_age.values())]
    kinds += sorted({k for b in by_age.values() for k in b} - set(kinds))

    def row(label: str, counts: list[int]) -> list[str]:
        return [label, *map(_n, counts), _n(sum(counts))]

    rows = [row(k, [b.get(k, 0) for b in by_age.values()]) for k in kinds]
    rows.append(row("total", [sum(b.values()) for b in by_age.values()]))
    numeric = set(range(1, len(by_age) + 2))
    return _table(["Kind", *by_age, "Total"], rows, numeric=numeric, last_is_total=True)


def _revenue_table(run: Run, revenue: Sequence[DailyRevenue]) -> str:
    first, last = run.window_start.date(), (run.window_end - timedelta(microseconds=1)).date()
    days = [r for r in revenue if first <= r.day <= last]
    if not days:
        return "<p>No daily_revenue rows for this run's days.</p>"
    head = ["Day", "Currency", "Transactions", "Gross charges", "Refunds", "Disputes", "Fees"]
    rows = [
        [r.day.isoformat(), r.currency.upper(), _n(r.transactions)]
        + [_money(m, r.currency) for m in (r.gross, r.refunds, r.disputes, r.fees, r.net)]
        for r in days
    ]
    return _table([*head, "Net"], rows, numeric=set(range(2, 8)))


def _history_table(history: Sequence[Run], selected: Run) -> str:
    head = ["Run id", "Window (UTC)", "Status", "Duration", "Messages in", "Dead letters"]
    head += ["DQ failures", "Matched", "Discrepancies"]
    rows = [
        [
            Safe(f"<code>{escape(r.run_id)}</code>"),
            _window(r),
            _status(r.status),
            _duration(r.duration),
            _n(r.messages_in),
            _n(r.dead_letters),
            _n(r.dq_failures),
            _n(r.matched),
            _n(r.discrepancies),
        ]
        for r in reversed(history)
    ]
    marked = {i for i, r in enumerate(reversed(history)) if r.run_id == selected.run_id}
    return _table(head, rows, numeric=set(range(3, 9)), marked=marked)


def _section(anchor: str, title: str, chart: str | None, note: str, table: str = "") -> str:
    figure = f'<figure class="chart">{chart}</figure>' if chart else "<p>No data to chart.</p>"
    return (
        f'<section id="{anchor}"><h2>{escape(title)}</h2>{figure}'
        f'<p class="note">{escape(note)}</p>{table}</section>'
    )


def _table(
    head: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Collection[int] = (),
    marked: Collection[int] = (),
    last_is_total: bool = False,
) -> str:
    """A table; cells in ``numeric`` columns are right-aligned, rows in ``marked`` highlighted."""

    def cells(row: Sequence[object], tag: str) -> str:
        return "".join(
            f'<{tag} class="num">{_cell(v)}</{tag}>'
            if i in numeric
            else f"<{tag}>{_cell(v)}</{tag}>"
            for i, v in enumerate(row)
        )

    body = [
        ('<tr class="selected">' if n in marked else "<tr>") + cells(row, "td") + "</tr>"
        for n, row in enumerate(rows)
    ]
    if last_is_total and body:
        body[-1] = body[-1].replace("<tr>", '<tr class="total">', 1)
    return (
        f"<table><thead><tr>{cells(head, 'th')}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _cell(value: object) -> str:
    return value if isinstance(value, Safe) else escape(str(value))


def _status(status: str) -> Safe:
    kind = "ok" if status == "succeeded" else "bad"
    return Safe(f'<span class="status {kind}">{escape(status)}</span>')


def _n(count: int) -> str:
    return f"{count:,}"


def _money(amount: int | None, currency: str) -> str:
    if amount is None:
        return "—"
    major = major_units(amount, currency)
    return f"{amount:,} (minor units)" if major is None else f"{major:,}"


def _money_with_code(amount: int, currency: str | None) -> str:
    if currency is None:
        return f"{amount:,} (no currency)"
    return f"{_money(amount, currency)} {currency.upper()}"


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _window(run: Run) -> str:
    return f"[{_ts(run.window_start)}, {_ts(run.window_end)})"


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial,
  sans-serif; color: #1d1d1f; margin: 2rem auto; max-width: 1100px; padding: 0 1rem;
  line-height: 1.4; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem;
  margin-top: 2.2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
.meta, .note { color: #555; font-size: .9rem; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: .9em; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e5e5e5; text-align: left;
  vertical-align: top; }
thead th { background: #f5f5f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { font-weight: normal; color: #555; }
table.kv { max-width: 36rem; }
table.kv td { font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
tr.total td { font-weight: bold; border-top: 2px solid #ccc; }
tr.selected td { background: #fff8e1; }
.status { padding: .05rem .45rem; border-radius: .6rem; font-size: .85rem; }
.status.ok { background: #e8f5e9; color: #1b5e20; }
.status.bad { background: #ffebee; color: #b71c1c; }
.cols { display: flex; gap: 2.5rem; flex-wrap: wrap; align-items: flex-start; }
.scroll { overflow-x: auto; }
figure.chart { margin: .5rem 0; }
figure.chart svg { max-width: 100%; height: auto; }
@media print { body { margin: 0; max-width: none; } section { break-inside: avoid; } }
"""
