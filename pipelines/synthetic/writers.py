"""Streaming writers for the two generated files, keeping the totals the answer key reports.

Both write as they go (no file is held in memory): the ledger one JSON object per line in
the order events happen, the Stripe export one CSV row per balance transaction in order of
creation, as Stripe's reports list them.
"""

from __future__ import annotations

import heapq
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pipelines.synthetic.clock import DAY_S, Window
from pipelines.synthetic.records import BalanceTxn, major_units
from schemas.currencies import ISO_4217, exponent

_EXPONENTS = {c: exponent(c) for c in ISO_4217}

LEDGER_FILE = "ledger.jsonl"
STRIPE_FILE = "stripe_balance_change_from_activity.csv"
ANSWER_KEY_FILE = "answer_key.json"

# Columns of Stripe's ``balance_change_from_activity.itemized.3`` report (REPORTS.md §1),
# with the order id carried as PaymentIntent metadata, the way checkouts usually record it.
STRIPE_COLUMNS = (
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "charge_created_utc",
    "customer_id",
    "card_brand",
    "card_funding",
    "card_country",
    "payment_method_type",
    "dispute_reason",
    "payment_metadata[order_id]",
)


class ReportTime:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) of epoch seconds; caches the date part."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self._seconds: dict[int, str] = {}

    def __call__(self, seconds: int) -> str:
        text = self._seconds.get(seconds)
        if text is None:
            if len(self._seconds) > 65_536:
                self._seconds.clear()
            text = self._seconds[seconds] = self._format(seconds)
        return text

    def _format(self, seconds: int) -> str:
        day, rest = divmod(seconds, DAY_S)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = self._days[day] = Window.from_day_number(day).day.isoformat()
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{prefix} {hours:02d}:{minutes:02d}:{secs:02d}"


