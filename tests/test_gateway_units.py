"""The gateway adapter's pure parts: request validation, idempotency keys, the AIMD
controller, offset tracking, routing, output records, the voucher gateway, usage errors.
No broker and no Stripe: each test runs in milliseconds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipelines import gateway
from schemas.dead_letter import Reason
from schemas.jsonschema import json_schema
from schemas.payments import PAYMENT_REQUEST_V1, PAYMENT_RESULT_V1, PAYMENT_TELEMETRY_V1
from tests.gateway_helpers import encode, payment_request
from transforms.aimd import AimdController, AimdSettings, LimitChange
from transforms.gateways import GatewayError, GatewayResult, GatewaySettings, build_gateway
from transforms.gateways.routing import Routes
from transforms.gateways.stripe_gateway import result_of_intent
from transforms.ledger_validation import Invalid
from transforms.offset_tracker import OffsetTracker
from transforms.payment_records import TelemetryEvent, result_record
from transforms.payment_requests import PaymentRequest, idempotency_key, parse_request

GOOD = payment_request(1, request_id="0b7c0a5e-8f9d-4b8e-9a51-5a0d2c3e4f60")


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != name}


POISON = [
    (b"{not json", Reason.NOT_JSON),
    (b"\xff\xfe", Reason.NOT_JSON),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (encode(_without("amount")), Reason.MISSING_FIELD),
    (encode(_without("created_at")), Reason.MISSING_FIELD),
    (encode(GOOD | {"amount": "10"}), Reason.WRONG_TYPE),
    (encode(GOOD | {"amount": 10.5}), Reason.NON_INTEGER_AMOUNT),
    (encode(GOOD | {"amount": -1}), Reason.NEGATIVE_AMOUNT),
    (encode(GOOD | {"amount": 0}), Reason.AMOUNT_OUT_OF_RANGE),
    (encode(GOOD | {"amount": 2**64}), Reason.AMOUNT_OUT_OF_RANGE),
    (encode(GOOD | {"currency": "USD"}), Reason.UNKNOWN_CURRENCY),
    (encode(GOOD | {"currency": "xyz"}), Reason.UNKNOWN_CURRENCY),
    (encode(GOOD | {"request_id": "req-1"}), Reason.BAD_UUID),
    (encode(GOOD | {"order_id": ""}), Reason.EMPTY_FIELD),
    (encode(GOOD | {"created_at": "yesterday"}), Reason.BAD_TIMESTAMP),
    (encode(GOOD | {"country": "usa"}), Reason.BAD_COUNTRY),
    (encode(GOOD | {"country": "US\n"}), Reason.BAD_COUNTRY),
    (encode(GOOD | {"created_at": "2026-11-20T10:00:00Z\n"}), Reason.BAD_TIMESTAMP),
    (encode(GOOD | {"metadata": {"n": 1}}), Reason.WRONG_TYPE),
    (encode(GOOD | {"gateway": 7}), Reason.WRONG_TYPE),
]


@pytest.mark.parametrize(("value", "reason"), POISON)
def test_a_poison_pill_is_refused_with_its_reason(value: bytes, reason: Reason) -> None:
    parsed = parse_request(value)
    assert isinstance(parsed, Invalid)
    assert parsed.reason is reason


def test_a_payload_over_the_limit_is_refused_before_parsing() -> None:
    parsed = parse_request(encode(GOOD), max_payload_bytes=10)
    assert isinstance(parsed, Invalid) and parsed.reason is Reason.PAYLOAD_TOO_LARGE


def test_a_valid_request_passes_and_agrees_with_its_json_schema() -> None:
    parsed = parse_request(encode(GOOD | {"metadata": {"cart": "c1"}, "gateway": None}))
    assert isinstance(parsed, PaymentRequest)
    assert (parsed.amount, parsed.currency, parsed.metadata) == (1001, "usd", {"cart": "c1"})
    jsonschema.validate(GOOD, json_schema(PAYMENT_REQUEST_V1))


def test_the_idempotency_key_is_the_same_for_every_spelling_of_the_request_id() -> None:
    upper = parse_request(encode(GOOD | {"request_id": GOOD["request_id"].upper()}))
    braces = parse_request(encode(GOOD | {"request_id": "{" + GOOD["request_id"] + "}"}))
    assert isinstance(upper, PaymentRequest) and isinstance(braces, PaymentRequest)
    expected = "payrecon-pi-0b7c0a5e-8f9d-4b8e-9a51-5a0d2c3e4f60"
    assert upper.idempotency_key == braces.idempotency_key == expected
    assert idempotency_key(GOOD["request_id"]) == expected


# -- AIMD ---------------------------------------------------------------------------------


def _controller(**settings: Any) -> tuple[AimdController, list[LimitChange]]:
    changes: list[LimitChange] = []
    return AimdController(AimdSettings(**settings), on_change=changes.append), changes


def test_the_limit_grows_by_one_after_n_successes_in_a_row() -> None:
    controller, changes = _controller(initial=2, maximum=4, increase_after=3)
    for _ in range(2):
        controller.on_success()
    controller.on_failure(controller.ticket(), "http_500")  # breaks the streak, no cut
    for _ in range(3 * 5):
        controller.on_success()
    assert [(c.previous, c.limit, c.direction) for c in changes] == [
        (2, 3, "increase"),
        (3, 4, "increase"),
    ]
    assert controller.limit == 4  # never above the maximum


def test_a_429_or_a_timeout_halves_the_limit_down_to_the_minimum() -> None:
    controller, changes = _controller(initial=16, minimum=3, maximum=16)
    for reason in ("http_429", "timeout", "http_429", "http_429"):
        controller.on_failure(controller.ticket(), reason)
    assert [c.limit for c in changes] == [8, 4, 3]
    assert [c.reason for c in changes] == ["http_429", "timeout", "http_429"]
    assert (controller.lowest, controller.highest, controller.decreases) == (3, 16, 3)


def test_calls_in_flight_during_a_cut_do_not_cut_again_for_the_same_surge() -> None:
    controller, changes = _controller(initial=8)
    tickets = [controller.ticket() for _ in range(8)]  # eight calls in flight
    for ticket in tickets:
        controller.on_failure(ticket, "http_429")
    assert [c.limit for c in changes] == [4]
    controller.on_failure(controller.ticket(), "http_429")  # a call started after the cut
    assert [c.limit for c in changes] == [4, 2]


def test_a_ceiling_drops_a_higher_limit_and_stops_its_growth() -> None:
    controller, changes = _controller(initial=12, maximum=16, increase_after=1)
    cut = controller.set_ceiling(6, "alert:rate_429")
    assert cut is not None and (cut.previous, cut.limit, cut.reason) == (12, 6, "alert:rate_429")
    assert changes == []  # the caller reports a forced change
    for _ in range(10):
        controller.on_success()
    assert controller.limit == 6
    assert controller.set_ceiling(99, "recovered") is None and controller.ceiling == 16
    controller.on_success()
    assert [c.limit for c in changes] == [7]


def test_impossible_concurrency_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum <= initial <= maximum"):
        AimdSettings(initial=8, maximum=4)
    with pytest.raises(ValueError, match="decrease_factor"):
        AimdSettings(decrease_factor=1.0)


# -- offsets ------------------------------------------------------------------------------


def test_an_offset_is_committed_only_when_every_earlier_one_is_finished() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start("t", 0, offset)
    tracker.start("t", 1, 5)
    tracker.finish("t", 0, 12)
    tracker.finish("t", 1, 5)
    assert tracker.to_commit() == {("t", 1): 6}
    tracker.committed({("t", 1): 6})
    tracker.finish("t", 0, 10)
    assert tracker.to_commit() == {("t", 0): 11}
    tracker.finish("t", 0, 11)
    assert tracker.to_commit() == {("t", 0): 13}
    assert tracker.in_flight == 0


def test_a_forgotten_partition_is_neither_tracked_nor_committed() -> None:
    tracker = OffsetTracker()
    tracker.start("t", 0, 1)
    tracker.forget([("t", 0)])
    tracker.finish("t", 0, 1)
    assert tracker.to_commit() == {}


# -- routing and gateways -----------------------------------------------------------------


def _request(**overrides: Any) -> PaymentRequest:
    parsed = parse_request(encode(payment_request(1, **overrides)))
    assert isinstance(parsed, PaymentRequest)
    return parsed


def test_a_request_goes_to_its_own_gateway_then_its_route_then_the_default() -> None:
    routes = Routes("stripe", {"konbini": "voucher"})
    assert routes.choose(_request()) == "stripe"
    assert routes.choose(_request(payment_method_type="konbini")) == "voucher"
    assert routes.choose(_request(payment_method_type="konbini", gateway="pix")) == "pix"


def test_a_stripe_payment_intent_maps_to_a_result_status() -> None:
    base = {"id": "pi_1", "latest_charge": {"id": "ch_1"}}
    assert result_of_intent(base | {"status": "succeeded"}).charge_id == "ch_1"
    declined = base | {"status": "requires_payment_method", "last_payment_error": {"code": "x"}}
    assert (result_of_intent(declined).status, result_of_intent(declined).error_code) == (
        "failed",
        "x",
    )
    three_ds = {
        "id": "pi_2",
        "status": "requires_action",
        "next_action": {"type": "use_stripe_sdk"},
    }
    assert result_of_intent(three_ds).status == "requires_action"
    assert result_of_intent({"id": "pi_3", "status": "processing"}).status == "processing"
    assert result_of_intent({"id": "pi_4", "status": "requires_payment_method"}).status == (
        "requires_action"
    )


def test_the_voucher_gateway_issues_one_voucher_per_key_across_restarts(tmp_path: Path) -> None:
    settings = GatewaySettings(options={"voucher.path": str(tmp_path / "v.jsonl")})
    request = _request(payment_method_type="konbini", currency="jpy", payment_method=None)
    first = build_gateway("voucher", settings).create_payment(request, "key-1")
    again = build_gateway("voucher", settings).create_payment(request, "key-1")
    assert first == again
    assert (first.status, first.gateway_status) == ("requires_action", "voucher_issued")
    assert str(first.payment_intent_id).startswith("vch_")
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 1


def test_the_voucher_gateway_refuses_a_key_reused_with_other_parameters(tmp_path: Path) -> None:
    voucher = build_gateway(
        "voucher", GatewaySettings(options={"voucher.path": str(tmp_path / "v")})
    )
    voucher.create_payment(_request(payment_method_type="oxxo", amount=100), "key-1")
    with pytest.raises(GatewayError) as refused:
        voucher.create_payment(_request(payment_method_type="oxxo", amount=200), "key-1")
    assert (refused.value.transient, refused.value.reason) == (False, "idempotency_error")
    with pytest.raises(GatewayError, match="not 'card'"):
        voucher.create_payment(_request(), "key-2")


# -- output records ------------------------------------------------------------------------


def test_results_and_telemetry_match_their_json_schemas() -> None:
    request = _request()
    result = GatewayResult(status="succeeded", payment_intent_id="pi_1", charge_id="ch_1")
    key, value = result_record(
        request, result, gateway="stripe", attempts=2, processed_at=datetime.now(UTC)
    )
    assert key == request.request_id.encode()
    jsonschema.validate(json.loads(value), json_schema(PAYMENT_RESULT_V1))
    event = TelemetryEvent.attempt_of(
        request, outcome="retry", consumer_id="c1", concurrency=2, backoff_ms=125.0
    )
    key, value = event.record()
    assert key == request.request_id.encode()
    assert set(json.loads(value)) == set(PAYMENT_TELEMETRY_V1.names) - {"ceiling"}
    jsonschema.validate(json.loads(value), json_schema(PAYMENT_TELEMETRY_V1))
    slowed = TelemetryEvent(
        kind="controller", outcome="decrease", consumer_id="c1", concurrency=2,
        previous_concurrency=4, ceiling=4, reason="alert:rate_429", backoff_ms=100.0,
    )  # fmt: skip
    key, value = slowed.record()
    assert key == b"c1" and json.loads(value)["ceiling"] == 4
    jsonschema.validate(json.loads(value), json_schema(PAYMENT_TELEMETRY_V1))


# -- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gateway", "paypal"], "unknown gateway 'paypal'"),
        (["--route", "konbini"], "--route expects KEY=VALUE"),
        (["--gateway-option", "path=x"], "--gateway-option expects NAME.KEY=VALUE"),
        (["--concurrency", "9", "--max-concurrency", "4"], "minimum <= initial <= maximum"),
        (["--gateway", "stripe"], "needs $STRIPE_API_KEY"),
    ],
)
def test_a_configuration_mistake_exits_2_with_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    assert gateway.main(["--bootstrap-servers", "127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", [["--idle-timeout", "-1"], ["--alert-max-backoff", "0.5"]])
def test_a_bad_flag_value_exits_2_naming_the_flag(
    flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        gateway.main(flag)
    assert exited.value.code == 2
    assert flag[0] in capsys.readouterr().err


def test_help_documents_the_bounded_run_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gateway.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--max-messages", "--idle-timeout", "--route", "--give-up-after", "SIGTERM"):
        assert flag in out


def test_alerts_are_read_from_telemetry_alerts_unless_turned_off() -> None:
    parser = gateway.build_parser()
    job, _, _ = gateway.job_from_args(parser.parse_args(["--alert-quiet", "30"]))
    assert (job.alerts_topic, job.governor.quiet_s) == ("telemetry.alerts", 30.0)
    job, _, _ = gateway.job_from_args(parser.parse_args(["--no-alerts"]))
    assert job.alerts_topic is None
