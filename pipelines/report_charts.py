"""The charts of ``payrecon report``, drawn with matplotlib as SVG text to inline in the HTML.

Text stays text (``svg.fonttype: none``): the numbers on the charts are readable, selectable
and searchable in the page, and the SVG needs no embedded font. Each chart scopes its element
ids with its own prefix so that several SVGs can live in one HTML document. No pyplot: each
chart is a standalone ``Figure``, so nothing global (backends, open figures) is touched.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html import escape
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from pipelines.report_data import Aging, DailyRevenue, HealthRun, Run, major_units
from schemas.discrepancy import KINDS

# (typed loosely: matplotlib types rc keys as literals)
_STYLE: dict[Any, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
# Without these the SVG carries a creation date and tool name (not reproducible).
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}

MATCHED, PENDING, DISCREPANT = "#2e7d32", "#9e9e9e", "#c62828"
STATUS_COLORS = {"succeeded": "#2e7d32", "discrepancies_over_threshold": "#ef6c00"}
FAILED = "#c62828"
KIND_COLORS = dict(
    zip(
        KINDS,
        ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"),
        strict=True,
    )
)
MONEY_COLORS = {"gross": "#1f77b4", "fees": "#ff7f0e", "net": "#2ca02c"}

# Charts per run leave room for this many runs, so that a few bars are not huge.
MIN_SLOTS = 8

# Legends sit right of the axes, never over a bar.
_OUTSIDE: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}

# Beyond this many bars, values are not written on them (they would overlap).
LABELLED_BARS = 16


def runs_chart(runs: Sequence[Run], selected: str) -> str:
    """Matched and pending ledger events, and discrepancies, per run (one bar per window)."""
    with _style("runs"):
        fig = Figure(figsize=(10, 4.4), layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        x = range(len(runs))
        matched = [r.matched for r in runs]
        bars = top.bar(x, matched, color=MATCHED, label="matched")
        top.bar(x, [r.pending for r in runs], bottom=matched, color=PENDING, label="pending")
        _label_bars(top, bars, matched, label_type="center", color="white")
        top.set_title("Ledger events matched and pending, per run")
        top.legend(**_OUTSIDE)
        found = [r.discrepancies for r in runs]
        _label_bars(bottom, bottom.bar(x, found, color=DISCREPANT), found)
        bottom.set_title("Discrepancies per run")
        for ax in (top, bottom):
            _counts(ax.yaxis)
            ax.margins(y=0.15)
        _run_ticks(bottom, runs, selected)
        return _svg(fig, "runs", "Matched, pending and discrepancies per run")


def discrepancies_chart(run: Run, aging: Aging | None) -> str:
    """The run's discrepancies by kind and, from the aging snapshot if there is one, the
    open discrepancies by age and kind."""
    with _style("discrepancies"):
        fig = Figure(figsize=(10 if aging else 5.5, 3.8), layout="constrained")
        if aging is None:
            left = fig.subplots()
        else:
            left, right = fig.subplots(1, 2, width_ratios=[1, 1.15])
            _aging_panel(right, aging)
        kinds = list(reversed(KINDS))
        counts = [run.discrepancies_by_kind.get(k, 0) for k in kinds]
        bars = left.barh(kinds, counts, color=[KIND_COLORS[k] for k in kinds])
        left.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3)
        left.set_title("This run's discrepancies by kind")
        left.margins(x=0.15)
        _counts(left.xaxis)
        return _svg(fig, "discrepancies", "Discrepancies by kind and by age")


def _aging_panel(ax: Axes, aging: Aging) -> None:
    by_age = aging.by_age()
    labels = list(by_age)
    bottom = [0] * len(labels)
    kinds = [*KINDS, *sorted({k for b in by_age.values() for k in b} - set(KINDS))]
    for kind in kinds:
        heights = [by_age[label].get(kind, 0) for label in labels]
        if any(heights):
            color = KIND_COLORS.get(kind, PENDING)
            ax.bar(labels, heights, bottom=bottom, color=color, label=_text(kind))
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    totals = ax.bar(labels, [0] * len(labels), bottom=bottom, color="none")
    ax.bar_label(totals, labels=[f"{t:,}" for t in bottom], padding=2)
    ax.set_title(f"Open discrepancies by age (snapshot {aging.as_of_date:%Y-%m-%d})")
    ax.set_xlabel("age of the discrepancy's window")
    ax.set_ylim(0, max(bottom, default=0) * 1.2 or 1)
    _counts(ax.yaxis)
    if any(bottom):
        ax.legend(**_OUTSIDE, fontsize=8)


def revenue_chart(revenue: Sequence[DailyRevenue]) -> str | None:
    """Gross charges, fees and net per day, one panel per currency (major units)."""
    currencies = sorted({r.currency for r in revenue})
    if not currencies:
        return None
    with _style("revenue"):
        cols = min(3, len(currencies))
        rows = math.ceil(len(currencies) / cols)
        fig = Figure(figsize=(10, 0.6 + 2.5 * rows), layout="constrained")
        axes = list(fig.subplots(rows, cols, squeeze=False).flat)
        for currency, ax in zip(currencies, axes, strict=False):
            _revenue_panel(ax, currency, [r for r in revenue if r.currency == currency])
        for ax in axes[len(currencies) :]:
            ax.set_visible(False)
        handles = [Patch(color=c, label=n) for n, c in MONEY_COLORS.items()]
        fig.legend(handles=handles, loc="outside upper right", ncols=3)
        fig.suptitle("Money per day and currency (major units)", x=0.01, ha="left", weight="bold")
        return _svg(fig, "revenue", "Gross, fees and net per day and currency")


def health_chart(runs: Sequence[HealthRun], selected: str) -> str | None:
    """Per run, failed ones included: how long it took (coloured by status), how long after
    its window closed it finished, its dead letters and DQ failures."""
    if not runs:
        return None
    with _style("health"):
        fig = Figure(figsize=(10, 5.8), layout="constrained")
        top, middle, bottom = fig.subplots(3, 1, sharex=True, height_ratios=[1.2, 1, 1])
        x = list(range(len(runs)))
        colors = [STATUS_COLORS.get(r.status, FAILED) for r in runs]
        seconds = [r.duration.total_seconds() for r in runs]
        bars = top.bar(x, seconds, color=colors)
        if len(runs) <= LABELLED_BARS:
            top.bar_label(bars, labels=[f"{s:,.1f} s" for s in seconds], padding=2)
        statuses = dict.fromkeys(r.status for r in runs)
        top.legend(
            handles=[Patch(color=STATUS_COLORS.get(s, FAILED), label=_text(s)) for s in statuses],
            **_OUTSIDE,
        )
        top.set_title("Run duration (seconds), coloured by status")
        top.margins(y=0.25)
        _freshness_panel(middle, runs, colors)
        dead = [r.dead_letters for r in runs]
        failed = [r.dq_failures for r in runs]
        w = 0.4
        b1 = bottom.bar(
            [i - w / 2 for i in x], _zeros(dead), w, color="#6d4c41", label="dead letters"
        )
        b2 = bottom.bar(
            [i + w / 2 for i in x], _zeros(failed), w, color=FAILED, label="DQ failures"
        )
        _label_bars(bottom, b1, dead)
        _label_bars(bottom, b2, failed)
        bottom.set_title("Dead letters and failed data-quality expectations, per run")
        bottom.legend(**_OUTSIDE)
        bottom.margins(y=0.3)
        _counts(bottom.yaxis)
        _run_ticks(bottom, runs, selected)
        return _svg(fig, "health", "Run duration, status, freshness, dead letters and DQ failures")


# Freshness is charted in the largest of these units that its largest value is twice or more.
_SPANS = (("days", 86_400), ("hours", 3_600), ("minutes", 60), ("seconds", 1))


def _freshness_panel(ax: Axes, runs: Sequence[HealthRun], colors: list[str]) -> None:
    seconds = [r.freshness.total_seconds() for r in runs]
    largest = max(abs(s) for s in seconds)
    unit, size = next((u, n) for u, n in _SPANS if largest >= 2 * n or n == 1)
    values = [s / size for s in seconds]
    bars = ax.bar(range(len(runs)), values, color=colors)
    if len(runs) <= LABELLED_BARS:
        ax.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=2)
    ax.axhline(0, color="#555", linewidth=0.6)
    ax.set_title(f"Freshness: results landed this long after the window closed ({unit})")
    ax.margins(y=0.3)


def _revenue_panel(ax: Axes, currency: str, rows: list[DailyRevenue]) -> None:
    x = range(len(rows))
    w = 0.27
    for i, (name, color) in enumerate(MONEY_COLORS.items()):
        minor = [getattr(r, name) for r in rows]
        major = [major_units(m, currency) for m in minor]
        values = [
            float(v) if v is not None else float(m) for v, m in zip(major, minor, strict=True)
        ]
        bars = ax.bar([p + (i - 1) * w for p in x], values, w, color=color, label=name)
        if len(rows) == 1:
            ax.bar_label(
                bars, labels=[f"{v:,}" if v is not None else "?" for v in major], fontsize=7
            )
    ax.set_title(_text(currency.upper()))
    ax.set_xticks(list(x), _thinned([f"{r.day:%m-%d}" for r in rows]))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.margins(y=0.15)


def _counts(axis: Axis) -> None:
    """Whole-number ticks with thousands separators, for an axis of counts."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _label_bars(ax: Axes, bars, values: Sequence[int | None], **kwargs) -> None:
    """Each bar's value (— for a count the run never got to)."""
    if len(values) <= LABELLED_BARS:
        labels = ["—" if v is None else f"{v:,}" for v in values]
        ax.bar_label(bars, labels=labels, padding=2, **kwargs)


