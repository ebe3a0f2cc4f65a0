"""One ``payrecon repair`` run: read the new discrepancies, ask Stripe, repair or hand over.

The run reads ``recon.discrepancies`` from its consumer group's committed offsets to the
end, as planned offset ranges (a rerun after a crash reads the same messages again). Per
discrepancy id (a rerun of a reconcile window republishes the same ids: the last copy
counts), it fetches what Stripe says about the object and follows
:func:`pipelines.repair_rules.plan_repair`. Then, in this order, so that a crash anywhere
leaves nothing half-done that a rerun would not redo identically:

1. repair events to ``ledger.repairs`` and review records to ``recon.review``, keyed and
   with deterministic ids (a repeat publishes the same records; consumers dedupe by id);
   discrepancies that could not be handled (unreadable, or Stripe unavailable after the
   client's retries) to ``recon.discrepancies.dlq`` with a reason;
2. ``recon_repairs`` and ``recon_health`` rows, upserted, in one warehouse transaction;
3. the consumer group's offsets, forward only.

Counts add up: discrepancy messages in = repaired + sent for review + dead-lettered +
superseded copies of an id.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from pipelines.publish import publish_lines
from pipelines.repair_rules import RepairPlan, plan_repair
from pipelines.run_health import health_row, record_failure, unplanned_run_id
from schemas.dead_letter import Reason, dead_letter_headers, dlq_topic
from schemas.tables import TABLES
from transforms.kafka_admin import ensure_topics
from transforms.kafka_offsets import BrokerUnavailable, ReadPlan, commit_offsets, plan_read
from transforms.kafka_ranges import consume_plan
from transforms.repair_truth import StripeTruth, TruthSource
from transforms.stripe_api import StripeRequestError
from transforms.warehouse import WarehouseError, open_warehouse

JOB = "repair"
# Dead-letter reason of a discrepancy whose object Stripe could not be asked about (after
# the client's retries): transient, so replaying it later (payrecon dlq) is the fix.
STRIPE_UNAVAILABLE = "stripe_unavailable"


@dataclass(frozen=True)
class RepairRequest:
    bootstrap_servers: str
    kafka_overrides: dict
    broker_timeout: float
    discrepancies_topic: str
    repairs_topic: str
    review_topic: str
    group_id: str
    warehouse: str
    stripe_source: str


@dataclass
class Outcome:
    discrepancy: dict  # empty when the message was unreadable
    message: Any  # the Kafka message it came in (its bytes go to the DLQ as they were)
    plan: RepairPlan | None = None
    dead_reason: str | None = None
    dead_detail: str = ""


def run_repair(request: RepairRequest, truth: TruthSource) -> int:
    started = datetime.now(UTC)
    run_id = unplanned_run_id(JOB, started)
    try:
        ensure_topics(
            request.bootstrap_servers,
            [request.discrepancies_topic, request.repairs_topic, request.review_topic,
             dlq_topic(request.discrepancies_topic)],
            overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )  # fmt: skip
        plan = plan_read(
            request.bootstrap_servers,
            [request.discrepancies_topic],
            group_id=request.group_id,
            consumer_overrides=request.kafka_overrides,
            timeout=request.broker_timeout,
        )
        run_id = "rep_" + hashlib.sha256(plan.to_json().encode()).hexdigest()[:16]
        _say(f"run {run_id}: {plan.total_offsets:,} discrepancy messages to handle")
        latest, unreadable, messages = _read(request, plan)
        outcomes = [_handle(d, msg, truth) for d, msg in latest.values()] + unreadable
        _publish(request, outcomes)
        finished = datetime.now(UTC)
        _say(f"loading the warehouse {request.warehouse.split('?')[0]}")
        _load(request, run_id, started, finished, outcomes, messages, plan)
        _say(f"committing the offsets of consumer group {request.group_id}")
        commit_offsets(
            request.bootstrap_servers,
            request.group_id,
            plan.ranges,
            request.kafka_overrides,
            forward_only=True,
            timeout=request.broker_timeout,
        )
        print(_summary(run_id, messages, outcomes))
        return 0
    except WarehouseError as exc:
        print(f"payrecon repair: {exc}", file=sys.stderr)
        return 3
    except (BrokerUnavailable, _NotAcknowledged) as exc:
        print(f"payrecon repair: {exc}", file=sys.stderr)
        record_failure(
            request.warehouse, job=JOB, run_id=run_id, window=(started, started),
            started_at=started, exit_code=3, error=str(exc),
        )  # fmt: skip
        return 3


class _NotAcknowledged(RuntimeError):
    """The broker did not acknowledge every record: nothing is committed, rerun to retry."""


def _read(request: RepairRequest, plan: ReadPlan):
    latest: dict[str, tuple[dict, Any]] = {}
    unreadable: list[Outcome] = []
    messages = 0
    for batch in consume_plan(
        request.bootstrap_servers,
        plan,
        request.kafka_overrides,
        idle_timeout=request.broker_timeout,
    ):
        for msg in batch:
            messages += 1
            try:
                d = json.loads(msg.value())
                _ = d["discrepancy_id"], d["kind"], d["run_id"]
            except (TypeError, ValueError) as exc:
                unreadable.append(_unreadable(msg, Reason.NOT_JSON, f"not JSON: {exc}"))
                continue
            except KeyError as exc:
                unreadable.append(_unreadable(msg, Reason.MISSING_FIELD, f"no field {exc}"))
                continue
            latest[d["discrepancy_id"]] = (d, msg)  # in offset order: the last copy wins
    return latest, unreadable, messages


def _unreadable(msg, reason: Reason, detail: str) -> Outcome:
    return Outcome({}, msg, dead_reason=reason.value, dead_detail=detail)


def _handle(d: dict, msg: Any, source: TruthSource) -> Outcome:
    try:
        if d["kind"] == "duplicate_charge" and hasattr(source, "fetch_order") and d.get("order_id"):
            truth: StripeTruth = source.fetch_order(d["order_id"])
        else:
            truth = source.fetch(d.get("stripe_object_id") or "")
    except (StripeRequestError, ValueError) as exc:
        detail = str(exc).splitlines()[0]
        return Outcome(d, msg, dead_reason=STRIPE_UNAVAILABLE, dead_detail=detail)
    return Outcome(d, msg, plan=plan_repair(d, truth))


def _publish(request: RepairRequest, outcomes: list[Outcome]) -> None:
    events = [e for o in outcomes if o.plan for e in o.plan.events]
    reviews = [o.plan.review for o in outcomes if o.plan and o.plan.review]
    dead = [o for o in outcomes if o.dead_reason]
    _say(f"publishing {len(events):,} repair events, {len(reviews):,} reviews and "
         f"{len(dead):,} dead letters")  # fmt: skip
    for topic, lines, key, stamp in (
        (request.repairs_topic, [json.dumps(e, sort_keys=True) for e in events], "order_id",
         "occurred_at"),
        (request.review_topic, [json.dumps(r, sort_keys=True) for r in reviews],
         "discrepancy_id", None),
    ):  # fmt: skip
        if not lines:
            continue
        result = publish_lines(
            request.bootstrap_servers, topic, lines, key_field=key, timestamp_field=stamp,
            kafka_config=request.kafka_overrides, connect_timeout=request.broker_timeout,
        )  # fmt: skip
        if not result.ok:
            raise _NotAcknowledged(
                f"{result.failed} of {result.produced} records to {topic} not acknowledged; "
                "nothing committed, rerun to retry"
            )
    _dead_letter(request, dead)


def _dead_letter(request: RepairRequest, dead: list[Outcome]) -> None:
    """The discrepancy messages it could not handle, byte for byte, to the topic's DLQ with
    the reason and coordinates (``payrecon dlq replay`` sends them back once fixed)."""
    from confluent_kafka import Producer

    from transforms.kafka_config import producer_config

    if not dead:
        return
    producer = Producer(producer_config(request.bootstrap_servers, request.kafka_overrides))
    failed: list = []
    now = datetime.now(UTC)
    for o in dead:
        msg = o.message
        headers = dead_letter_headers(
            reason=o.dead_reason or "", detail=o.dead_detail, topic=msg.topic(),
            partition=msg.partition(), offset=msg.offset(), job=JOB, dead_lettered_at=now,
            timestamp_ms=msg.timestamp()[1],
        )  # fmt: skip
        producer.produce(
            dlq_topic(request.discrepancies_topic), msg.value(), key=msg.key(), headers=headers,
            on_delivery=lambda err, _msg: failed.append(err) if err else None,
        )  # fmt: skip
    left = producer.flush(request.broker_timeout)
    if left or failed:
        raise _NotAcknowledged(f"{left + len(failed)} dead letters not acknowledged")


def _load(request, run_id, started, finished, outcomes, messages, plan: ReadPlan) -> None:
    rows = []
    for o in outcomes:
        d = o.discrepancy
        if not d:
            continue  # unreadable: no id to key a row by; counted in recon_health
        action = o.plan.action if o.plan else "dead_lettered"
        rows.append(
            {
                "discrepancy_id": d["discrepancy_id"],
                "kind": d["kind"],
                "stripe_object_id": d.get("stripe_object_id"),
                "order_id": d.get("order_id"),
                "action": action,
                "reason": o.plan.reason if o.plan else f"{o.dead_reason}: {o.dead_detail}",
                "repair_event_ids": json.dumps(
                    [e["event_id"] for e in o.plan.events] if o.plan else []
                ),
                "stripe_source": request.stripe_source,
                "repair_run_id": run_id,
                "repaired_at": finished,
            }
        )
    dead = [o for o in outcomes if o.dead_reason]
    health = health_row(
        job=JOB, run_id=run_id, window=(started, finished), started_at=started,
        finished_at=finished, status="succeeded", exit_code=0,
        counts={
            "records_in": messages, "records_out": messages - len(dead),
            "dead_letters": len(dead),
            "dead_letters_by_reason": dict(Counter(o.dead_reason for o in dead)),
            "offsets": plan.to_json(),
        },
    )  # fmt: skip
    repairs = TABLES["recon_repairs"]
    with open_warehouse(request.warehouse) as warehouse:
        warehouse.load(
            {
                repairs: pa.Table.from_pylist(rows, schema=repairs.schema),
                TABLES["recon_health"]: health,
            }
        )


def _summary(run_id: str, messages: int, outcomes: list[Outcome]) -> str:
    actions = Counter(o.plan.action if o.plan else "dead_lettered" for o in outcomes)
    handled = sum(actions.values())
    lines = [
        "",
        f"repair run {run_id}",
        f"discrepancy messages   {messages:>8,}   (distinct discrepancies and unreadable "
        f"messages: {handled:,}; earlier copies of an id: {messages - handled:,})",
        f"  repaired             {actions['repaired']:>8,}   ledger events to ledger.repairs",
        f"  sent for review      {actions['review']:>8,}   to recon.review",
        f"  dead-lettered        {actions['dead_lettered']:>8,}",
    ]
    by_kind = Counter((o.discrepancy.get("kind", "?"), o.plan.action if o.plan else "dead")
                      for o in outcomes)  # fmt: skip
    for (kind, action), n in sorted(by_kind.items()):
        lines.append(f"    {kind:<22}{action:<14}{n:>6,}")
    return "\n".join(lines)


def _say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)
