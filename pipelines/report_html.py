"""The page of ``payrecon report``: one self-contained HTML file.

Inline CSS and inline SVG, no script and no external resource (fonts, styles, images), so
the file opens offline, in a mail attachment or a ticket. Every value that comes from the
warehouse is HTML-escaped here; money is shown in major units, converted exactly with each
currency's exponent (``Decimal``, never floats).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import NamedTuple

from pipelines.report_data import (
    Aging,
    AtStake,
    CurrencyTotal,
    DailyRevenue,
    Health,
    HealthRun,
    ReportData,
    Run,
    major_units,
)
from pipelines.report_page import CSS, PAGE
from schemas.discrepancy import KINDS


class Charts(NamedTuple):
    """Inline ``<svg>`` elements (None: no data to chart)."""

    runs: str
    discrepancies: str
    revenue: str | None
    health: str | None


class Safe(str):
    """Markup built here, already escaped: inserted as is."""


def render_page(
    data: ReportData,
    charts: Charts,
    *,
    history: Sequence[Run],
    health_history: Sequence[HealthRun],
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
                _aging_note(data.aging, data.as_of),
                _aging_tables(data.aging),
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
                _health_note(data.health, len(health_history)),
                _health_table(health_history, run),
            ),
        ]
    )
    return PAGE.format(title=escape(f"payrecon report {run.run_id}"), css=CSS, body=body)


def _header(run: Run, source: str, generated_at: datetime, as_of: datetime) -> str:
    return (
        f'<header><h1>Reconciliation report</h1><p class="meta">Run <code>{escape(run.run_id)}'
        f"</code> · window {escape(_window(run))} · {_status(run.status)}<br>"
        f"Warehouse {escape(source)} · generated {_ts(generated_at)} · as of {_ts(as_of)}"
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


def _aging_note(aging: Aging | None, as_of: datetime) -> str:
    day = f"{as_of:%Y-%m-%d}"
    if aging is None:
        return (
            f"Open discrepancies by age: discrepancy_aging has no snapshot on or before {day}, "
            "so none is shown (each payrecon reconcile run writes the snapshot of its --as-of "
            "day)."
        )
    snapshot = f"{aging.as_of_date:%Y-%m-%d}"
    which = "the report's as-of day" if snapshot == day else f"the latest on or before {day}"
    return (
        f"Open discrepancies by age: the discrepancy_aging snapshot of {snapshot} ({which}). "
        "A discrepancy is open while the latest run of its window still finds it; its age "
        "runs from its window's start to the snapshot. Amount at stake: the difference for "
        "an amount mismatch, else the larger side's amount, in major units."
    )


def _aging_tables(aging: Aging | None) -> str:
    if aging is None:
        return ""
    if not aging.rows:
        return f"<p>No discrepancy was open on {aging.as_of_date:%Y-%m-%d}.</p>"
    return (
        "<h3>Open discrepancies by kind and age</h3>"
        + _age_table(aging)
        + "<h3>Amount at stake by currency and age</h3>"
        + _at_stake_table(aging)
    )


def _age_table(aging: Aging) -> str:
    by_age = aging.by_age()
    kinds = [k for k in KINDS if any(k in b for b in by_age.values())]
    kinds += sorted({k for b in by_age.values() for k in b} - set(kinds))

    def row(label: str, counts: list[int]) -> list[str]:
        return [label, *map(_n, counts), _n(sum(counts))]

    rows = [row(k, [b.get(k, 0) for b in by_age.values()]) for k in kinds]
    rows.append(row("total", [sum(b.values()) for b in by_age.values()]))
    numeric = set(range(1, len(by_age) + 2))
    return _table(["Kind", *by_age, "Total"], rows, numeric=numeric, last_is_total=True)


def _at_stake_table(aging: Aging) -> str:
    """Per currency and age bucket: open discrepancies and their money, then all ages."""
    rows: list[list[object]] = []
    for currency in sorted({r.currency for r in aging.rows}):
        buckets: dict[str, tuple[int, int]] = {}  # in age order, as the rows are
        for r in aging.rows:
            if r.currency == currency:
                n, amount = buckets.get(r.age_bucket, (0, 0))
                buckets[r.age_bucket] = (n + r.open_discrepancies, amount + r.amount_at_stake)
        if len(buckets) > 1:
            counts, amounts = zip(*buckets.values(), strict=True)
            buckets[Safe("<em>all ages</em>")] = (sum(counts), sum(amounts))
        rows += [
            [currency.upper(), label, _n(n), _money(amount, currency)]
            for label, (n, amount) in buckets.items()
        ]
    head = ["Currency", "Age", "Open discrepancies", "Amount at stake"]
    return _table(head, rows, numeric={2, 3})


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


def _health_note(health: Health, shown: int) -> str:
    if health.from_recon_runs:
        return (
            "This warehouse has no recon_health table (it predates it), so these runs come "
            "from recon_runs, which has no failed run: duration is finished_at − started_at, "
            "freshness finished_at − window_end; — marks what recon_runs does not record."
        )
    return (
        f"From recon_health: the last {shown} reconcile run(s), failed ones included, with "
        "their error. Duration is how long a run took; freshness, how long after its window "
        "closed its results landed. — marks a count a failed run never got to."
    )


def _health_table(runs: Sequence[HealthRun], selected: Run) -> str:
    """Latest run first; a failed run's error on a row of its own, below the run's.
    (No records out: it is records in less dead letters and quarantined.)"""
    if not runs:
        return "<p>recon_health holds no reconcile run.</p>"
    head = ["Run id", "Window (UTC)", "Status", "Duration", "Freshness", "Records in"]
    head += ["Dead letters", "Quarantined", "DQ failures", "Discrepancies"]
    latest_first = list(reversed(runs))
    rows = [
        [
            _run_id(r.run_id),
            _window_cell(r),
            _status(r.status),
            _duration(r.duration),
            _duration(r.freshness),
            *map(_count, (r.records_in, r.dead_letters, r.quarantined)),
            *map(_count, (r.dq_failures, r.discrepancies)),
        ]
        for r in latest_first
    ]
    errors = {
        i: Safe(f'<span class="error">exit code {_count(r.exit_code)}: {escape(r.error)}</span>')
        for i, r in enumerate(latest_first)
        if r.error
    }
    marked = {i for i, r in enumerate(latest_first) if r.run_id == selected.run_id}
    table = _table(head, rows, numeric=set(range(3, 10)), marked=marked, details=errors)
    return f'<div class="scroll compact">{table}</div>'


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
    details: Mapping[int, Safe] | None = None,
) -> str:
    """A table; cells in ``numeric`` columns are right-aligned, rows in ``marked`` highlighted,
    and ``details[n]`` is a row across the whole table below row ``n``."""

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
    for n, detail in sorted((details or {}).items(), reverse=True):
        body.insert(n + 1, f'<tr class="detail"><td colspan="{len(head)}">{detail}</td></tr>')
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


def _count(count: int | None) -> str:
    return "—" if count is None else _n(count)


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


def _window(run: Run | HealthRun) -> str:
    return f"[{_ts(run.window_start)}, {_ts(run.window_end)})"


def _run_id(run_id: str) -> Safe:
    """A run id that may break after its underscores, where a narrow table needs it to."""
    return Safe(f"<code>{'_<wbr>'.join(escape(part) for part in run_id.split('_'))}</code>")


def _window_cell(run: HealthRun) -> Safe:
    """The window, broken (if at all) between its start and its end."""
    start, end = escape(f"[{_ts(run.window_start)},"), escape(f"{_ts(run.window_end)})")
    return Safe(f'<span class="nowrap">{start}</span> <span class="nowrap">{end}</span>')


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds < 0:
        return "−" + _duration(-span)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours:02d} h"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
