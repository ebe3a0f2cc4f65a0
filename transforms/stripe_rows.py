"""Stripe API objects as Arrow rows: balance transactions to ``BALANCE_TRANSACTION_V1``.

The conversion half of the Stripe API source: :func:`fetch_window` pages through the
balance transactions of a window with :class:`~transforms.stripe_api.StripeClient` and
:func:`balance_transactions_to_arrow` converts them, amounts kept as the integers Stripe sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from transforms.stripe_api import StripeClient

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fetch_window(
    client: StripeClient,
    start: datetime,
    end: datetime,
    margin: timedelta = timedelta(0),
    *,
    expand_source: bool = True,
) -> pa.Table:
    """The balance transactions created in ``[start - margin, end + margin)`` as a
    ``BALANCE_TRANSACTION_V1`` table (the reconcile job's API source).

    Rows from the margins are for matching only; the matcher reports each row in the
    window of its own ``created``. Sources are expanded by default, for order ids.
    """
    if end <= start:
        raise ValueError(f"empty window: end {end.isoformat()} is not after {start.isoformat()}")
    if margin < timedelta(0):
        raise ValueError(f"margin must not be negative, got {margin}")
    pages = client.list_balance_transactions(
        start - margin, end + margin, expand_source=expand_source
    )
    tables = [balance_transactions_to_arrow(page) for page in pages]
    return pa.concat_tables(tables) if tables else BALANCE_TRANSACTION_V1.empty_table()


def balance_transactions_to_arrow(objects: Iterable[Mapping[str, Any]]) -> pa.Table:
    """``BALANCE_TRANSACTION_V1`` rows (``origin`` = ``api``) from API balance transactions.

    Amounts stay signed minor units as Stripe gives them; ``created``/``available_on``
    become UTC timestamps; ``exchange_rate`` keeps the exact decimal text. Order, charge,
    PaymentIntent, customer and card fields come from the source when it was expanded
    (``order_id`` and ``idempotency_key`` from its metadata); from an unexpanded source
    only the ids its prefix tells. A transaction missing a required field raises
    ``ValueError`` naming it.
    """
    rows = [_balance_transaction_row(obj) for obj in objects]
    return pa.Table.from_pylist(rows, schema=BALANCE_TRANSACTION_V1)


def _balance_transaction_row(bt: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("id", "amount", "fee", "net", "currency", "created") if k not in bt]
    if missing:
        raise ValueError(f"balance transaction {bt.get('id', '?')} lacks {', '.join(missing)}")
    source = bt.get("source")
    expanded = source if isinstance(source, Mapping) else None
    source_id = expanded.get("id") if expanded is not None else source
    details = (expanded or {}).get("payment_method_details") or {}
    card = details.get("card") or {}
    metadata = (expanded or {}).get("metadata") or {}
    return {
        "balance_transaction_id": bt["id"],
        "source_id": source_id,
        "type": bt.get("type"),
        "reporting_category": bt.get("reporting_category"),
        "amount": _minor_units(bt, "amount"),
        "fee": _minor_units(bt, "fee"),
        "net": _minor_units(bt, "net"),
        "currency": str(bt["currency"]).lower(),
        "created": _utc(bt["created"]),
        "available_on": _utc(bt.get("available_on")),
        "status": bt.get("status"),
        "exchange_rate": _exact_text(bt.get("exchange_rate")),
        "customer_facing_amount": None,
        "customer_facing_currency": None,
        "charge_id": _charge_id(source_id, expanded),
        "payment_intent_id": _id_of((expanded or {}).get("payment_intent")),
        "order_id": metadata.get("order_id"),
        "idempotency_key": metadata.get("idempotency_key"),
        "customer_id": _id_of((expanded or {}).get("customer")),
        "payment_method_type": details.get("type"),
        "card_brand": card.get("brand"),
        "card_country": card.get("country"),
        "automatic_payout_id": None,
        "fee_details": [
            {
                "amount": _minor_units(f, "amount"),
                "currency": f.get("currency"),
                "type": f.get("type"),
            }
            for f in bt.get("fee_details") or []
        ],
        "origin": "api",
    }


def _minor_units(obj: Mapping[str, Any], key: str) -> int:
    """An amount that must be an integer of minor units; anything else is bad data, never
    rounded."""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{obj.get('id', 'fee detail')}: {key} {value!r} is not integer minor units"
        )
    return value


def _charge_id(source_id: str | None, expanded: Mapping[str, Any] | None) -> str | None:
    """The charge behind a source: itself for charges (``ch_``, ``py_``), the ``charge``
    field of an expanded refund or dispute."""
    if source_id is None:
        return None
    if source_id.startswith(("ch_", "py_")):
        return source_id
    return _id_of((expanded or {}).get("charge"))


def _id_of(value: Any) -> str | None:
    """The id of an expandable field: the string itself, or the expanded object's id."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value if isinstance(value, str) else None


def _utc(epoch_seconds: Any) -> datetime | None:
    if epoch_seconds is None:
        return None
    return _EPOCH + timedelta(seconds=int(epoch_seconds))


def _exact_text(number: Any) -> str | None:
    """The decimal text of a JSON number: exact for Decimal/str/int, shortest repr for a
    float (already rounded by whoever parsed it)."""
    if number is None:
        return None
    return number if isinstance(number, str) else str(number)
