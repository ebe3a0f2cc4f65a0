"""The command lines of the scheduled jobs, built from ``payrecon.yaml`` and a window.

A scheduler (the Airflow DAGs in ``dags/``) calls these instead of assembling flags, so a
window's run is a pure function of the configuration and the window: the same window gives
the same ``--as-of`` (window end + ``reconcile.as_of_delay``) and so the same run id, which
is what makes retries and backfills overwrite themselves. No secret is ever on a command line:
the jobs read them from the environment they inherit.
"""

from __future__ import annotations

import json
from datetime import datetime

from pipelines.config import PayreconConfig, duration
from transforms.stripe_io import API


def as_of(config: PayreconConfig, window_end: datetime) -> datetime:
    return window_end + duration(config.reconcile.as_of_delay)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stripe_source(source: str, window_start: datetime) -> str:
    """``api``, or the export pattern with ``{date}`` replaced by the window's day."""
    return source if source == API else source.replace("{date}", f"{window_start:%Y-%m-%d}")


def _kafka_flags(config: PayreconConfig) -> list[str]:
    flags = ["--bootstrap-servers", config.broker.bootstrap_servers]
    flags += ["--broker-timeout", str(config.broker.timeout_seconds)]
    for key, value in config.broker.kafka_config.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += ["--kafka-config", f"{key}={text}"]
    return flags


def beam_flags(config: PayreconConfig) -> list[str]:
    """``--runner=...`` and each runner option as ``--key=value`` (Beam's own syntax)."""
    flags = [f"--runner={config.runner.name}"]
    for key, value in config.runner.options.items():
        if value is True:
            flags.append(f"--{key}")
        elif value is not False:
            flags.append(f"--{key}={value}")
    return flags


def reconcile_argv(config: PayreconConfig, start: datetime, end: datetime) -> list[str]:
    """``payrecon reconcile`` flags for the window ``[start, end)``."""
    rec, topics = config.reconcile, config.topics
    argv = [
        *_kafka_flags(config),
        "--window-start", _rfc3339(start), "--window-end", _rfc3339(end),
        "--as-of", _rfc3339(as_of(config, end)),
        "--lateness-margin", rec.lateness_margin,
        "--stripe-source", stripe_source(rec.stripe_source, start),
        "--warehouse", rec.warehouse,
        "--repairs-topic", topics.repairs,
        "--discrepancies-topic", topics.discrepancies,
        "--group-id", rec.group_id,
        "--buckets", str(rec.buckets),
    ]  # fmt: skip
    for topic in topics.ledger:
        argv += ["--ledger-topic", topic]
    if rec.max_discrepancies is not None:
        argv += ["--max-discrepancies", str(rec.max_discrepancies)]
    if rec.staging_dir:
        argv += ["--staging-dir", rec.staging_dir]
    if rec.stripe_api_base:
        argv += ["--stripe-api-base", rec.stripe_api_base]
    mapping = config.ledger_mapping
    if mapping.fields or mapping.constants:
        argv += ["--ledger-field-map", json.dumps(mapping.model_dump(mode="json"))]
    return argv + beam_flags(config)


def repair_argv(config: PayreconConfig, start: datetime, end: datetime) -> list[str]:
    """``payrecon repair`` flags after the reconcile of ``[start, end)``."""
    rep, topics = config.repair, config.topics
    argv = [
        *_kafka_flags(config),
        "--discrepancies-topic", topics.discrepancies,
        "--repairs-topic", topics.repairs,
        "--review-topic", topics.review,
        "--group-id", rep.group_id,
        "--stripe-source", stripe_source(rep.stripe_source, start),
        "--warehouse", config.repair_warehouse,
        "--as-of", _rfc3339(as_of(config, end)),
    ]  # fmt: skip
    if rep.stripe_api_base:
        argv += ["--stripe-api-base", rep.stripe_api_base]
    return argv


def telemetry_argv(config: PayreconConfig) -> list[str]:
    """``payrecon telemetry`` flags: one micro-batch from the group's committed offsets (a
    batch has no window: it reads to each partition's end)."""
    tel, topics = config.telemetry, config.topics
    argv = [
        *_kafka_flags(config),
        "--telemetry-topic", topics.payments_telemetry,
        "--results-topic", topics.payments_results,
        "--stripe-events-topic", topics.stripe_events,
        "--alerts-topic", topics.telemetry_alerts,
        "--group-id", tel.group_id,
        "--warehouse", config.telemetry_warehouse,
        "--lag-groups", "all" if tel.lag_groups is None else ",".join(tel.lag_groups) or "none",
        "--stall-groups", ",".join(tel.stall_groups) or "none",
        "--stall-after", tel.stall_after,
    ]  # fmt: skip
    if config.reconcile.staging_dir:
        argv += ["--staging-dir", config.reconcile.staging_dir]
    return argv + beam_flags(config)


def gateway_argv(config: PayreconConfig) -> list[str]:
    """``payrecon gateway`` flags from the file (``payrecon gateway --config FILE``): the
    broker, the gateway's topics and how it acts on alerts. The gateway runs continuously,
    started by hand or a process manager rather than a DAG, so these go before the flags it
    was started with, and those win (argparse keeps a flag's last value)."""
    gw, topics = config.gateway, config.topics
    return [
        *_kafka_flags(config),
        "--requests-topic", topics.payments_requests,
        "--results-topic", topics.payments_results,
        "--telemetry-topic", topics.payments_telemetry,
        "--alerts-topic", topics.telemetry_alerts,
        "--alerts" if gw.alerts else "--no-alerts",
        "--alert-cooldown", _seconds(gw.alert_cooldown),
        "--alert-quiet", _seconds(gw.alert_quiet),
        "--alert-max-age", _seconds(gw.alert_max_age),
        "--alert-max-backoff", f"{gw.alert_max_backoff:g}",
    ]  # fmt: skip


def _seconds(text: str) -> str:
    return f"{duration(text).total_seconds():g}"
