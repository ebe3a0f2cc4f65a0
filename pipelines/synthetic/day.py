"""Generate one synthetic day: ledger events, the matching Stripe export, an answer key.

The day is a sorted array of event times (diurnal, vectorised with numpy). Injected
discrepancies, lateness edge cases and malformed lines are planned up front on chosen time
slots; then the slots are cut into chunks of ~125k events, each walked by a lean loop that
streams its part files (in worker processes when there are several chunks), and the parts
are joined. Every random draw comes from generators seeded by ``seed`` (and the chunk
number), so a seed always gives byte-identical files, however many workers run.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from pipelines.synthetic import answer_key, malformed, scenarios
from pipelines.synthetic.chunk import (
    ChunkPlan,
    ChunkResult,
    ledger_part,
    planner_rng,
    run_chunk,
    stripe_part,
)
from pipelines.synthetic.clock import Window, diurnal_offsets
from pipelines.synthetic.ids import MAX_SPACES
from pipelines.synthetic.records import Mint
from pipelines.synthetic.writers import (
    ANSWER_KEY_FILE,
    LEDGER_FILE,
    STRIPE_FILE,
    concat_files,
    ledger_totals,
    merge_groups,
    merge_stripe_parts,
    stripe_totals,
)
from schemas.dead_letter import Reason

DEFAULT_MAX_PAYLOAD = 64 * 1024
STORY_MARGIN_MS = 5 * 60_000  # injected discrepancies stay this far from midnight
EARLY_MS = 1_500  # forced early edge events happen in the first 1.5 s of the day
LATE_FROM_MS = 86_390_000  # forced late edge events happen from 23:59:50
CHUNK_EVENTS = 125_000  # events per chunk (chunks run in parallel)
PLANNER_ID_SPACE = MAX_SPACES - 1  # the injected stories' ids
MAX_CHUNKS = PLANNER_ID_SPACE  # each chunk mints ids in its own space

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. Rates are fractions of ``events`` (valid ledger events)."""

    day: date
    events: int
    discrepancy_rate: float
    out: Path
    seed: int = 1
    malformed_rate: float = 0.0
    max_payload: int = DEFAULT_MAX_PAYLOAD


@dataclass(frozen=True)
class DaySummary:
    ledger_path: Path
    stripe_path: Path
    answer_key_path: Path
    events: int
    malformed: int
    stripe_rows: int
    discrepancies: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


def edge_count(events: int) -> int:
    """Forced lateness edge cases at each end of the day."""
    return 3 if events >= 60 else 1 if events >= 10 else 0


def slot_times(events: int, window: Window, rng: np.random.Generator) -> np.ndarray:
    """Sorted epoch-ms times of the day's events; the first and last ``edge_count`` sit
    within 1.5 s after midnight and from 23:59:50."""
    offsets = diurnal_offsets(events, rng)
    k = edge_count(events)
    if k:
        offsets[:k] = np.sort(rng.integers(0, EARLY_MS, k))
        offsets[-k:] = np.sort(rng.integers(LATE_FROM_MS, 86_400_000, k))
        offsets.sort()
    return offsets + window.start_ms


def _story_slots(
    kinds: list[str], times: np.ndarray, window: Window, rng: np.random.Generator
) -> tuple[list[str], list[int], list[str]]:
    """Keeps as many kinds as there are slots well inside the day; picks their slots."""
    k = edge_count(len(times))
    lo = max(int(np.searchsorted(times, window.start_ms + STORY_MARGIN_MS)), k)
    hi = min(int(np.searchsorted(times, window.end_ms - STORY_MARGIN_MS)), len(times) - k)
    available = max(hi - lo, 0)
    warnings = []
    needed = sum(scenarios.SLOTS_NEEDED[kind] for kind in kinds)
    if needed > available:
        wanted = len(kinds)
        while kinds and needed > available:
            needed -= scenarios.SLOTS_NEEDED[kinds.pop()]
        warnings.append(f"only {len(kinds)} of {wanted} discrepancies fit in {len(times)} events")
    chosen = (rng.choice(available, size=needed, replace=False) + lo).tolist()
    return kinds, chosen, warnings


