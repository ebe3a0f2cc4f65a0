"""The payment gateway implementations, by name.

Adding a region's local payment method is a new module with a
:class:`~transforms.gateways.base.PaymentGateway` subclass and one line in ``GATEWAYS``;
the consumer (``pipelines/gateway*.py``) does not change. Requests choose one with their
``gateway`` field, or by ``payment_method_type`` through ``payrecon gateway --route``.
Modules are imported only when their gateway is built, as ``pipelines/cli.py`` does.
"""

from __future__ import annotations

import importlib

from transforms.gateways.base import (
    GatewayConfigError,
    GatewayError,
    GatewayResult,
    GatewaySettings,
    PaymentGateway,
)

# name -> "module:class"
GATEWAYS: dict[str, str] = {
    "stripe": "transforms.gateways.stripe_gateway:StripeGateway",
    "voucher": "transforms.gateways.voucher:VoucherGateway",
}


def build_gateway(name: str, settings: GatewaySettings) -> PaymentGateway:
    """The gateway registered as ``name``, built from ``settings``."""
    if name not in GATEWAYS:
        known = ", ".join(sorted(GATEWAYS))
        raise GatewayConfigError(f"unknown gateway {name!r}; one of: {known}")
    module_name, _, class_name = GATEWAYS[name].partition(":")
    gateway_class = getattr(importlib.import_module(module_name), class_name)
    return gateway_class.from_settings(settings)


__all__ = [
    "GATEWAYS",
    "GatewayConfigError",
    "GatewayError",
    "GatewayResult",
    "GatewaySettings",
    "PaymentGateway",
    "build_gateway",
]
