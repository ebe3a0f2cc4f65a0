"""Fuzzing the ``payments.requests`` decoder of ``payrecon gateway``: every message is a valid
request or dead-lettered with a reason, never an exception; and a request it accepts can be
sent to a gateway (every text field is UTF-8) and routed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given

from schemas.dead_letter import Reason
from tests.faults.fuzz_inputs import count, fuzz_settings, message_values, to_json_bytes
from tests.gateway_helpers import payment_request
from transforms.gateways.base import GatewayResult
from transforms.gateways.routing import Routes
from transforms.ledger_validation import Invalid
from transforms.payment_records import result_record
from transforms.payment_requests import PaymentRequest, parse_request

VALID = [
    payment_request(1) | {"request_id": "3f0c7d5e-9b1a-4c1e-8f7a-2d6b5e4c3a21"},
    payment_request(
        "konbini",
        request_id="{3F0C7D5E-9B1A-4C1E-8F7A-2D6B5E4C3A22}",
        payment_method_type="konbini",
        payment_method=None,
        currency="jpy",
        country="JP",
        gateway="voucher",
        metadata={"cart": "c1", "note": "é \u202e"},
    ),
]
NOW = datetime(2026, 11, 20, 10, tzinfo=UTC)
ROUTES = Routes(default="stripe", by_payment_method_type={"konbini": "voucher"})


def assert_usable(request: PaymentRequest) -> None:
    """What the gateway does with a request it accepted, short of paying it."""
    texts = [v for v in vars(request).values() if isinstance(v, str)]
    texts += [*request.metadata, *request.metadata.values()]
    for text in texts:
        text.encode("utf-8")  # Stripe's API takes form-encoded UTF-8
    assert request.idempotency_key.startswith("payrecon-pi-")
    assert ROUTES.choose(request)
    key, _ = result_record(
        request, GatewayResult("succeeded"), gateway="stripe", attempts=1, processed_at=NOW
    )
    assert key == request.request_id.encode()


@fuzz_settings(fast=1000, faults=10000)
@given(message_values(VALID))
def test_every_payment_request_is_valid_or_dead_lettered_with_a_reason(value):
    count("payment request decode")
    parsed = parse_request(value)

    if isinstance(parsed, Invalid):
        assert Reason(parsed.reason) and parsed.detail
    else:
        assert isinstance(parsed, PaymentRequest)
        assert_usable(parsed)


@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw-bytes"])
@pytest.mark.parametrize("field", ["order_id", "payment_method", "customer_id", "card_brand"])
def test_a_lone_surrogate_is_not_json_rather_than_a_crash_at_the_gateway(field, ascii_only):
    """Found by the fuzzer: ``"\\ud800"`` (a valid JSON escape, or its raw bytes, which
    Python's parser reads too) is no UTF-8 text; the request was accepted and the Stripe
    gateway then failed to encode it (UnicodeEncodeError), stopping the consumer on every
    restart."""
    value = to_json_bytes(VALID[0] | {field: "ord_\ud800"}, ascii_only=ascii_only, indent=None)

    parsed = parse_request(value)

    assert isinstance(parsed, Invalid) and parsed.reason is Reason.NOT_JSON
