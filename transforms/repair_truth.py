"""What Stripe says about one object: the authoritative side of a repair.

A repair never trusts the discrepancy's copy of the numbers; it asks Stripe again. Two
sources answer the same question, "the balance transactions of object X":

- :class:`ApiTruth`: the Stripe API through :class:`~transforms.stripe_api.StripeClient`
  (charges and refunds with their balance transaction expanded, disputes with theirs), the
  production source;
- :class:`ExportTruth`: Stripe's itemized exports (the files a reconcile read), for accounts
  that reconcile from reports, and for the demo and tests, whose objects exist only there.

Both give :class:`StripeTruth`: the object's balance transactions as
``BALANCE_TRANSACTION_V1`` rows (dicts), plus whether Stripe knows the object at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from apache_beam.io.filesystems import FileSystems

from transforms.stripe_api import StripePermanentError
from transforms.stripe_files import iter_stripe_export
from transforms.stripe_rows import balance_transactions_to_arrow


class StripeTruth(NamedTuple):
    object_id: str
    exists: bool  # False: Stripe has no such object (a 404, or in no export read)
    rows: tuple[dict[str, Any], ...]  # BALANCE_TRANSACTION_V1 rows of the object
    order_id: str | None = None  # from the object's metadata when no row carries it


class TruthSource(Protocol):
    name: str

    def fetch(self, object_id: str) -> StripeTruth: ...


def _object_of(row: Mapping[str, Any]) -> str:
    return row["source_id"] or row["balance_transaction_id"]


class ExportTruth:
    """The balance transactions of the exports matching ``pattern`` (any Beam filesystem),
    indexed by object, read once."""

    def __init__(self, pattern: str, as_of: datetime):
        matched = FileSystems.match([pattern])[0].metadata_list
        if not matched:
            raise FileNotFoundError(f"no Stripe export matches {pattern!r}")
        self.name = pattern
        self._rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for path in sorted(m.path for m in matched):
            with FileSystems.open(path) as f:
                origin = path.rstrip("/").rsplit("/", 1)[-1]
                for chunk in iter_stripe_export(f, as_of, origin=origin):
                    for row in chunk.rows.to_pylist():
                        self._rows[_object_of(row)].append(row)

    def fetch(self, object_id: str) -> StripeTruth:
        rows = self._rows.get(object_id, [])
        return StripeTruth(object_id, bool(rows), tuple(rows))

    def fetch_order(self, order_id: str) -> StripeTruth:
        """Every charge of one order (what a human needs to refund a double charge)."""
        rows = [
            row
            for rows in self._rows.values()
            for row in rows
            if row["order_id"] == order_id and row["reporting_category"] == "charge"
        ]
        return StripeTruth(order_id, bool(rows), tuple(rows), order_id)


# object id prefix -> (kind to retrieve, how its balance transactions are found)
_KINDS = {
    "ch_": "charge",
    "py_": "charge",
    "re_": "refund",
    "pyr_": "refund",
    "dp_": "dispute",
    "du_": "dispute",
}


class ApiTruth:
    """The object from the Stripe API; its balance transactions with their source expanded
    the way the reconcile job's API source reads them."""

    name = "api"

    def __init__(self, client):
        self._client = client

    def fetch(self, object_id: str) -> StripeTruth:
        kind = next((k for p, k in sorted(_KINDS.items(), key=lambda i: -len(i[0]))
                     if object_id.startswith(p)), None)  # fmt: skip
        if kind is None:
            raise ValueError(f"cannot fetch {object_id!r}: not a charge, refund or dispute id")
        try:
            obj = self._client.retrieve(
                kind, object_id, expand=[] if kind == "dispute" else ["balance_transaction"]
            )
        except StripePermanentError as exc:
            if exc.status == 404:
                return StripeTruth(object_id, False, ())
            raise
        # The object itself is the transactions' source, expanded (order id, intent).
        source = {k: v for k, v in obj.items() if k != "balance_transaction"}
        rows = balance_transactions_to_arrow(
            [{**bt, "source": source} for bt in _balance_transactions(kind, obj)]
        ).to_pylist()
        order_id = (obj.get("metadata") or {}).get("order_id")
        return StripeTruth(object_id, True, tuple(rows), order_id)


def _balance_transactions(kind: str, obj: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    if kind == "dispute":
        return [bt for bt in obj.get("balance_transactions") or [] if isinstance(bt, Mapping)]
    bt = obj.get("balance_transaction")
    return [bt] if isinstance(bt, Mapping) else []
