"""Load: how the reconciliation job's time and peak memory grow with the size of the day.

For each size in ``--sizes`` (default 1M and 10M ledger events), a day is generated (with
the generator's Stripe export of about as many balance transactions, 1% injected
discrepancies, 0.1% malformed messages), published to a fresh embedded broker, and
reconciled by the real job (``pipelines.reconcile.main`` on DirectRunner, in a fresh child
process, measured from outside like every bench/ variant: wall time, peak RSS). The join's
buckets grow with the day (``--events-per-bucket``, 62,500 by default: the job's 16 buckets
at 1M), so each bucket holds about as many rows at every size.

Targets (issue 9): time linear in the day (the time ratio close to the size ratio) and
memory bounded by the bucket size, not by the day (the peak RSS ratio close to 1). Each run
must also find exactly the answer key's discrepancies. Results: BENCHMARKS.md.

    .venv/bin/python bench/load.py                          # 1M and 10M (about an hour)
    .venv/bin/python bench/load.py --sizes 100000,1000000   # a quick look
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import reconcile
from common import MIB, Measured, failed, machine, render_table, run_variant
from probe import phase_lines
from reconcile import _PHASES, generate, publish

DEFAULT_SIZES = "1000000,10000000"
EVENTS_PER_BUCKET = 62_500


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help="ledger events per day, comma-separated, smallest first (default: %(default)s)",
    )
    parser.add_argument(
        "--events-per-bucket",
        type=int,
        default=EVENTS_PER_BUCKET,
        help="the job's --buckets is the day's events / this, rounded up (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    parser.add_argument(
        "--timeout", type=float, default=4 * 3600.0, help="seconds per run (default: 14400)"
    )
    return parser


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1000 or sizes != sorted(sizes):
        raise SystemExit(f"bench: --sizes {text!r}: whole numbers >= 1000, smallest first")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = _sizes(args.sizes)
    print(f"machine: {machine()}")
    runs: dict[int, tuple[Measured, int]] = {}
    for events in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"payrecon-load-{events}-"))
        try:
            measured = _run_size(events, work, args)
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        if measured is None:
            return 1
        runs[events] = measured
    print()
    print(report(runs))
    exact = all(m.result["missed"] == m.result["false_positives"] == 0 for m, _ in runs.values())
    return 0 if exact else 1


def _run_size(events: int, work: Path, args) -> tuple[Measured, int] | None:
    from pipelines.broker import EmbeddedBroker

    print(f"\n{events:,} events", flush=True)
    day, _ = generate(work, events)
    buckets = max(1, math.ceil(events / args.events_per_bucket))
    with EmbeddedBroker() as broker:  # a fresh broker per size: its memory is not the job's
        if not publish(broker.bootstrap_servers, day):
            return None
        print(f"running the job with --buckets {buckets} ...", flush=True)
        started = time.perf_counter()
        measured = run_variant(
            reconcile.__file__, work, broker.bootstrap_servers, "job", args.timeout,
            quiet=True, extra=["--buckets", str(buckets)],
        )  # fmt: skip
    if measured.returncode != 0:
        failed(measured)
        return None
    r = measured.result
    print(
        f"  {measured.seconds:.1f} s ({time.perf_counter() - started:.1f} s with the child's "
        f"start), peak RSS {measured.peak_rss_bytes / MIB:,.0f} MiB, "
        f"{r['discrepancies']:,} discrepancies (missed {r['missed']}, false positives "
        f"{r['false_positives']})",
        flush=True,
    )
    if r.get("stages"):  # where the time and memory went: the job's phases and Beam stages
        print("    " + phase_lines(r, _PHASES["running"]), flush=True)
    return measured, buckets


def report(runs: dict[int, tuple[Measured, int]]) -> str:
    rows = [
        [
            f"{events:,}",
            str(buckets),
            f"{m.seconds:.1f}",
            f"{m.result['work_seconds']:.1f}",
            f"{events / m.result['work_seconds']:,.0f}",
            f"{m.max_rss_bytes / MIB:,.0f}",
            f"{m.tree_rss_bytes / MIB:,.0f}",
            f"{m.result['discrepancies']:,}",
            "yes" if m.result["missed"] == m.result["false_positives"] == 0 else "NO",
        ]
        for events, (m, buckets) in runs.items()
    ]
    header = ["events", "buckets", "seconds", "work s", "events/s (work)", "peak RSS MiB",
              "tree RSS MiB", "discrepancies", "= answer key"]  # fmt: skip
    lines = [
        render_table(header, rows),
        "(seconds: the child's wall time; work: after its imports; peak RSS: ru_maxrss of "
        "the largest process; tree RSS: the sampled peak of the sum over its processes)",
    ]
    sizes = sorted(runs)
    small, large = sizes[0], sizes[-1]
    if large > small:
        (m_small, _), (m_large, _) = runs[small], runs[large]
        size_ratio = large / small
        time_ratio = m_large.result["work_seconds"] / m_small.result["work_seconds"]
        rss_ratio = m_large.peak_rss_bytes / m_small.peak_rss_bytes
        lines += [
            "",
            f"{large:,} / {small:,} events: {size_ratio:.1f}x the data",
            f"  work time   {time_ratio:5.2f}x  (linear: {size_ratio:.1f}x; "
            f"{time_ratio / size_ratio:.2f} of linear)",
            f"  peak RSS    {rss_ratio:5.2f}x  ({m_small.peak_rss_bytes / MIB:,.0f} -> "
            f"{m_large.peak_rss_bytes / MIB:,.0f} MiB; bounded by the bucket size would be "
            "about 1x)",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
