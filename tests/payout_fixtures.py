"""Stripe payout report files built from the official payout and charge objects."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from pipelines.synthetic.records import major_units
from schemas.currencies import exponent


def utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def money(minor: int, currency: str) -> str:
    return major_units(minor, exponent(currency))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def payouts_report(tmp_path: Path, payout: dict, amount: int | None = None) -> Path:
    """``payouts.itemized``: the payout's own balance transaction (money leaving the balance)."""
    paid = payout["amount"] if amount is None else amount
    row = {
        "payout_id": payout["id"],
        "effective_at_utc": utc(payout["arrival_date"]),
        "balance_transaction_id": payout["balance_transaction"],
        "currency": payout["currency"],
        "gross": money(-paid, payout["currency"]),
        "fee": money(0, payout["currency"]),
        "net": money(-paid, payout["currency"]),
        "reporting_category": "payout",
        "description": payout["description"],
        "payout_status": payout["status"],
        "payout_type": payout["type"],
        "payout_destination_id": payout["destination"],
    }
    return write_csv(tmp_path / "payouts.csv", [row])


def settled_report(tmp_path: Path, official: dict) -> Path:
    """``payout_reconciliation.itemized``: two charges settled by the official payout."""
    bt, payout = official["balance_transaction"], official["payout"]
    first = {
        "automatic_payout_id": payout["id"],
        "automatic_payout_effective_at_utc": utc(payout["arrival_date"]),
        "balance_transaction_id": bt["id"],
        "created_utc": utc(bt["created"]),
        "available_on_utc": utc(bt["available_on"]),
        "currency": bt["currency"],
        "gross": money(bt["amount"], bt["currency"]),
        "fee": money(bt["fee"], bt["currency"]),
        "net": money(bt["net"], bt["currency"]),
        "reporting_category": bt["reporting_category"],
        "source_id": bt["source"],
        "charge_id": bt["source"],
        "description": bt["description"],
    }
    second = first | {
        "balance_transaction_id": "txn_second",
        "source_id": "ch_second",
        "charge_id": "ch_second",
        "gross": money(1000, bt["currency"]),
        "net": money(1000, bt["currency"]),
    }
    return write_csv(tmp_path / "payout_reconciliation.csv", [first, second])
