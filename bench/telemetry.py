"""The telemetry job's throughput, beside a plain script computing the same windows.

``--events`` messages of synthetic gateway traffic (the tests' generator,
``tests/telemetry_helpers.traffic``, encoded with the gateway's own encoders: calls with
retries after 429s and timeouts, declines, results; 2,000 payments per 10 minutes of event
time, so 300k messages span about 12 hours) are published once to ``payments.telemetry``
and ``payments.results`` on an embedded broker; then, in the same run, each variant runs in a
fresh child process, so its wall time and peak memory are its own:

- ``job``: the real job, ``pipelines.telemetry.main`` on DirectRunner with a fresh DuckDB
  file: one micro-batch over every message (decode, dead letters, 1-minute and sliding
  1-hour windows per gateway, staging; then ``telemetry_minutely``,
  ``fact_payment_requests``, ``payment_conversion``, anomaly scoring, ``recon_health``, one
  load, alerts, offset commit).
- ``plain``: the same windows without Beam (bench/telemetry_plain.py): the same Kafka read,
  decoder, minute counts and window metrics, windows summed with polars, and the
  ``telemetry_minutely`` rows loaded into DuckDB. Nothing else.

When both ran, their ``telemetry_minutely`` rows (every column but ``run_id``) must be
equal; a difference is an error (exit 1). Times are wall times of the child process
(interpreter start and imports included), with the time of the work alone beside them. For
the job, the report also lists its phases and each FnApiRunner stage with its time and peak
RSS (bench/probe.py). Results: BENCHMARKS.md.

    .venv/bin/python bench/telemetry.py                      # 300k messages, job and plain
    .venv/bin/python bench/telemetry.py --events 1000000
    .venv/bin/python bench/telemetry.py --events 20000 --variants plain --keep
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from datetime import timedelta
from pathlib import Path

from common import (
    Measured,
    failed,
    machine,
    measured_table,
    run_parent,
    run_variant,
    variants_parser,
)
from probe import phase_lines

ROOT = Path(__file__).resolve().parent.parent
TOPICS = {
    "telemetry": "payments.telemetry",
    "results": "payments.results",
    "alerts": "telemetry.alerts",
}
VARIANTS = ("job", "plain")
PAYMENTS_PER_10_MINUTES = 2_000
MINUTELY_KEY = "window_start, window_end, gateway, metric, dimension"


# -- the parent: set up, run each variant in a child, report ---------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = variants_parser(__doc__, VARIANTS, ",".join(VARIANTS), 300_000, "messages (300k)")
    parser.add_argument(
        "--partitions", type=int, default=2, help="partitions per topic (default: 2)"
    )
    args = parser.parse_args(argv)
    if args.variant:
        return run_child(args.variant, args.work, args.bootstrap)
    return run_parent(args, VARIANTS, "payrecon-bench-telemetry-", _run)


def _traffic_block(block: int) -> list[tuple[str, bytes]]:
    """(kind, value) of the messages of 10-minute block ``block`` of the tests' traffic."""
    from tests.telemetry_helpers import START, traffic

    start = START + block * timedelta(minutes=10)
    records = traffic(PAYMENTS_PER_10_MINUTES, seed=block, start=start)
    return [(r.kind, r.value) for r in records]


