"""One contiguous stretch of the day's events, generated on its own (maybe in a worker).

A chunk gets its slots' times and everything planned for them (injected stories, forced
lateness edges, malformed lines); it has its own seeded generators and its own id space, so
chunks can run in any order or in parallel and still give the same files. Line numbers it
reports are local to its part file; the caller offsets them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from pipelines.synthetic import malformed
from pipelines.synthetic.clock import Window
from pipelines.synthetic.flow import NormalFlow
from pipelines.synthetic.records import BalanceTxn, Mint
from pipelines.synthetic.writers import LedgerFile, StripeExport
from schemas.dead_letter import Reason

FLUSH_EVERY = 4096


@dataclass
class ChunkPlan:
    """Everything chunk ``index`` needs; slot numbers are global, line numbers are not."""

    index: int
    day: date
    seed: int
    max_payload: int
    customers_per_market: int
    first_slot: int
    times: np.ndarray  # epoch ms of this chunk's slots
    story_events: dict[int, dict] = field(default_factory=dict)  # slot -> ledger event
    story_txns: list[BalanceTxn] = field(default_factory=list)
    malformed_before: dict[int, list[Reason]] = field(default_factory=dict)  # slot -> reasons
    early_edges: int = 0  # this many first slots: charges whose txn is created the day before
    late_edges: int = 0  # this many last slots: charges whose txn is created the day after
    as_of_s: int = 0


@dataclass
class ChunkResult:
    index: int
    lines: int
    malformed_lines: int
    malformed: list[dict]
    story_lines: dict[str, int]
    edge_cases: list[dict]
    ledger_groups: dict[tuple, list[int]]
    stripe_groups: dict[tuple, list[int]]


def ledger_part(out: Path, index: int) -> Path:
    return out / f".ledger.part{index:03d}"


def stripe_part(out: Path, index: int) -> Path:
    return out / f".stripe.part{index:03d}"


def planner_rng(seed: int) -> np.random.Generator:
    """The random stream of the day's planner (the injected stories)."""
    return np.random.default_rng(seed)


def chunk_rng(seed: int, index: int) -> np.random.Generator:
    """A chunk's own random stream, never the planner's. numpy's SeedSequence ignores
    trailing zero words: ``default_rng([seed, 0])`` is ``default_rng(seed)``, so chunk 0
    once drew the planner's event ids and idempotency keys, and days of 3M events and more
    carried event ids naming two different events (quarantined by the ledger suite)."""
    return np.random.default_rng([seed, index, 1])


def run_chunk(plan: ChunkPlan, out: Path) -> ChunkResult:
    """Writes this chunk's part files into ``out``; returns its counts and key entries."""
    window = Window(plan.day)
    rnd = random.Random(f"{plan.seed}:{plan.index}")
    rng = chunk_rng(plan.seed, plan.index)
    mint = Mint(rnd, rng, plan.seed, plan.customers_per_market, id_space=plan.index)
    ledger = LedgerFile(ledger_part(out, plan.index))
    export = StripeExport(stripe_part(out, plan.index), window, plan.as_of_s, header=False)
    flow = NormalFlow(mint, window, ledger.write_event, export.add)
    for bt in plan.story_txns:
        export.add(bt)
    bad: list[dict] = []
    story_lines: dict[str, int] = {}
    n = len(plan.times)
    times = plan.times.tolist()
    for i, ms in enumerate(times):
        slot = plan.first_slot + i
        reasons = plan.malformed_before.get(slot)
        if reasons:
            bad.extend(_malformed_line(r, ms, mint, ledger, plan.max_payload) for r in reasons)
        event = plan.story_events.get(slot)
        if event is not None:
            story_lines[event["event_id"]] = ledger.write_event(event)
        elif i < plan.early_edges:
            flow.charge_attempt(ms, created_s=window.start_s - rnd.randint(1, 2))
        elif i >= n - plan.late_edges:
            flow.charge_attempt(ms, created_s=window.end_s + rnd.randint(1, 3))
        else:
            flow.emit(ms)
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:
            export.flush_before(ms // 1000 - 10)
    trailing = plan.malformed_before.get(plan.first_slot + n, [])
    last_ms = times[-1] if times else window.start_ms
    bad.extend(_malformed_line(r, last_ms, mint, ledger, plan.max_payload) for r in trailing)
    ledger.close()
    export.close()
    return ChunkResult(
        plan.index,
        ledger.lines,
        ledger.malformed,
        bad,
        story_lines,
        flow.edge_cases,
        ledger.groups,
        export.groups,
    )


def _malformed_line(
    reason: Reason, ms: int, mint: Mint, ledger: LedgerFile, max_payload: int
) -> dict:
    charge = mint.charge(mint.payment(ms), ms // 1000)
    base = mint.event("charge.failed", ms, charge, metadata=mint.failure_metadata(charge))
    line, detail = malformed.break_event(reason, base, mint.rnd, max_payload)
    number = ledger.write_malformed(line)
    return {"line": number, "reason": reason.value, "detail": detail}
