"""The metrics of one window, computed from its additive counts (``transforms.telemetry_counts``).

One ``telemetry_minutely`` row per metric and dimension (``schemas.telemetry``); a metric
whose denominator is zero in the window has no row. Ratios are fractions (0..1), latencies
milliseconds, revenue integer minor units in ``amount`` (money is never a float).
"""

from __future__ import annotations

from typing import Any

from transforms.latency_sketch import quantile

ALL = "*"
QUANTILES = {"latency_p50": 0.50, "latency_p95": 0.95, "latency_p99": 0.99}


def _with_prefix(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: n for k, n in counts.items() if k.startswith(prefix)}


def _row(metric: str, dimension: str, value: float | None, events: int, amount=None) -> dict:
    return {
        "metric": metric,
        "dimension": dimension,
        "value": value,
        "events": events,
        "amount": amount,
    }


def _attempt_metrics(counts: dict[str, int]) -> list[dict]:
    attempts = counts.get("attempts", 0)
    if attempts == 0:
        return []
    failed = _with_prefix(counts, "reason:")
    rows = [
        _row("attempts", ALL, float(attempts), attempts),
        _row("rate_429", ALL, counts.get("http_429", 0) / attempts, attempts),
        _row("error_rate", ALL, sum(failed.values()) / attempts, attempts),
    ]
    rows += [_row("error_rate", code, n / attempts, attempts) for code, n in sorted(failed.items())]
    latencies = _with_prefix(counts, "latency:")
    timed = sum(latencies.values())
    if timed:
        rows += [_row(m, ALL, quantile(latencies, q), timed) for m, q in QUANTILES.items()]
    return rows


def _result_metrics(counts: dict[str, int]) -> list[dict]:
    results = counts.get("results", 0)
    if results == 0:
        return []
    succeeded = counts.get("status:succeeded", 0)
    rows = [
        _row("results", ALL, float(results), results),
        _row("successes", ALL, float(succeeded), results),
        _row("conversion", ALL, succeeded / results, results),
    ]
    declines = _with_prefix(counts, "decline:")
    rows += [
        _row("decline_rate", code, n / results, results) for code, n in sorted(declines.items())
    ]
    per_currency = _with_prefix(counts, "succeeded:")
    revenue = _with_prefix(counts, "revenue:")
    rows += [
        _row("revenue", currency, None, n, revenue.get(currency, 0))
        for currency, n in sorted(per_currency.items())
    ]
    return rows


def _webhook_metrics(counts: dict[str, int]) -> list[dict]:
    received = counts.get("webhooks", 0)
    rows = []
    if received:
        by_type = _with_prefix(counts, "webhook:")
        rows.append(_row("webhook_events", ALL, float(received), received))
        rows += [_row("webhook_events", t, float(n), n) for t, n in sorted(by_type.items())]
    succeeded = counts.get("status:succeeded", 0)
    if succeeded:
        confirmed = counts.get("webhook:payment_intent.succeeded", 0)
        rows.append(_row("webhook_coverage", ALL, confirmed / succeeded, succeeded))
    return rows


def window_metrics(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Every metric of a window with these counts: metric, dimension, value, events, amount.

    ``attempts`` (calls to the gateway), ``rate_429`` and ``error_rate`` (share of calls;
    by reason, and ``*`` for all reasons), ``latency_p50/p95/p99`` (ms, within 1%),
    ``results``, ``successes``, ``conversion`` (succeeded / results), ``decline_rate`` (by
    error code, share of results), ``revenue`` (per currency, minor units in ``amount``).
    ``webhook_events`` (Stripe events received, by type and ``*``) and ``webhook_coverage``
    (``payment_intent.succeeded`` events / succeeded results: near 1 while Stripe's webhooks
    arrive, 0 for a gateway without webhooks or where ``payrecon webhooks`` does not run).
    ``events`` is the denominator: how many calls or results the value is computed from.
    """
    return _attempt_metrics(counts) + _result_metrics(counts) + _webhook_metrics(counts)
