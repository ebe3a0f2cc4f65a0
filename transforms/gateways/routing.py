"""Which gateway pays a request.

In order: the request's own ``gateway`` field; the route of its ``payment_method_type``
(``payrecon gateway --route konbini=voucher``); the consumer's default gateway. A name the
consumer does not run is the consumer's answer "unknown gateway", and the request is
dead-lettered (replayable once a consumer runs it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from transforms.gateways.base import GatewayConfigError
from transforms.payment_requests import PaymentRequest


@dataclass(frozen=True)
class Routes:
    default: str
    by_payment_method_type: Mapping[str, str] = field(default_factory=dict)

    def choose(self, request: PaymentRequest) -> str:
        if request.gateway:
            return request.gateway
        return self.by_payment_method_type.get(request.payment_method_type, self.default)

    @property
    def targets(self) -> frozenset[str]:
        """Every gateway a request can reach without naming one."""
        return frozenset([self.default, *self.by_payment_method_type.values()])


def parse_pairs(pairs: Iterable[str], flag: str) -> dict[str, str]:
    """``["konbini=voucher", ...]`` to a dict; raises GatewayConfigError naming the flag."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GatewayConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed
