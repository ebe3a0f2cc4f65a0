"""Warehouse tables of ``payrecon telemetry``: windowed payment metrics and conversion.

* ``telemetry_minutely``: one row per event-time window, gateway, metric and dimension.
* ``telemetry_window_counts``: the additive counts each micro-batch contributed to a window,
  from which ``telemetry_minutely`` is recomputed (a window that spans micro-batches, or
  receives late data, gets the same metrics as if one run had read all of its data).
* ``telemetry_request_partials``: the streaming job's partial request rows, before the
  finish step merges them into ``fact_payment_requests``.
* ``fact_payment_requests``: one row per payment request the gateway worked on: its cohort
  (from the telemetry attempts) and its outcome (from its payment result).
* ``payment_conversion``: attempts vs successes per UTC day and cohort, a rollup of
  ``fact_payment_requests``.
* ``telemetry_anomalies``: the minute windows the anomaly model (``transforms.anomaly``)
  found anomalous, the cohorts whose conversion dropped significantly
  (``transforms.cohort_conversion``) and the stalled consumers
  (``transforms.consumer_stall``), with the evidence and a suggested action.
* ``telemetry_consumer_lag``: each consumer group's lag per partition, measured by every
  telemetry run.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

_WINDOW = [
    field("window_start", UTC_MICROS, "Start of the event-time window, inclusive."),
    field(
        "window_end",
        UTC_MICROS,
        "End of the window, exclusive: 1 minute after the start for the fixed windows, "
        "1 hour for the sliding ones (which start every 5 minutes).",
    ),
    field("gateway", pa.string(), "The gateway (stripe, voucher ...), or * for all gateways."),
]

TELEMETRY_MINUTELY_V1 = versioned(
    "telemetry_minutely",
    1,
    [
        *_WINDOW,
        field(
            "window_seconds",
            pa.int64(),
            "window_end - window_start in seconds: 60 for the minute windows, 3600 for the "
            "sliding hours.",
        ),
        field(
            "metric",
            pa.string(),
            "attempts, rate_429, error_rate, latency_p50, latency_p95, latency_p99, results, "
            "successes, conversion, decline_rate, revenue, webhook_events or "
            "webhook_coverage.",
        ),
        field(
            "dimension",
            pa.string(),
            "The breakdown: the reason (error_rate), error code (decline_rate), currency "
            "(revenue) or Stripe event type (webhook_events); * for the metric as a whole.",
        ),
        field(
            "value",
            pa.float64(),
            "The metric: a count, a fraction between 0 and 1 (rates, conversion) or "
            "milliseconds (latencies); null for revenue (see amount).",
            nullable=True,
        ),
        field(
            "events",
            pa.int64(),
            "How many gateway calls (attempt metrics), payment results (result metrics and "
            "webhook_coverage) or Stripe events (webhook_events) the value is computed from.",
        ),
        field(
            "amount",
            pa.int64(),
            "revenue only: the succeeded payments' amount, integer minor units of the "
            "dimension's currency.",
            nullable=True,
        ),
        field("run_id", pa.string(), "The telemetry run that last computed the row."),
    ],
    doc="Payment metrics per event-time window, gateway, metric and dimension.",
)

_LOADED_AT = field(
    "loaded_at",
    UTC_MICROS,
    "When the streaming job loaded the row; `payrecon telemetry --finish-only` finishes what "
    "was loaded since its last run. Null for rows of micro-batches, which finish their own.",
    nullable=True,
)

TELEMETRY_WINDOW_COUNTS_V1 = versioned(
    "telemetry_window_counts",
    1,
    [
        *_WINDOW,
        field(
            "component",
            pa.string(),
            "What is counted: attempts, outcome:<o>, reason:<r>, http_429, latency:<bucket>, "
            "results, status:<s>, decline:<code>, succeeded:<currency>, revenue:<currency>, "
            "webhooks, webhook:<type>.",
        ),
        field(
            "batch_id",
            pa.string(),
            "The micro-batch that counted it: the telemetry run id (a retry of a batch "
            "replaces its counts); streaming: <stream id>/<pane index> of the window's pane "
            "(a retried pane replaces its counts).",
        ),
        field(
            "count",
            pa.int64(),
            "The count; for revenue:<currency>, the amount in the currency's smallest unit.",
        ),
        _LOADED_AT,
    ],
    doc="Additive counts per window and micro-batch (or streaming pane), the state "
    "telemetry_minutely is recomputed from.",
)

FACT_PAYMENT_REQUESTS_V1 = versioned(
    "fact_payment_requests",
    1,
    [
        field("request_id", pa.string(), "The payment request (UUID)."),
        field(
            "day",
            pa.date32(),
            "UTC day of the request's first gateway call (of its result when no call was seen).",
        ),
        field("order_id", pa.string(), "The order paid for.", nullable=True),
        field("gateway", pa.string(), "The gateway that paid it.", nullable=True),
        field(
            "payment_method_type",
            pa.string(),
            "Cohort: card, konbini ... (from telemetry).",
            nullable=True,
        ),
        field(
            "country", pa.string(), "Cohort: ISO 3166-1 alpha-2 (from telemetry).", nullable=True
        ),
        field(
            "card_brand",
            pa.string(),
            "Cohort: visa, mastercard ... (from telemetry).",
            nullable=True,
        ),
        field("amount", pa.int64(), "Amount requested, minor units.", nullable=True),
        field("currency", pa.string(), "ISO 4217 code, lowercase.", nullable=True),
        field(
            "status",
            pa.string(),
            "succeeded, requires_action, processing or failed (its payment result); "
            "dead_lettered or gave_up (no result: the gateway refused it, or retries ran "
            "out); null while no outcome is known.",
            nullable=True,
        ),
        field(
            "error_code", pa.string(), "The result's error code (card_declined ...).", nullable=True
        ),
        field(
            "calls",
            pa.int64(),
            "Gateway calls seen for it (the highest attempt number).",
            nullable=True,
        ),
        field("first_call_at", UTC_MICROS, "Its first gateway call seen (UTC).", nullable=True),
        field("decided_at", UTC_MICROS, "When its result was decided (UTC).", nullable=True),
        field("run_id", pa.string(), "The telemetry run that last updated the row."),
    ],
    doc="One row per payment request seen in payments.telemetry or payments.results.",
)

TELEMETRY_REQUEST_PARTIALS_V1 = versioned(
    "telemetry_request_partials",
    1,
    [
        *(f for f in FACT_PAYMENT_REQUESTS_V1 if f.name not in ("day", "run_id")),
        field(
            "partial_id",
            pa.string(),
            "Hash of the row's values: the same partial row loaded twice (a retried bundle) "
            "is one row.",
        ),
        field(
            "loaded_at",
            UTC_MICROS,
            "When the streaming job loaded the row; `payrecon telemetry --finish-only` merges "
            "what was loaded since its last run.",
            nullable=True,
        ),
    ],
    doc="What the streaming job knows of a request from one batch of its messages, merged "
    "into fact_payment_requests by `payrecon telemetry --finish-only`.",
)

_CONVERSION_DROPS = [
    field(
        "significant_drop",
        pa.bool_(),
        "True when a minute window of that day alerted a significant conversion drop of the "
        "cohort (telemetry_anomalies, metric cohort_conversion); false otherwise, including "
        "cohorts too small to be tested.",
        nullable=True,
    ),
    field(
        "first_drop_at",
        UTC_MICROS,
        "Start of the day's first minute window that alerted a drop of the cohort.",
        nullable=True,
    ),
    field(
        "baseline_conversion",
        pa.float64(),
        "The cohort's conversion before its most significant drop of the day (its decided "
        "requests of the two hours before, telemetry_anomalies.expected).",
        nullable=True,
    ),
    field(
        "p_value",
        pa.float64(),
        "One-sided p-value of the day's most significant drop (telemetry_anomalies.model).",
        nullable=True,
    ),
]
CONVERSION_DROP_COLUMNS = [f.name for f in _CONVERSION_DROPS]

PAYMENT_CONVERSION_V1 = versioned(
    "payment_conversion",
    1,
    [
        field("day", pa.date32(), "UTC day of the requests (fact_payment_requests.day)."),
        field("country", pa.string(), "Cohort: ISO 3166-1 alpha-2 country, ? when unknown."),
        field("payment_method_type", pa.string(), "Cohort: card, konbini ..., ? when unknown."),
        field("card_brand", pa.string(), "Cohort: visa, mastercard ..., ? when unknown."),
        field("attempts", pa.int64(), "Payment requests of the cohort that day."),
        field("successes", pa.int64(), "Of those, the ones whose payment succeeded."),
        field(
            "failures",
            pa.int64(),
            "Failed (declined, canceled), dead-lettered or given up.",
        ),
        field(
            "pending",
            pa.int64(),
            "Waiting: requires_action, processing, or no outcome yet.",
        ),
        field(
            "conversion",
            pa.float64(),
            "successes / attempts, between 0 and 1; null when no request is left in the "
            "cohort that day (its requests turned out to belong to another cohort or day).",
            nullable=True,
        ),
        field("run_id", pa.string(), "The telemetry run that last computed the row."),
        *_CONVERSION_DROPS,
    ],
    doc="Attempts vs successes per UTC day and cohort (country, payment method, card brand), "
    "and the significant conversion drops of the cohort that day.",
)

TELEMETRY_ANOMALIES_V1 = versioned(
    "telemetry_anomalies",
    1,
    [
        field(
            "window_start",
            UTC_MICROS,
            "Start of the 1-minute window scored, inclusive; for consumer_stalled, the stall "
            "start (the first measurement that saw messages waiting at the stuck offset).",
        ),
        field(
            "metric",
            pa.string(),
            "rate_429, error_rate, latency_p95, conversion, webhook_coverage "
            "(telemetry_minutely); cohort_conversion (one cohort's conversion, "
            "transforms.cohort_conversion); consumer_stalled (a consumer group that stopped "
            "committing with messages waiting).",
        ),
        field(
            "dims",
            pa.string(),
            "The series: gateway=<gateway> (* for all gateways together); for "
            "cohort_conversion country=<c>,payment_method_type=<m>,card_brand=<b>; for "
            "consumer_stalled group=<g>,topic=<t>,partition=<p>.",
        ),
        field(
            "value",
            pa.float64(),
            "The window's value (telemetry_minutely.value); for cohort_conversion the "
            "cohort's conversion over its recent minutes (successes / decided requests); for "
            "consumer_stalled the messages waiting (lag).",
        ),
        field(
            "expected",
            pa.float64(),
            "The median of the baseline: the same metric and dims at that time of week or "
            "day over the last 28 days (see model); for cohort_conversion the cohort's "
            "conversion over the two hours before its recent minutes.",
        ),
        field(
            "mad",
            pa.float64(),
            "The baseline's median absolute deviation; for cohort_conversion the test's "
            "standard error of the difference (arcsine_z: of the angles 2 asin(sqrt p), "
            "sqrt(1/events + 1/baseline_points)).",
        ),
        field(
            "score",
            pa.float64(),
            "Robust z-score: (value - expected) / max(1.4826 * mad, the metric's noise "
            "floor); for cohort_conversion the z of the test (see model); for "
            "consumer_stalled how long it has been stalled in multiples of --stall-after "
            "(expected and mad 0). Negative below the expected value.",
        ),
        field("direction", pa.string(), "up or down: the way the metric went wrong."),
        field(
            "severity",
            pa.string(),
            "warning (score 5 or more in the bad direction) or critical (10 or more); for "
            "cohort_conversion a significant drop of 5 points or more (critical: 15).",
        ),
        field("suggested_action", pa.string(), "What to do about it, for on-call."),
        field(
            "model",
            pa.string(),
            "The baseline used: seasonal_weekly (weekday and hour), seasonal_daily (hour of "
            "day) or global (cold start: all the history there is); for cohort_conversion "
            "<test>_<k>m, the cohort's last k minutes tested with arcsine_z (two proportions "
            "on the arcsine scale) or two_proportion_z (the pooled z-test, before it); "
            "stalled_offset for consumer_stalled.",
        ),
        field(
            "baseline_points",
            pa.int64(),
            "How many past windows the baseline holds; for cohort_conversion how many decided "
            "requests; for consumer_stalled how many lag measurements saw the group stuck.",
        ),
        field(
            "alert_id",
            pa.string(),
            "The alert published to telemetry.alerts: a hash of window, metric and dims.",
        ),
        field("detected_at", UTC_MICROS, "When the telemetry run scored the window."),
        field("run_id", pa.string(), "The telemetry run that scored the window last."),
        field(
            "p_value",
            pa.float64(),
            "cohort_conversion: the one-sided p-value of the drop (the test of model).",
            nullable=True,
        ),
        field(
            "tests",
            pa.int64(),
            "cohort_conversion: the tests made in that window, all cohorts and spans (the "
            "drop is significant when p_value * tests <= alpha, 1e-7 by default: Bonferroni).",
            nullable=True,
        ),
        field(
            "events",
            pa.int64(),
            "cohort_conversion: the decided requests of the cohort's recent minutes.",
            nullable=True,
        ),
        field(
            "resolved_at",
            UTC_MICROS,
            "When a later run found it normal again (late data made the window normal, the "
            "stalled group committed again) and published the alert as resolved: that run's "
            "detection time, as detected_at is for an alert it opens, for every metric (a "
            "stall's is not its lag measurement's measured_at); null while it is open. The "
            "evidence columns keep what was seen when it alerted.",
            nullable=True,
        ),
    ],
    doc="Anomalous telemetry windows: what was seen, what was expected and what to do.",
)

TELEMETRY_CONSUMER_LAG_V1 = versioned(
    "telemetry_consumer_lag",
    1,
    [
        field(
            "measured_at",
            UTC_MICROS,
            "When the telemetry run read the offsets (processing time, UTC).",
        ),
        field("group_id", pa.string(), "The consumer group."),
        field("topic", pa.string(), "A topic the group has committed offsets on."),
        field("partition", pa.int64(), "The partition."),
        field(
            "committed_offset",
            pa.int64(),
            "The group's committed offset (the next message it will read); null if it never "
            "committed on this partition.",
            nullable=True,
        ),
        field(
            "end_offset",
            pa.int64(),
            "The partition's end: the offset the next message written will get.",
        ),
        field(
            "lag",
            pa.int64(),
            "Messages waiting for the group: end_offset - committed_offset (from the first "
            "retained offset when it never committed or retention passed it).",
        ),
        field("run_id", pa.string(), "The telemetry run that measured it."),
    ],
    doc="Consumer lag per group and partition, one row per telemetry run that measured it.",
)