def gateway_traffic(n: int) -> dict[str, list[bytes]]:
    """The values of the first ``n`` messages of consecutive 10-minute blocks of synthetic
    traffic, each block with its own seed, per kind (telemetry, results); the blocks are
    generated in parallel, one process per core, and taken in order."""
    sys.path.insert(0, str(ROOT))  # tests/ is not an installed package
    import tests.telemetry_helpers  # noqa: F401  (once, before the workers fork)

    values: dict[str, list[bytes]] = {"telemetry": [], "results": []}
    first = 0
    with multiprocessing.Pool() as pool:
        while n > 0:
            blocks = range(first, first + -(-n // (2 * PAYMENTS_PER_10_MINUTES)))
            for records in pool.imap(_traffic_block, blocks):
                for kind, value in records[:n]:
                    values[kind].append(value)
                n -= min(n, len(records))
            first = blocks.stop
    return values


def _run(args, variants: list[str], work: Path) -> int:
    from pipelines.broker import EmbeddedBroker
    from pipelines.publish import publish_lines

    print(f"machine: {machine()}")
    started = time.perf_counter()
    values = gateway_traffic(args.events)
    print(
        f"generated {len(values['telemetry']):,} telemetry and {len(values['results']):,} "
        f"result messages in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    (work / "topics.json").write_text(json.dumps(TOPICS))
    runs: dict[str, Measured] = {}
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        for kind, time_field in (("telemetry", "at"), ("results", "processed_at")):
            published = publish_lines(
                bootstrap, TOPICS[kind], values.pop(kind), partitions=args.partitions,
                key_field="request_id", timestamp_field=time_field,
            )  # fmt: skip
            if not published.ok:
                print(f"bench: {published.failed} messages not acknowledged", file=sys.stderr)
                return 3
            print(
                f"published {published.published:,} messages to {TOPICS[kind]} in "
                f"{published.seconds:.1f} s",
                flush=True,
            )
        for variant in variants:
            measured = run_variant(__file__, work, bootstrap, variant, args.timeout)
            if measured.returncode != 0:
                return failed(measured)
            if measured.result["messages_in"] != args.events:
                print(
                    f"bench: {variant} read {measured.result['messages_in']:,} messages, "
                    f"expected {args.events:,}",
                    file=sys.stderr,
                )
                return 1
            runs[variant] = measured
    print()
    print(report(runs, args.events))
    if len(runs) < 2:
        print("telemetry_minutely: not compared (one variant ran)")
        return 0
    rows, differences = compare_minutely(work / "job.duckdb", work / "plain.duckdb")
    if differences:
        print(
            f"bench: telemetry_minutely differs between job and plain ({len(differences)} "
            "rows in only one of them); the first:\n  " + "\n  ".join(differences[:5]),
            file=sys.stderr,
        )
        return 1
    print(f"telemetry_minutely: job and plain equal: yes ({rows:,} rows, every column but run_id)")
    return 0


def compare_minutely(job: Path, plain: Path) -> tuple[int, list[str]]:
    """(rows in ``job``, the rows found in only one of the two ``telemetry_minutely``
    tables, every column but ``run_id``, labelled by where they are)."""
    import duckdb

    def rows(path: Path) -> set[tuple]:
        with duckdb.connect(str(path), read_only=True) as con:
            return set(
                con.execute(
                    f"SELECT * EXCLUDE (run_id) FROM telemetry_minutely ORDER BY {MINUTELY_KEY}"
                ).fetchall()
            )

    def shown(where: str, found: set[tuple]) -> list[str]:
        return [f"{where} only: " + ", ".join(map(str, r)) for r in sorted(found)]

    a, b = rows(job), rows(plain)
    return len(a), shown("job", a - b) + shown("plain", b - a)


def report(runs: dict[str, Measured], events: int) -> str:
    lines = measured_table(
        runs, events, "messages", "minutely rows", lambda r: f"{r['minutely_rows']:,}"
    )
    for name, m in runs.items():
        r = m.result
        lines.append(
            f"{name}: {r['messages_in']:,} messages in, {r['decoded']:,} decoded, "
            f"{r['dead_letters']:,} dead-lettered"
            + (
                f"; {r['requests']:,} payment requests, {r['anomalies']:,} anomalies"
                if name == "job"
                else ""
            )
        )
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items())
        if name == "job":
            lines.append("    phases (peak RSS of the process tree during each):")
            lines.append("    " + phase_lines(r, JOB_PHASES["running"]))
            lines.append(f"    of the finish: {phases}")
        else:
            lines.append(f"    phases: {phases}")
    if "job" in runs and "plain" in runs:
        job, plain = runs["job"], runs["plain"]
        lines.append(
            f"job/plain  {job.seconds / plain.seconds:5.2f}x  (work only "
            f"{job.result['work_seconds'] / plain.result['work_seconds']:.2f}x)"
        )
    return "\n".join(lines)


# -- the children: one variant each ----------------------------------------------------------


def run_child(variant: str, work: Path, bootstrap: str) -> int:
    topics = json.loads((work / "topics.json").read_text())
    if variant == "job":
        result = _job(work, bootstrap, topics)
    else:
        from telemetry_plain import run_plain

        result = run_plain(work, bootstrap, topics)
    result["variant"] = variant
    (work / f"result-{variant}.json").write_text(json.dumps(result))
    return int(result.get("exit_code", 0))


# The job's progress lines (``==> <first word> ...``) as phases; the bench marks the finish.
JOB_PHASES = {
    "run": "plan, topics, run id, staging",
    "running": "Beam pipeline",
    "finishing": "then: window metrics, requests, conversion, anomalies, load, alerts, commit",
}


def _time_calls(phases: dict[str, float], module, name: str, label: str, say: str = "") -> None:
    """Add the time of every call of ``module.name`` to ``phases[label]`` (saying ``say``
    on stderr first, as a progress line, if given)."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        if say:
            print(f"==> {say}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t

    setattr(module, name, timed)


def _job(work: Path, bootstrap: str, topics: dict[str, str]) -> dict:
    t = time.perf_counter()
    import duckdb
    from probe import Probe, probe_result

    import pipelines.telemetry_finish as finish
    import pipelines.telemetry_run as run
    from pipelines.telemetry import main as telemetry

    imports = time.perf_counter() - t
    timed: dict[str, float] = {}
    _time_calls(timed, run, "finish_batch", "finish", say="finishing the batch")
    steps = [
        (finish, "recompute_windows", "window metrics"),
        (finish, "merge_requests", "requests"),
        (finish, "recompute_conversion", "conversion"),
        (finish, "detect_anomalies", "anomalies"),
    ]
    for module, name, label in steps:
        _time_calls(timed, module, name, label)
    warehouse = work / "job.duckdb"
    started = time.perf_counter()
    with Probe(started, JOB_PHASES) as probe:
        code = telemetry([
            "--bootstrap-servers", bootstrap, "--telemetry-topic", topics["telemetry"],
            "--results-topic", topics["results"], "--alerts-topic", topics["alerts"],
            "--group-id", "bench-job", "--warehouse", f"duckdb:///{warehouse}",
        ])  # fmt: skip
    seconds = time.perf_counter() - started
    with duckdb.connect(str(warehouse), read_only=True) as con:

        def count(table: str) -> int:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        health = con.execute(
            "SELECT records_in, records_out, dead_letters FROM recon_health WHERE job = 'telemetry'"
        ).fetchone()
        counted = {
            "minutely_rows": count("telemetry_minutely"),
            "requests": count("fact_payment_requests"),
            "anomalies": count("telemetry_anomalies"),
        }
    return {
        "exit_code": code,
        "import_seconds": imports,
        "work_seconds": seconds,
        "phases": {label: timed[label] for _, _, label in steps if label in timed},
        **probe_result(probe),
        "messages_in": health[0],
        "decoded": health[1],
        "dead_letters": health[2],
        **counted,
    }


if __name__ == "__main__":
    raise SystemExit(main())
