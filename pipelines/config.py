"""``payrecon.yaml``: one file that says how every job runs; secrets come from the environment.

The file holds what an operator decides (broker, topic names, windows, thresholds, where the
warehouse is, how ledger events of another shape map onto ledger event v1, the Beam runner);
the Stripe key and warehouse credentials are environment variables (:data:`SECRET_ENV`) and a
file that carries one is refused, so nothing secret is ever in a file, a DAG, a command line
or a log. :func:`load_config` returns a validated :class:`PayreconConfig` or raises
:class:`ConfigError` listing every problem as ``key.path: got VALUE; allowed: ...``.
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transforms.ledger_mapping import V1_FIELDS, mapping_problems
from transforms.stripe_io import API, API_KEY_ENV

# Environment variables that hold secrets: read by the jobs, never written anywhere.
SECRET_ENV = (
    API_KEY_ENV,
    "STRIPE_WEBHOOK_SECRET",
    "SNOWFLAKE_PASSWORD",
    "SNOWFLAKE_PRIVATE_KEY_FILE_PWD",
    "SNOWFLAKE_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
# librdkafka settings that are credentials: refused in the file.
_SECRET_KAFKA_KEYS = re.compile(r"(password|secret|token|\.key$|\.pem$)", re.IGNORECASE)
_DURATION = re.compile(r"^\d+\s*[smhd]$")
_WAREHOUSE_SCHEMES = ("duckdb", "bigquery", "snowflake")


class ConfigError(ValueError):
    """An invalid configuration file; ``problems`` are one line each."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def duration(text: str) -> timedelta:
    """``30s``, ``10m``, ``1h``, ``2d``."""
    number, unit = int(text[:-1]), text[-1]
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: number})


def _check_duration(value: str) -> str:
    if not isinstance(value, str) or not _DURATION.match(value.strip()):
        raise ValueError("a duration such as 30s, 10m, 1h or 1d")
    return value.strip()


