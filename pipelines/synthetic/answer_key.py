"""``answer_key.json``: what a correct reconciliation of the generated day must find.

A reconcile test compares its findings with ``discrepancies`` exactly (see ``matching``),
its dead letters with ``malformed``, and its counts and sums with ``totals``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

from pipelines.synthetic.clock import DAY_S, Window, rfc3339_ms
from pipelines.synthetic.writers import LEDGER_FILE, STRIPE_COLUMNS, STRIPE_FILE, ReportTime
from schemas.discrepancy import KINDS

FORMAT = "payrecon.synthetic.answer_key"
VERSION = 1
EXPORT_MARGIN_S = 60  # the Stripe export covers the day plus a minute on each side
AS_OF_DELAY_S = 2 * DAY_S + 6 * 3600  # the export was run at 06:00 two days later

MONEY_MOVING = {
    "charge.succeeded": "charge",
    "refund.succeeded": "refund",
    "dispute.created": "dispute",
    "dispute.funds_reinstated": "dispute_reversal",
}

MATCHING = {
    "identity": "an expected discrepancy is identified by (kind, stripe_object_id); "
    "duplicate_charge also by (kind, order_id), and lists every charge in stripe_object_ids",
    "amounts": "integer minor units, magnitudes; amount_delta = stripe_amount - ledger_amount, "
    "null when a side is missing",
    "currency": "the ledger's currency, else Stripe's; both are in ledger_currency and "
    "stripe_currency",
    "duplicate_charge": "distinct succeeded charges (ch_ ids) per order: two ledger events "
    "naming one charge are a duplicate_in_ledger, not a duplicate_charge",
    "money_moving_event_types": MONEY_MOVING,
    "lateness": "lateness_edges pair a ledger event in the window with a balance transaction "
    "created just outside it; with a margin >= max_edge_gap_seconds they match and are not "
    "discrepancies (a balance transaction is reported in the window of its own created time)",
    "pending": "rows whose available_on_utc is after report_as_of are pending, not discrepancies",
    "malformed": "1-based line numbers of ledger.jsonl; each line has exactly one defect; "
    "decode with max_payload_bytes",
}


def as_of_s(window: Window) -> int:
    return window.end_s + AS_OF_DELAY_S


def build_key(
    *,
    day: date,
    seed: int,
    parameters: dict,
    discrepancies: list[dict],
    malformed: list[dict],
    edges: list[dict],
    ledger: dict,
    stripe: dict,
) -> dict:
    window = Window(day)
    report_time = ReportTime()
    lateness = [
        {
            **{k: v for k, v in e.items() if k != "created"},
            "created_utc": report_time(e["created"]),
            "side": "before_window" if e["created"] < window.start_s else "after_window",
        }
        for e in edges
    ]
    order = {kind: i for i, kind in enumerate(KINDS)}
    discrepancies = sorted(discrepancies, key=lambda d: (order[d["kind"]], d["stripe_object_id"]))
    return {
        "format": FORMAT,
        "version": VERSION,
        "date": day.isoformat(),
        "seed": seed,
        "parameters": parameters,
        "window": {"start": rfc3339_ms(window.start_ms), "end": rfc3339_ms(window.end_ms)},
        "report_as_of": rfc3339_ms(as_of_s(window) * 1000),
        "files": {"ledger": LEDGER_FILE, "stripe": STRIPE_FILE},
        "stripe_report": {
            "report_type": "balance_change_from_activity.itemized.3",
            "interval_start": rfc3339_ms((window.start_s - EXPORT_MARGIN_S) * 1000),
            "interval_end": rfc3339_ms((window.end_s + EXPORT_MARGIN_S) * 1000),
            "columns": list(STRIPE_COLUMNS),
        },
        "matching": MATCHING,
        "discrepancies": discrepancies,
        "malformed": malformed,
        "lateness_edges": lateness,
        "max_edge_gap_seconds": max((e["gap_seconds"] for e in edges), default=0),
        "totals": {
            "ledger": ledger,
            "stripe": stripe,
            "discrepancies": {
                "total": len(discrepancies),
                "by_kind": _count_by_kind(discrepancies),
            },
            "malformed_by_reason": dict(sorted(Counter(m["reason"] for m in malformed).items())),
        },
    }


def _count_by_kind(discrepancies: list[dict]) -> dict[str, int]:
    counts = Counter(d["kind"] for d in discrepancies)
    return {kind: counts[kind] for kind in KINDS}


def write_key(path: Path, key: dict) -> None:
    path.write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