def _zeros(values: Sequence[int | None]) -> list[int]:
    return [v or 0 for v in values]


def _run_ticks(ax: Axes, runs: Sequence[Run | HealthRun], selected: str) -> None:
    """One tick per run, named by its window start (UTC); the selected run's in bold."""
    labels = [
        r.window_start.strftime("%Y-%m-%d\n%H:%MZ")
        + ("\n(this run)" if r.run_id == selected else "")
        for r in runs
    ]
    ax.set_xticks(range(len(runs)), _thinned(labels, keep=[r.run_id == selected for r in runs]))
    for tick, run in zip(ax.get_xticklabels(), runs, strict=True):
        if run.run_id == selected:
            tick.set_fontweight("bold")
    ax.set_xlabel("window start (UTC)")
    # A few runs keep a bar's width instead of filling the axes.
    ax.set_xlim(-0.6, max(len(runs), MIN_SLOTS) - 0.4)


def _thinned(labels: list[str], keep: list[bool] | None = None, most: int = 12) -> list[str]:
    """Every n-th label (and the ones to ``keep``), blank the rest, so they do not overlap."""
    step = math.ceil(len(labels) / most)
    keep = keep or [False] * len(labels)
    return [
        t if i % step == 0 or k else "" for i, (t, k) in enumerate(zip(labels, keep, strict=True))
    ]


@contextmanager
def _style(name: str) -> Iterator[None]:
    # A salt per chart makes the hashed ids (clip paths, markers) reproducible.
    with matplotlib.rc_context(_STYLE | {"svg.hashsalt": name}):
        yield


def _svg(fig: Figure, prefix: str, label: str) -> str:
    """The figure as an ``<svg>`` element for inline HTML, its ids prefixed."""
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata=_NO_METADATA)
    svg = out.getvalue()
    svg = svg[svg.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)


def _text(text: str) -> str:
    """Data shown as chart text: a ``$`` would otherwise start matplotlib's math mode."""
    return text.replace("$", r"\$")