def _check_positive_duration(value: str) -> str:
    value = _check_duration(value)
    if duration(value) <= timedelta(0):
        raise ValueError("a duration such as 1m, 5m or 15m, more than zero")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Broker(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    kafka_config: dict[str, str | int | bool] = Field(default_factory=dict)
    timeout_seconds: float = Field(30.0, gt=0)


class Topics(_Section):
    """Topic names; the defaults are DESIGN.md's."""

    ledger: list[str] = Field(default_factory=lambda: ["ledger.transactions"], min_length=1)
    repairs: str = "ledger.repairs"
    stripe_events: str = "stripe.events"
    orders_status: str = "orders.status"
    payments_requests: str = "payments.requests"
    payments_results: str = "payments.results"
    payments_telemetry: str = "payments.telemetry"
    discrepancies: str = "recon.discrepancies"
    review: str = "recon.review"
    telemetry_alerts: str = "telemetry.alerts"


def _check_warehouse(url: str) -> str:
    parts = urlparse(url)
    if parts.scheme not in _WAREHOUSE_SCHEMES:
        raise ValueError(
            "duckdb:///path.duckdb, bigquery://project/dataset or "
            "snowflake://account/database/schema"
        )
    if parts.password is not None:
        raise ValueError(
            "a URL without a password (credentials come from the environment, docs/warehouses.md)"
        )
    return url


def _check_stripe_source(value: str) -> str:
    if value != API and not value.strip():
        raise ValueError("api, or an itemized export file or pattern ({date} is the window's day)")
    return value


class Reconcile(_Section):
    window: str = "1d"
    lateness_margin: str = "10m"
    # The run's --as-of is its window end plus this delay, the same on every retry and
    # backfill of that window (so the same run id); Stripe funds still pending then are pending.
    as_of_delay: str = "0s"
    stripe_source: str = API
    stripe_api_base: str | None = None
    buckets: int = Field(16, ge=1, le=4096)
    max_discrepancies: int | None = Field(None, ge=0)
    warehouse: str = "duckdb:///payrecon.duckdb"
    group_id: str = "payrecon-reconcile"
    staging_dir: str | None = None

    _durations = field_validator("window", "lateness_margin", "as_of_delay")(_check_duration)
    _warehouse = field_validator("warehouse")(_check_warehouse)
    _stripe = field_validator("stripe_source")(_check_stripe_source)

    @field_validator("window")
    @classmethod
    def _window_divides_a_day(cls, value: str) -> str:
        length = duration(value)
        if length <= timedelta(0) or timedelta(days=1) % length:
            raise ValueError("a window that divides a day: 1d, 12h, 6h, 1h, 30m, ...")
        return value


class Repair(_Section):
    enabled: bool = True
    stripe_source: str = API
    stripe_api_base: str | None = None
    group_id: str = "payrecon-repair"
    warehouse: str | None = None  # default: reconcile.warehouse

    _warehouse = field_validator("warehouse")(lambda v: v if v is None else _check_warehouse(v))
    _stripe = field_validator("stripe_source")(_check_stripe_source)


# The continuous consumers, whose stalls telemetry alerts on: `payrecon gateway` and the Stripe
# events consumer commit every second while they have work.
STALL_GROUPS = ("payrecon-gateway", "payrecon-stripe-events")


class Telemetry(_Section):
    """The telemetry micro-batches (``payrecon telemetry``, ``dags/payrecon_telemetry.py``).

    Its topics are ``topics.payments_telemetry``, ``topics.payments_results`` and
    ``topics.telemetry_alerts``; off by default, because it needs the payment gateway's
    topics (``payrecon gateway``)."""

    enabled: bool = False
    interval: str = "5m"  # one micro-batch per DAG run, a DAG run every interval
    group_id: str = "payrecon-telemetry"
    warehouse: str | None = None  # default: reconcile.warehouse
    lag_groups: list[str] | None = None  # None: every consumer group the broker lists
    stall_groups: list[str] = Field(default_factory=lambda: list(STALL_GROUPS))
    stall_after: str = "2m"

    _warehouse = field_validator("warehouse")(lambda v: v if v is None else _check_warehouse(v))
    _positive = field_validator("interval", "stall_after")(_check_positive_duration)


class Gateway(_Section):
    """How ``payrecon gateway --config FILE`` acts on the telemetry job's alerts (read from
    ``topics.telemetry_alerts``). Each key is the gateway flag of the same name (``alerts:
    false`` is ``--no-alerts``; durations become the flags' seconds); a flag given on the
    command line wins over the file."""

    alerts: bool = True
    alert_cooldown: str = "1m"
    alert_quiet: str = "2m"
    alert_max_age: str = "5m"
    alert_max_backoff: float = Field(8.0, ge=1)

    _positive = field_validator("alert_cooldown", "alert_quiet", "alert_max_age")(
        _check_positive_duration
    )


class LedgerMapping(_Section):
    """Source field (dotted path) -> ledger event v1 field, and v1 fields set to constants."""

    fields: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)


class Runner(_Section):
    """The Beam runner and its options (``--key=value`` each), e.g. DataflowRunner with
    project, region, temp_location and setup_file."""

    name: Literal["DirectRunner", "DataflowRunner", "FlinkRunner", "PortableRunner"] = (
        "DirectRunner"
    )
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Schedule(_Section):
    """How the Airflow DAGs run: the first window, catch-up for backfills, retries."""

    start_date: date = date(2026, 1, 1)
    catchup: bool = True
    retries: int = Field(2, ge=0, le=20)
    retry_delay: str = "5m"
    max_active_runs: int = Field(1, ge=1)

    _durations = field_validator("retry_delay")(_check_duration)


class PayreconConfig(_Section):
    broker: Broker = Field(default_factory=Broker)
    topics: Topics = Field(default_factory=Topics)
    reconcile: Reconcile = Field(default_factory=Reconcile)
    repair: Repair = Field(default_factory=Repair)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    gateway: Gateway = Field(default_factory=Gateway)
    ledger_mapping: LedgerMapping = Field(default_factory=LedgerMapping)
    runner: Runner = Field(default_factory=Runner)
    schedule: Schedule = Field(default_factory=Schedule)

    @property
    def repair_warehouse(self) -> str:
        return self.repair.warehouse or self.reconcile.warehouse

    @property
    def telemetry_warehouse(self) -> str:
        return self.telemetry.warehouse or self.reconcile.warehouse


