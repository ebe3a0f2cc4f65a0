"""Telemetry alerts turned into limits: the gateway slows down by itself, and recovers.

``payrecon telemetry`` scores every minute of the gateway's telemetry and publishes
anomalies to ``telemetry.alerts``. The gateway's own AIMD controller (``transforms.aimd``)
reacts to the 429s of its calls within a few calls, but it forgets a surge as soon as a few
calls succeed and grows straight back into it. An alert is slower, wider evidence (every
consumer, a whole minute, scored against history), and :class:`AlertGovernor` holds the
gateway down while such evidence keeps coming:

* an alert for a gateway this consumer runs, on a metric that load makes worse
  (:data:`OVERLOAD_METRICS`), **cuts**: the AIMD ceiling is multiplied by ``cap_factor``
  (never below the controller's minimum) and the retry backoff multiplier by
  ``backoff_factor`` (never above ``max_backoff``). At most one cut per ``cooldown_s``:
  the telemetry job can publish several minutes of one storm at once, and one storm is one
  cut per minute of it, not one per message;
* any such alert, cut or not, restarts the **quiet** period; after ``quiet_s`` without one,
  each ``quiet_s`` is one **recovery step**: the ceiling grows by ``recovery_share`` of the
  maximum (at least 1) and the multiplier is divided by ``backoff_factor``, until both are
  back at the configured values. Down fast, up gradually, as AIMD itself: a storm that
  halved the ceiling twice is undone in four steps of a quarter, not in one jump;
* ignored: a resolved alert (late data made its window normal; the quiet periods recover
  from it as from any other), an alert id already seen (the telemetry job republishes an id
  when a batch is retried or late data completes its window), an alert for another gateway
  or for the aggregate ``gateway=*`` (whose gateway's own series alerts too), an alert on
  another metric, and a stale alert (its window ended more than ``max_age_s`` ago: a
  gateway started after a storm does not relive it).

Why ``error_rate`` does not cut: the telemetry job's error rate counts failed calls of every
kind (5xx, dropped connections, permanent 4xx such as bad requests). Slowing down does not
fix a bad deploy or a Stripe outage; those are retried with backoff call by call already, and
the timeouts among them cut the AIMD limit directly. ``conversion`` is about customers, not
load. Both stay alerts for people.

Pure and thread-safe: the clock is injected, no IO; the caller publishes the returned
:class:`GovernorChange` (as a ``controller`` telemetry event).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from transforms.aimd import AimdController
from transforms.ledger_validation import parse_rfc3339_micros

OVERLOAD_METRICS = frozenset({"rate_429", "latency_p95"})
RECOVERED = "recovered"


@dataclass(frozen=True)
class Alert:
    """What the governor reads of one ``telemetry.alerts`` message."""

    alert_id: str
    metric: str
    gateway: str
    window_end: datetime
    severity: str
    resolved: bool = False  # status "resolved": a later run found the window normal again


def parse_alert(value: bytes | None) -> Alert:
    """Decode one alert message (``pipelines.telemetry_alerts.alert_messages``); raises
    ValueError saying what is wrong with it."""
    try:
        row = json.loads(value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise ValueError(f"not a JSON object: {type(row).__name__}")
    texts = {}
    for name in ("alert_id", "metric", "dims", "window_end", "severity"):
        if not isinstance(row.get(name), str):
            raise ValueError(f"{name} is missing or not a string")
        texts[name] = row[name]
    micros = parse_rfc3339_micros(texts["window_end"])
    if micros is None:
        raise ValueError(f"window_end {texts['window_end']!r} is not RFC 3339")
    dims = dict(pair.partition("=")[::2] for pair in texts["dims"].split(","))
    return Alert(
        alert_id=texts["alert_id"],
        metric=texts["metric"],
        gateway=dims.get("gateway", "*"),
        window_end=datetime.fromtimestamp(micros / 1_000_000, UTC),
        severity=texts["severity"],
        resolved=row.get("status") == "resolved",
    )


@dataclass(frozen=True)
class GovernorSettings:
    """The knobs (see the module docstring); times in seconds."""

    metrics: frozenset[str] = OVERLOAD_METRICS
    cap_factor: float = 0.5
    recovery_share: float = 0.25
    backoff_factor: float = 2.0
    max_backoff: float = 8.0
    cooldown_s: float = 60.0
    quiet_s: float = 120.0
    max_age_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0.0 < self.cap_factor < 1.0:
            raise ValueError(f"cap_factor must be in (0, 1), got {self.cap_factor}")
        if not 0.0 < self.recovery_share <= 1.0:
            raise ValueError(f"recovery_share must be in (0, 1], got {self.recovery_share}")
        if self.backoff_factor < 1.0 or self.max_backoff < 1.0:
            raise ValueError("backoff_factor and max_backoff must be at least 1")
        if min(self.cooldown_s, self.quiet_s, self.max_age_s) <= 0:
            raise ValueError("cooldown_s, quiet_s and max_age_s must be more than 0")


@dataclass(frozen=True)
class GovernorChange:
    """One cut (``direction`` ``decrease``, ``reason`` ``alert:<metric>``) or recovery step
    (``increase``, ``recovered``). ``previous_limit``/``limit`` are the AIMD limit around
    it (a ceiling cut lowers a limit above it)."""

    direction: str
    reason: str
    previous_ceiling: int
    ceiling: int
    previous_backoff: float
    backoff: float
    previous_limit: int
    limit: int
    alert_id: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Verdict:
    """What one alert did: ``cut`` (with its ``change``), ``held`` (accepted inside a
    cooldown, or with nothing left to cut: it only restarts the quiet period) or why it was
    ignored (``resolved``, ``duplicate``, ``other_gateway``, ``other_metric``, ``stale``)."""

    what: str
    change: GovernorChange | None = None


class AlertGovernor:
    """Applies alerts for ``gateways`` to ``controller``'s ceiling and to a backoff
    multiplier (:attr:`backoff`, read by the retry path). Thread-safe."""

    def __init__(
        self,
        controller: AimdController,
        gateways: Iterable[str],
        settings: GovernorSettings | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ):
        self.settings = settings or GovernorSettings()
        self._controller = controller
        self._gateways = frozenset(gateways)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, datetime] = {}  # alert_id -> window_end, pruned when stale
        self._backoff = 1.0
        self._last_cut: datetime | None = None
        self._quiet_since: datetime | None = None  # last accepted alert or recovery step

    @property
    def backoff(self) -> float:
        """The factor on the retry policy's base delay (1.0: as configured)."""
        return self._backoff

    def on_alert(self, alert: Alert) -> Verdict:
        """Apply one alert."""
        s = self.settings
        with self._lock:
            now = self._clock()
            oldest = now - timedelta(seconds=s.max_age_s)
            self._seen = {k: end for k, end in self._seen.items() if end >= oldest}
            ignored = self._ignore_reason(alert, oldest)
            if ignored:
                return Verdict(ignored)
            self._seen[alert.alert_id] = alert.window_end
            self._quiet_since = now
            cooling = self._last_cut is not None and now - self._last_cut < timedelta(
                seconds=s.cooldown_s
            )
            ceiling = max(
                self._controller.settings.minimum,
                math.floor(self._controller.ceiling * s.cap_factor),
            )
            backoff = min(s.max_backoff, self._backoff * s.backoff_factor)
            if cooling or (ceiling, backoff) == (self._controller.ceiling, self._backoff):
                return Verdict("held")
            self._last_cut = now
            change = self._apply("decrease", f"alert:{alert.metric}", ceiling, backoff, alert)
            return Verdict("cut", change)

    def tick(self) -> GovernorChange | None:
        """One recovery step when the quiet period has passed; call it often."""
        s = self.settings
        with self._lock:
            maximum = self._controller.settings.maximum
            slowed = self._controller.ceiling < maximum or self._backoff > 1.0
            if not slowed or self._quiet_since is None:
                return None
            now = self._clock()
            if now - self._quiet_since < timedelta(seconds=s.quiet_s):
                return None
            self._quiet_since = now
            step = max(1, math.ceil(maximum * s.recovery_share))
            ceiling = min(maximum, self._controller.ceiling + step)
            backoff = max(1.0, self._backoff / s.backoff_factor)
            return self._apply("increase", RECOVERED, ceiling, backoff, None)

    def _ignore_reason(self, alert: Alert, oldest: datetime) -> str:
        if alert.resolved:
            return "resolved"
        if alert.alert_id in self._seen:
            return "duplicate"
        if alert.gateway not in self._gateways:
            return "other_gateway"
        if alert.metric not in self.settings.metrics:
            return "other_metric"
        if alert.window_end < oldest:
            return "stale"
        return ""

    def _apply(
        self, direction: str, reason: str, ceiling: int, backoff: float, alert: Alert | None
    ) -> GovernorChange:
        previous_ceiling, previous_backoff = self._controller.ceiling, self._backoff
        previous_limit = self._controller.limit
        self._controller.set_ceiling(ceiling, reason)
        self._backoff = backoff
        return GovernorChange(
            direction=direction,
            reason=reason,
            previous_ceiling=previous_ceiling,
            ceiling=self._controller.ceiling,
            previous_backoff=previous_backoff,
            backoff=backoff,
            previous_limit=previous_limit,
            limit=self._controller.limit,
            alert_id=None if alert is None else alert.alert_id,
        )