def plan_stories(
    config: GenerateConfig, times: np.ndarray, mint: Mint, rng: np.random.Generator
) -> tuple[list[scenarios.Injected], list[str]]:
    window = Window(config.day)
    kinds = scenarios.plan_kinds(config.events, config.discrepancy_rate, mint.rnd)
    kinds, chosen, warnings = _story_slots(kinds, times, window, rng)
    stories, variants = [], Counter[str]()
    for kind in kinds:
        take = scenarios.SLOTS_NEEDED[kind]
        indices = sorted(chosen[:take])
        del chosen[:take]
        spare = mint.rnd.randrange(
            window.start_ms + STORY_MARGIN_MS, window.end_ms - STORY_MARGIN_MS
        )
        story = scenarios.Story(mint, [(i, int(times[i])) for i in indices], spare, variants[kind])
        variants[kind] += 1
        stories.append(scenarios.build(kind, story))
    return stories, warnings


def plan_malformed(
    config: GenerateConfig, rng: np.random.Generator, rnd: random.Random
) -> dict[int, list[Reason]]:
    """Slot -> reasons of the malformed lines written just before that slot's event
    (slot ``events`` means after the last event)."""
    count = round(config.malformed_rate * config.events)
    positions = np.sort(rng.integers(0, config.events + 1, count)).tolist()
    planned: dict[int, list[Reason]] = {}
    for position, reason in zip(positions, malformed.plan_reasons(count, rnd), strict=True):
        planned.setdefault(position, []).append(reason)
    return planned