def load_config(path: str | Path) -> PayreconConfig:
    """The validated configuration in ``path`` (YAML); :class:`ConfigError` lists problems."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(source, [f"{where}not valid YAML ({problem})"]) from None
    return parse_config(raw if raw is not None else {}, source=source)


def parse_config(raw: Any, *, source: str = "config") -> PayreconConfig:
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"got {type(raw).__name__}; allowed: a mapping of sections"])
    problems = _credential_problems(raw) + _mapping_problems(raw)
    try:
        config = PayreconConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [_problem(e) for e in exc.errors()]
    if problems:
        raise ConfigError(source, problems)
    return config


def _section(raw: dict, *path: str) -> dict:
    for key in path:
        raw = raw.get(key) if isinstance(raw, dict) else None  # type: ignore[assignment]
    return raw if isinstance(raw, dict) else {}


def _credential_problems(raw: dict) -> list[str]:
    return [
        f"broker.kafka_config.{key}: got '***'; allowed: non-secret librdkafka settings "
        "(credentials are never read from the file)"
        for key in _section(raw, "broker", "kafka_config")
        if _SECRET_KAFKA_KEYS.search(str(key))
    ]


def _mapping_problems(raw: dict) -> list[str]:
    fields = _section(raw, "ledger_mapping", "fields")
    constants = _section(raw, "ledger_mapping", "constants")
    if not all(isinstance(v, str) for v in fields.values()):
        return []  # the type check names the value
    return [f"ledger_mapping.{p}" for p in mapping_problems(fields, constants)]


_ALLOWED = {
    "greater_than_equal": lambda c: f"a number >= {c['ge']}",
    "greater_than": lambda c: f"a number > {c['gt']}",
    "less_than_equal": lambda c: f"a number <= {c['le']}",
    "literal_error": lambda c: f"one of {c['expected']}",
    "int_parsing": lambda c: "a whole number",
    "int_type": lambda c: "a whole number",
    "float_parsing": lambda c: "a number",
    "bool_parsing": lambda c: "true or false",
    "bool_type": lambda c: "true or false",
    "string_type": lambda c: "a string",
    "list_type": lambda c: "a list",
    "dict_type": lambda c: "a mapping",
    "model_type": lambda c: "a mapping",
    "too_short": lambda c: f"at least {c.get('min_length')} item(s)",
    "date_from_datetime_parsing": lambda c: "a date such as 2026-11-20",
    "date_parsing": lambda c: "a date such as 2026-11-20",
    "date_type": lambda c: "a date such as 2026-11-20",
}


def _problem(error: Any) -> str:
    path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see payrecon.example.yaml"
        return f"{path}: unknown key; allowed: {allowed}"
    explain = _ALLOWED.get(error["type"])
    if explain is not None:
        allowed = explain(error.get("ctx") or {})
    else:
        allowed = str(error["msg"]).removeprefix("Value error, ")
    return f"{path}: got {_shown(error.get('input'))}; allowed: {allowed}"


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return type(value).__name__
    if isinstance(value, str):
        return repr(mask_url(value))
    return repr(value)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = PayreconConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def mask_url(text: str) -> str:
    """``scheme://user:***@host/...`` for a URL that carries a password; else unchanged."""
    parts = urlparse(text) if "://" in text else None
    if parts is None or parts.password is None:
        return text
    return text.replace(f":{parts.password}@", ":***@", 1)


def secret_values() -> list[str]:
    """The secret environment variables' values set here (to check that none leaks)."""
    return [v for v in (os.environ.get(name) for name in SECRET_ENV) if v]


def secrets_status() -> dict[str, str]:
    """Each secret variable as ``set (masked)`` or ``not set``; never its value."""
    return {name: "set (masked)" if os.environ.get(name) else "not set" for name in SECRET_ENV}


__all__ = ["V1_FIELDS", "ConfigError", "PayreconConfig", "duration", "load_config"]
