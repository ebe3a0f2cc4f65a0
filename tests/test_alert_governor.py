"""The alert governor: telemetry alerts cap the AIMD ceiling and raise the backoff; quiet
periods undo it step by step. A fake clock, no waiting."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from transforms.aimd import AimdController, AimdSettings
from transforms.alert_governor import Alert, AlertGovernor, GovernorSettings, parse_alert
from transforms.anomaly import alert_id

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _alert(minute: int, metric: str = "rate_429", gateway: str = "stripe") -> Alert:
    start = T0 + timedelta(minutes=minute - 1)
    end = start + timedelta(minutes=1)
    return Alert(alert_id(start, metric, f"gateway={gateway}"), metric, gateway, end, "critical")


def _governor(
    initial: int = 16, minimum: int = 1, maximum: int = 16, **settings: float
) -> tuple[AlertGovernor, AimdController, FakeClock]:
    controller = AimdController(AimdSettings(initial=initial, minimum=minimum, maximum=maximum))
    clock = FakeClock()
    governor = AlertGovernor(
        controller, ["stripe", "voucher"], GovernorSettings(**settings), clock=clock
    )
    return governor, controller, clock


def test_an_overload_alert_halves_the_ceiling_and_doubles_the_backoff() -> None:
    governor, controller, _ = _governor(initial=12)
    verdict = governor.on_alert(_alert(0))
    change = verdict.change
    assert verdict.what == "cut" and change is not None
    assert (change.direction, change.reason) == ("decrease", "alert:rate_429")
    assert (change.previous_ceiling, change.ceiling) == (16, 8)
    assert (change.previous_limit, change.limit) == (12, 8)  # the limit drops under it
    assert (change.previous_backoff, change.backoff) == (1.0, 2.0)
    assert (controller.ceiling, controller.limit, governor.backoff) == (8, 8, 2.0)


def test_the_limit_does_not_grow_past_a_lowered_ceiling() -> None:
    governor, controller, _ = _governor(initial=2)
    governor.on_alert(_alert(0, "latency_p95"))
    for _ in range(100):
        controller.on_success()
    assert (controller.ceiling, controller.limit) == (8, 8)


def test_cuts_stop_at_the_minimum_and_the_backoff_at_its_cap() -> None:
    governor, controller, clock = _governor(minimum=3, cooldown_s=60, max_backoff=4.0)
    verdicts = []
    for minute in range(5):
        verdicts.append(governor.on_alert(_alert(minute)))
        clock.advance(60)
    cuts = [(v.change.ceiling, v.change.backoff) for v in verdicts if v.change]
    assert cuts == [(8, 2.0), (4, 4.0), (3, 4.0)]
    assert [v.what for v in verdicts[3:]] == ["held", "held"]  # nothing left to cut
    assert (controller.ceiling, governor.backoff) == (3, 4.0)


def test_alerts_inside_the_cooldown_cut_once() -> None:
    governor, controller, clock = _governor(cooldown_s=60)
    first = governor.on_alert(_alert(0))
    clock.advance(1)
    others = [governor.on_alert(a) for a in (_alert(1), _alert(0, "latency_p95"))]
    assert first.what == "cut" and [v.what for v in others] == ["held", "held"]
    assert controller.ceiling == 8
    clock.advance(60)
    assert governor.on_alert(_alert(2)).what == "cut"
    assert controller.ceiling == 4


def test_duplicates_other_gateways_other_metrics_and_stale_alerts_change_nothing() -> None:
    governor, controller, clock = _governor(max_age_s=300, cooldown_s=1)
    assert governor.on_alert(_alert(0)).what == "cut"
    clock.advance(10)
    ignored = [
        _alert(0),  # the telemetry job republished the same id
        _alert(1, gateway="adyen"),
        _alert(1, gateway="*"),
        _alert(1, metric="error_rate"),
        _alert(1, metric="conversion"),
        _alert(-10),  # its window ended 10 minutes ago
    ]
    assert [governor.on_alert(a).what for a in ignored] == [
        "duplicate", "other_gateway", "other_gateway", "other_metric", "other_metric", "stale",
    ]  # fmt: skip
    assert (controller.ceiling, governor.backoff) == (8, 2.0)
    assert governor.on_alert(_alert(1, gateway="voucher")).what == "cut"  # it runs voucher


def test_a_resolved_alert_changes_nothing() -> None:
    governor, controller, clock = _governor()
    assert governor.on_alert(_alert(0)).what == "cut"
    clock.advance(120)
    resolved = replace(_alert(1), resolved=True)  # late data made that minute normal
    assert governor.on_alert(resolved).what == "resolved"
    assert (controller.ceiling, governor.backoff) == (8, 2.0)
    assert governor.on_alert(_alert(1)).what == "cut", "its id is not taken by the resolution"


def test_recovery_waits_for_the_quiet_period_then_goes_step_by_step() -> None:
    governor, controller, clock = _governor(quiet_s=120, cooldown_s=60)
    for minute in range(3):  # 16 -> 8 -> 4 -> 2, backoff 1 -> 8
        governor.on_alert(_alert(minute))
        clock.advance(60)
    assert (controller.ceiling, governor.backoff) == (2, 8.0)
    assert governor.tick() is None  # 60 s since the last alert
    clock.advance(59)
    assert governor.tick() is None
    steps = []
    for _ in range(10):
        clock.advance(60)
        steps.append(governor.tick())
    made = [(s.direction, s.reason, s.ceiling, s.backoff) for s in steps if s is not None]
    assert made == [  # a quarter of the maximum per step
        ("increase", "recovered", 6, 4.0),
        ("increase", "recovered", 10, 2.0),
        ("increase", "recovered", 14, 1.0),
        ("increase", "recovered", 16, 1.0),
    ]
    assert steps[0] is not None and steps[1] is None  # one step per quiet period
    assert (controller.ceiling, governor.backoff) == (16, 1.0)


def test_a_new_alert_during_recovery_cuts_again_and_restarts_the_quiet_period() -> None:
    governor, controller, clock = _governor(quiet_s=120, cooldown_s=60)
    governor.on_alert(_alert(0))
    clock.advance(60)
    governor.on_alert(_alert(1))
    assert controller.ceiling == 4
    clock.advance(120)
    assert governor.tick() is not None
    assert controller.ceiling == 8
    clock.advance(30)
    assert governor.on_alert(_alert(4)).what == "cut"
    assert controller.ceiling == 4
    clock.advance(119)
    assert governor.tick() is None
    clock.advance(1)
    step = governor.tick()
    assert step is not None and step.ceiling == 8


def test_an_alert_message_of_the_telemetry_job_parses() -> None:
    value = {
        "alert_id": "anom_1", "metric": "rate_429", "dims": "gateway=stripe",
        "window_start": "2026-12-06T11:59:00Z", "window_end": "2026-12-06T12:00:00Z",
        "severity": "critical", "value": 0.5, "expected": 0.05, "score": 22.5,
    }  # fmt: skip
    alert = parse_alert(json.dumps(value).encode())
    assert alert == Alert("anom_1", "rate_429", "stripe", T0, "critical")
    assert parse_alert(json.dumps(value | {"status": "resolved"}).encode()).resolved


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"alert_id": "a"}', "metric is missing"),
        (
            b'{"alert_id": "a", "metric": "rate_429", "dims": "gateway=stripe", '
            b'"window_end": "noon", "severity": "warning"}',
            "window_end 'noon'",
        ),
    ],
)
def test_an_unreadable_alert_says_why(value: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_alert(value)