def customers_per_market(events: int) -> int:
    """Customer pool per market: about three payments per customer over the day."""
    return max(20, events // 40)


def chunk_count(events: int) -> int:
    return max(1, min(MAX_CHUNKS, events // CHUNK_EVENTS))


def split_into_chunks(
    config: GenerateConfig,
    times: np.ndarray,
    stories: list[scenarios.Injected],
    malformed_before: dict[int, list[Reason]],
) -> list[ChunkPlan]:
    n, chunks = config.events, chunk_count(config.events)
    bounds = [n * c // chunks for c in range(chunks + 1)]
    starts_s = [int(times[b]) // 1000 for b in bounds[1:-1]]
    window = Window(config.day)
    k = edge_count(n)
    plans = [
        ChunkPlan(
            index=c,
            day=config.day,
            seed=config.seed,
            max_payload=config.max_payload,
            customers_per_market=customers_per_market(n),
            first_slot=bounds[c],
            times=times[bounds[c] : bounds[c + 1]],
            early_edges=k if c == 0 else 0,
            late_edges=k if c == chunks - 1 else 0,
            as_of_s=answer_key.as_of_s(window),
        )
        for c in range(chunks)
    ]
    for story in stories:
        for slot, event in story.events:
            plans[bisect.bisect_right(bounds, slot) - 1].story_events[slot] = event
        for bt in story.balance_txns:
            plans[bisect.bisect_right(starts_s, bt.created_s)].story_txns.append(bt)
    for slot, reasons in malformed_before.items():
        plans[min(bisect.bisect_right(bounds, slot) - 1, chunks - 1)].malformed_before[slot] = (
            reasons
        )
    return plans


def _can_spawn() -> bool:
    """Spawned workers re-import ``__main__`` from its file; code read from stdin has none."""
    path = getattr(sys.modules["__main__"], "__file__", None)
    return path is None or os.path.exists(path)


def run_chunks(
    plans: list[ChunkPlan], out: Path, workers: int, progress: Progress | None
) -> list[ChunkResult]:
    """Runs the chunks, in worker processes when there are several chunks and workers."""
    total, done = sum(len(p.times) for p in plans), 0
    if workers <= 1 or len(plans) == 1 or not _can_spawn():
        results = []
        for plan in plans:
            results.append(run_chunk(plan, out))
            done += len(plan.times)
            if progress and len(plans) > 1:
                progress(done, total)
        return results
    context = multiprocessing.get_context("spawn")  # safe in threaded callers, unlike fork
    with ProcessPoolExecutor(min(workers, len(plans)), mp_context=context) as pool:
        futures = {pool.submit(run_chunk, plan, out): plan for plan in plans}
        for future in as_completed(futures):
            done += len(futures[future].times)
            if progress:
                progress(done, total)
        return [future.result() for future in futures]


def generate_day(
    config: GenerateConfig, progress: Progress | None = None, workers: int | None = None
) -> DaySummary:
    """Writes ``ledger.jsonl``, the Stripe CSV and ``answer_key.json`` into ``config.out``.

    ``workers`` (default: every CPU) only changes the speed: the files depend on the
    config alone.
    """
    started = time.perf_counter()
    rnd = random.Random(config.seed)
    rng = planner_rng(config.seed)
    window = Window(config.day)
    times = slot_times(config.events, window, rng)
    planner = Mint(rnd, rng, config.seed, max(20, config.events // 40), id_space=PLANNER_ID_SPACE)
    stories, warnings = plan_stories(config, times, planner, rng)
    plans = split_into_chunks(config, times, stories, plan_malformed(config, rng, rnd))
    config.out.mkdir(parents=True, exist_ok=True)
    results = run_chunks(plans, config.out, workers or os.cpu_count() or 1, progress)
    key = _assemble(config, stories, results)
    answer_key.write_key(config.out / ANSWER_KEY_FILE, key)
    totals = key["totals"]
    return DaySummary(
        ledger_path=config.out / LEDGER_FILE,
        stripe_path=config.out / STRIPE_FILE,
        answer_key_path=config.out / ANSWER_KEY_FILE,
        events=totals["ledger"]["events"],
        malformed=totals["ledger"]["malformed"],
        stripe_rows=totals["stripe"]["rows"],
        discrepancies=len(stories),
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )


def _assemble(
    config: GenerateConfig, stories: list[scenarios.Injected], results: list[ChunkResult]
) -> dict:
    """Joins the part files and offsets each chunk's line numbers; returns the answer key."""
    out = config.out
    ledger_parts = [ledger_part(out, r.index) for r in results]
    stripe_parts = [stripe_part(out, r.index) for r in results]
    concat_files(ledger_parts, out / LEDGER_FILE)
    merge_stripe_parts(stripe_parts, out / STRIPE_FILE)
    for part in ledger_parts + stripe_parts:
        part.unlink()
    offset = 0
    story_lines: dict[str, int] = {}
    bad_lines: list[dict] = []
    for r in results:
        story_lines.update({e: line + offset for e, line in r.story_lines.items()})
        bad_lines.extend({**m, "line": m["line"] + offset} for m in r.malformed)
        offset += r.lines
    expected = [s.expected for s in stories]
    for entry in expected:
        entry["ledger_lines"] = [story_lines[e] for e in entry["event_ids"]]
    malformed_count = sum(r.malformed_lines for r in results)
    return answer_key.build_key(
        day=config.day,
        seed=config.seed,
        parameters={
            "events": config.events,
            "discrepancy_rate": config.discrepancy_rate,
            "malformed_rate": config.malformed_rate,
            "max_payload_bytes": config.max_payload,
        },
        discrepancies=expected,
        malformed=bad_lines,
        edges=[e for r in results for e in r.edge_cases],
        ledger=ledger_totals(
            merge_groups([r.ledger_groups for r in results]), offset, malformed_count
        ),
        stripe=stripe_totals(merge_groups([r.stripe_groups for r in results])),
    )