_FIELDS = (
    "event_id",
    "event_type",
    "occurred_at",
    "order_id",
    "stripe_object_id",
    "payment_intent_id",
    "amount",
    "currency",
    "idempotency_key",
    "customer_id",
    "payment_method_type",
    "country",
    "metadata",
)
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _nullable(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def event_json(e: dict) -> str:
    """Compact JSON of a generated ledger event, the same text as ``json.dumps`` with
    ``separators=(",", ":")`` but about three times faster.

    The generator's strings are ASCII without quotes, backslashes or control characters
    (ids, codes, RFC 3339 times), so they need no escaping; events of any other shape go
    through the ``json`` encoder.
    """
    if tuple(e) != _FIELDS or type(e["amount"]) is not int:
        return _encode(e)
    meta = ",".join([f'"{k}":"{v}"' for k, v in e["metadata"].items()])
    return (
        f'{{"event_id":"{e["event_id"]}","event_type":"{e["event_type"]}",'
        f'"occurred_at":"{e["occurred_at"]}","order_id":"{e["order_id"]}",'
        f'"stripe_object_id":"{e["stripe_object_id"]}",'
        f'"payment_intent_id":{_nullable(e["payment_intent_id"])},"amount":{e["amount"]},'
        f'"currency":"{e["currency"]}","idempotency_key":{_nullable(e["idempotency_key"])},'
        f'"customer_id":"{e["customer_id"]}","payment_method_type":"{e["payment_method_type"]}",'
        f'"country":"{e["country"]}","metadata":{{{meta}}}}}'
    )


class LedgerFile:
    """Writes ``ledger.jsonl``; counts lines, events and amounts per currency and type."""

    def __init__(self, path: Path):
        self._file = path.open("w", encoding="utf-8", newline="\n")
        self.lines = 0
        self.malformed = 0
        self.groups: dict[tuple, list[int]] = {}  # (currency, event type) -> [n, amount]

    def write_event(self, event: dict) -> int:
        """Write a valid event; returns its line number (1-based)."""
        self._file.write(event_json(event) + "\n")
        self.lines += 1
        key = (event["currency"], event["event_type"])
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = [0, 0]
        group[0] += 1
        group[1] += event["amount"]
        return self.lines

    def write_malformed(self, text: str) -> int:
        self._file.write(text + "\n")
        self.lines += 1
        self.malformed += 1
        return self.lines

    def close(self) -> None:
        self._file.close()


def merge_groups(parts: list[dict[tuple, list[int]]]) -> dict[tuple, list[int]]:
    """Sums per-part group counters (``key -> [n, amount...]``) into one."""
    merged: dict[tuple, list[int]] = {}
    for groups in parts:
        for key, values in groups.items():
            total = merged.setdefault(key, [0] * len(values))
            for i, value in enumerate(values):
                total[i] += value
    return merged


def ledger_totals(groups: dict[tuple, list[int]], lines: int, malformed: int) -> dict:
    """Counts per event type, and per currency the count and amount sum per event type."""
    by_type: Counter[str] = Counter()
    by_currency: dict[str, dict] = {}
    for (currency, kind), (count, amount) in sorted(groups.items()):
        by_type[kind] += count
        entry = by_currency.setdefault(
            currency, {"events": 0, "events_by_type": {}, "amount_by_type": {}}
        )
        entry["events"] += count
        entry["events_by_type"][kind] = count
        entry["amount_by_type"][kind] = amount
    return {
        "lines": lines,
        "events": lines - malformed,
        "malformed": malformed,
        "by_event_type": dict(sorted(by_type.items())),
        "by_currency": by_currency,
    }


def _sums(groups: dict[tuple, list[int]], keep: Callable[[tuple], bool]) -> dict:
    per_currency: dict[str, list[int]] = {}
    for key, (rows, gross, fee) in groups.items():
        if keep(key):
            total = per_currency.setdefault(key[0], [0, 0, 0])
            total[0] += rows
            total[1] += gross
            total[2] += fee
    result = {}
    for currency, (rows, gross, fee) in sorted(per_currency.items()):
        exp = exponent(currency)
        result[currency] = {
            "rows": rows,
            "gross": gross,
            "fee": fee,
            "net": gross - fee,
            "gross_major": major_units(gross, exp),
            "fee_major": major_units(fee, exp),
            "net_major": major_units(gross - fee, exp),
        }
    return result


class StripeExport:
    """Writes the itemized balance-change CSV in order of ``created``.

    Rows wait in per-second buckets; callers call :meth:`flush_before` as time advances,
    so only the last few seconds are held. No generated field contains a comma, quote or
    newline, so rows are joined directly (the tests read the file back with ``csv``).
    """

    def __init__(self, path: Path, window: Window, as_of_s: int, *, header: bool = True):
        self._file = path.open("w", encoding="utf-8", newline="")
        if header:
            self._file.write(",".join(STRIPE_COLUMNS) + "\n")
        self._start_s = window.start_s
        self._end_s = window.end_s
        self._as_of_s = as_of_s
        self._buckets: dict[int, list[BalanceTxn]] = {}
        self._flushed_to = -(2**62)  # every second before this one is written
        self._time = ReportTime()
        self._lines: list[str] = []
        # (currency, category, -1 before / 0 in / 1 after the window, pending) -> rows, gross, fee
        self.groups: dict[tuple, list[int]] = {}

    def add(self, bt: BalanceTxn) -> None:
        if bt.created_s < self._flushed_to:
            raise ValueError(f"{bt.id} created at {bt.created_s}, after its second was written")
        bucket = self._buckets.get(bt.created_s)
        if bucket is None:
            self._buckets[bt.created_s] = [bt]
        else:
            bucket.append(bt)

    def flush_before(self, seconds: int) -> None:
        """Write every row created before ``seconds``."""
        due = sorted(s for s in self._buckets if s < seconds)
        for second in due:
            for bt in self._buckets.pop(second):
                self._write(bt)
        self._flushed_to = max(self._flushed_to, seconds)
        self._file.write("".join(self._lines))
        self._lines.clear()

    def close(self) -> None:
        self.flush_before(2**62)
        self._file.close()

    def _write(self, bt: BalanceTxn) -> None:
        obj = bt.source
        p = obj.payment
        currency = bt.currency
        exp = _EXPONENTS[currency]
        t = self._time
        net = bt.gross - bt.fee
        self._lines.append(
            f"{bt.id},{t(bt.created_s)},{t(bt.available_on_s)},{currency},"
            f"{major_units(bt.gross, exp)},{major_units(bt.fee, exp)},{major_units(net, exp)},"
            f"{bt.reporting_category},{obj.id},{bt.description},"
            f"{major_units(obj.amount, _EXPONENTS[obj.currency])},{obj.currency},"
            f"{obj.charge_id},{p.payment_intent_id},{t(obj.charge_created_s)},{p.customer_id},"
            f"{p.card_brand},{p.card_funding},{p.country if p.card_brand else ''},{p.method},"
            f"{obj.dispute_reason},{p.order_id}\n"
        )
        created = bt.created_s
        side = -1 if created < self._start_s else 1 if created >= self._end_s else 0
        key = (currency, bt.reporting_category, side, bt.available_on_s > self._as_of_s)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = [0, 0, 0]
        group[0] += 1
        group[1] += bt.gross
        group[2] += bt.fee


def _rows(groups: dict[tuple, list[int]], keep: Callable[[tuple], bool]) -> int:
    return sum(g[0] for key, g in groups.items() if keep(key))


def stripe_totals(groups: dict[tuple, list[int]]) -> dict:
    """Row counts (in, before and after the window, pending) and per-currency sums."""
    categories: Counter[str] = Counter()
    for key, group in groups.items():
        categories[key[1]] += group[0]
    return {
        "rows": _rows(groups, lambda key: True),
        "rows_in_window": _rows(groups, lambda key: key[2] == 0),
        "rows_before_window": _rows(groups, lambda key: key[2] < 0),
        "rows_after_window": _rows(groups, lambda key: key[2] > 0),
        "rows_pending": _rows(groups, lambda key: key[3]),
        "by_reporting_category": dict(sorted(categories.items())),
        "by_currency": _sums(groups, lambda key: True),
        "by_currency_in_window": _sums(groups, lambda key: key[2] == 0),
    }


def _created(line: str) -> str:
    """The created_utc text of a CSV row (ids have a fixed length: txn_ + 24)."""
    return line[29:48]


def merge_stripe_parts(parts: list[Path], out: Path) -> None:
    """Merges per-chunk exports (each in created order) into one, with the header."""
    files = [part.open(encoding="utf-8", newline="") for part in parts]
    try:
        with out.open("w", encoding="utf-8", newline="") as merged:
            merged.write(",".join(STRIPE_COLUMNS) + "\n")
            merged.writelines(heapq.merge(*files, key=_created))
    finally:
        for f in files:
            f.close()


def concat_files(parts: list[Path], out: Path) -> None:
    with out.open("wb") as whole:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, whole, 1 << 20)
