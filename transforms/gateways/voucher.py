"""Cash vouchers paid at a store: konbini (Japan), OXXO (Mexico), boleto (Brazil).

A minimal second gateway, proving that a region's local payment method plugs in without
touching the consumer. The customer pays later, in cash, so every payment ends
``requires_action`` (gateway status ``voucher_issued``) with a voucher id (``vch_...``)
derived from the idempotency key.

Issued vouchers are appended to a JSON-lines file (``--gateway-option
voucher.path=FILE``) and reloaded at start: the same key gets the same voucher across
restarts, and the same key with other parameters is refused, as Stripe refuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from transforms.gateways.base import (
    GatewayConfigError,
    GatewayError,
    GatewayResult,
    GatewaySettings,
    PaymentGateway,
)
from transforms.payment_requests import PaymentRequest

DEFAULT_PATH = "payrecon-vouchers.jsonl"
DEFAULT_TYPES = ("konbini", "oxxo", "boleto")
ISSUED = "voucher_issued"


class VoucherGateway(PaymentGateway):
    name = "voucher"

    def __init__(self, path: Path, payment_method_types: tuple[str, ...] = DEFAULT_TYPES):
        self.path = path
        self.payment_method_types = payment_method_types
        self._lock = threading.Lock()
        self._issued: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, voucher id)
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self._issued[row["key"]] = (row["fingerprint"], row["voucher_id"])

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> VoucherGateway:
        path = Path(settings.option(cls.name, "path") or DEFAULT_PATH)
        types = settings.option(cls.name, "payment_method_types")
        chosen = tuple(t.strip() for t in types.split(",") if t.strip()) if types else None
        if not path.parent.is_dir():
            raise GatewayConfigError(f"--gateway-option voucher.path: no directory {path.parent}")
        try:
            return cls(path, chosen or DEFAULT_TYPES)
        except (OSError, ValueError, KeyError) as exc:
            message = f"--gateway-option voucher.path: cannot read {path}: {exc}"
            raise GatewayConfigError(message) from None

    def create_payment(self, request: PaymentRequest, idempotency_key: str) -> GatewayResult:
        if request.payment_method_type not in self.payment_method_types:
            raise GatewayError(
                f"the voucher gateway takes {', '.join(self.payment_method_types)}, "
                f"not {request.payment_method_type!r}",
                transient=False,
                reason="payment_method_unsupported",
                error_code="payment_method_unsupported",
            )
        fingerprint = _fingerprint(request)
        with self._lock:
            issued = self._issued.get(idempotency_key)
            if issued is None:
                voucher_id = "vch_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
                self._append(idempotency_key, fingerprint, voucher_id, request)
                issued = self._issued[idempotency_key] = (fingerprint, voucher_id)
        if issued[0] != fingerprint:
            raise GatewayError(
                f"idempotency key {idempotency_key} was first used with other parameters",
                transient=False,
                reason="idempotency_error",
                error_code="idempotency_error",
            )
        return GatewayResult(
            status="requires_action", payment_intent_id=issued[1], gateway_status=ISSUED
        )

    def _append(self, key: str, fingerprint: str, voucher_id: str, request: PaymentRequest) -> None:
        row = {
            "key": key,
            "fingerprint": fingerprint,
            "voucher_id": voucher_id,
            "order_id": request.order_id,
            "amount": request.amount,
            "currency": request.currency,
            "payment_method_type": request.payment_method_type,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())  # issued before it is reported: a replay finds it


def _fingerprint(request: PaymentRequest) -> str:
    fields = (request.order_id, request.amount, request.currency, request.payment_method_type)
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()
