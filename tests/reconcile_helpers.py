"""A generated day published to the test broker, shared by the reconcile job's tests."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pipelines.publish import publish_lines
from pipelines.synthetic.day import GenerateConfig, generate_day
from tests.kafka_helpers import new_topic

DAY_WINDOW = ["--window-start", "2026-11-20T00:00:00Z", "--window-end", "2026-11-21T00:00:00Z"]


def published_day(
    bootstrap: str,
    out: Path,
    *,
    events: int,
    seed: int,
    discrepancy_rate: float,
    malformed_rate: float = 0.0,
    partitions: int = 3,
) -> dict:
    """Generate 2026-11-20 into ``out`` and publish its ledger to a new topic.

    Returns the topic, the Stripe export path, the answer key and its as-of time.
    """
    summary = generate_day(
        GenerateConfig(
            day=date(2026, 11, 20),
            events=events,
            discrepancy_rate=discrepancy_rate,
            out=out,
            seed=seed,
            malformed_rate=malformed_rate,
        )
    )
    topic = new_topic(bootstrap, partitions=partitions, prefix="ledger")
    with summary.ledger_path.open("rb") as lines:
        assert publish_lines(bootstrap, topic, lines, partitions=partitions).ok
    key = json.loads(summary.answer_key_path.read_text())
    return {
        "topic": topic,
        "stripe": str(summary.stripe_path),
        "key": key,
        "as_of": key["report_as_of"],
    }


def reconcile_argv(
    bootstrap: str,
    day: dict,
    warehouse: Path,
    *,
    discrepancies_topic: str,
    group_id: str,
    buckets: int = 4,
) -> list[str]:
    """``payrecon reconcile`` flags for a published day's window, into a DuckDB file."""
    return [
        "--bootstrap-servers", bootstrap, *DAY_WINDOW,
        "--ledger-topic", day["topic"], "--stripe-source", day["stripe"],
        "--warehouse", f"duckdb:///{warehouse}", "--as-of", day["as_of"],
        "--discrepancies-topic", discrepancies_topic, "--group-id", group_id,
        "--repairs-topic", f"{day['topic']}.repairs",
        "--buckets", str(buckets),
    ]  # fmt: skip


def reconcile_day(bootstrap: str, day: dict, warehouse: Path, *extra: str, buckets: int = 4) -> int:
    """``payrecon reconcile`` of a published day into ``warehouse``, discrepancies to
    ``<topic>.discrepancies``, consumer group named after the warehouse file."""
    from pipelines.reconcile import main

    argv = reconcile_argv(
        bootstrap,
        day,
        warehouse,
        discrepancies_topic=f"{day['topic']}.discrepancies",
        group_id=f"g-{warehouse.name}",
        buckets=buckets,
    )
    return main([*argv, *extra])
