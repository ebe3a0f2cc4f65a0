"""The reconciliation job end to end, beside a plain script and a naive Beam pipeline.

One generated ledger day of ``--events`` events (with the generator's Stripe export of about
as many balance transactions, 1% injected discrepancies and 0.1% malformed messages) is
published to an embedded broker; then, in the same run, each variant runs in a fresh child
process, so its wall time and peak memory are its own:

- ``job``: the real job, ``pipelines.reconcile.main`` on DirectRunner (Kafka read, decode,
  Great Expectations, bucketed match, discrepancies and dead letters to Kafka, staging,
  warehouse load, daily revenue, offset commit).
- ``job2``: the same with ``--direct_num_workers=2 --direct_running_mode=multi_processing``
  (not run by default).
- ``plain``: the same work without Beam, as one script: the same Kafka read (``plan_read``,
  then ``assign`` and consume to the planned ends), the same decode, Stripe export reader,
  ``transforms.match.reconcile`` (16 buckets) and DuckDB load of the discrepancy, match and
  fact tables. It does not run the data-quality suites, publish to Kafka or stage files.
- ``naive``: what most people would write in Beam: one dict per element, a ``CoGroupByKey``
  on the Stripe object id, a per-key classification in Python, a ``GroupByKey`` by order for
  double charges, and JSON lines out. It is fed from the decoded ledger and Stripe rows,
  written to Parquet beforehand (not timed) and read with ``ReadFromParquet``, so it skips
  the Kafka read, the decode, the CSV parse and the warehouse load: its time is a lower
  bound for a naive job doing the same work.
- ``join``: the job's ``MatchAndClassify`` alone, from the same decoded files as ``naive``,
  writing its discrepancies and matches out as Parquet: the join compared like for like
  (bench/join_variant.py).

Targets (issue 4): job within 2.5x of plain, at least 10x faster than naive (met by the
join: naive/join), peak RSS under 3 GiB. Times are wall times of the child process
(interpreter start and imports included), with the time of the work alone (after the
imports) beside them. For the job, the report also lists its phases and each FnApiRunner
stage with its time and peak RSS (by wrapping a private FnApiRunner method; skipped if a
Beam upgrade moves it). Results: BENCHMARKS.md.

    .venv/bin/python bench/reconcile.py                          # 1M events, all variants
    .venv/bin/python bench/reconcile.py --events 200000 --variants job,plain
    .venv/bin/python bench/reconcile.py --events 200000 --variants job,job2,plain,naive --keep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

from common import (
    MIB,
    Measured,
    Stopwatch,
    failed,
    machine,
    measured_table,
    messages_table,
    run_parent,
    run_variant,
    variants_parser,
)
from probe import Probe, phase_lines, probe_result

TOPIC = "ledger.transactions"
DAY = date(2026, 11, 20)
VARIANTS = ("job", "job2", "plain", "naive", "join")
DEFAULT_VARIANTS = "job,plain,naive,join"
TARGET_JOB_OVER_PLAIN = 2.5
TARGET_NAIVE_OVER_JOB = 10.0
TARGET_RSS_BYTES = 3 * 1024 * MIB
NAIVE_FILES = 4


# -- the parent: set up, run each variant in a child, report ---------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = variants_parser(
        __doc__, VARIANTS, DEFAULT_VARIANTS, 1_000_000, "ledger events (1M)", ("prepare",)
    )
    parser.add_argument("--buckets", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        return run_child(args.variant, args.work, args.bootstrap, args.buckets)
    return run_parent(args, VARIANTS, "payrecon-bench-", _run)


def generate(work: Path, events: int):
    """A generated day of ``events`` ledger events in ``work / "day"``: its summary and key."""
    from pipelines.synthetic.day import GenerateConfig, generate_day

    started = time.perf_counter()
    day = generate_day(
        GenerateConfig(
            day=DAY,
            events=events,
            discrepancy_rate=0.01,
            out=work / "day",
            seed=1,
            malformed_rate=0.001,
        )
    )
    key = json.loads(day.answer_key_path.read_text())
    print(
        f"generated {day.events:,} ledger events (+{day.malformed:,} malformed), "
        f"{day.stripe_rows:,} Stripe balance transactions, {len(key['discrepancies']):,} "
        f"injected discrepancies in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return day, key


def publish(bootstrap: str, day) -> bool:
    """The day's ledger lines onto ``TOPIC``; False (after saying so) unless all were acked."""
    from pipelines.publish import publish_lines

    with day.ledger_path.open("rb") as lines:
        published = publish_lines(bootstrap, TOPIC, lines)
    if not published.ok:
        print(f"bench: {published.failed} messages not acknowledged", file=sys.stderr)
        return False
    print(
        f"published {published.published:,} messages to {TOPIC} in {published.seconds:.1f} s",
        flush=True,
    )
    return True


def _run(args, variants: list[str], work: Path) -> int:
    from pipelines.broker import EmbeddedBroker

    print(f"machine: {machine()}")
    day, key = generate(work, args.events)
    runs: dict[str, Measured] = {}
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        if not publish(bootstrap, day):
            return 3
        for variant in variants:
            if variant in ("naive", "join") and not (work / "naive-input").exists():
                prepared = run_variant(
                    __file__, work, bootstrap, "prepare", args.timeout, quiet=True
                )
                if prepared.returncode != 0:
                    return failed(prepared)
                print(
                    f"  (naive input: {prepared.result['ledger_rows']:,} ledger and "
                    f"{prepared.result['stripe_rows']:,} Stripe rows staged as Parquet in "
                    f"{prepared.seconds:.1f} s, not timed)",
                    flush=True,
                )
            measured = run_variant(__file__, work, bootstrap, variant, args.timeout)
            if measured.returncode != 0:
                return failed(measured)
            runs[variant] = measured
    print()
    print(report(runs, args.events, key))
    return 0


def report(runs: dict[str, Measured], events: int, key: dict) -> str:
    lines = measured_table(
        runs, events, "ledger events", "discrepancies", lambda r: f"{r.get('discrepancies', 0):,}"
    )
    expected = len(key["discrepancies"])
    for name in ("job", "job2", "plain"):
        if name in runs:
            r = runs[name].result
            verdict = "yes" if r["missed"] == 0 and r["false_positives"] == 0 else "NO"
            lines.append(
                f"{name}: {r['discrepancies']:,} discrepancies, answer key {expected:,}: "
                f"equal {verdict} (missed {r['missed']}, false positives {r['false_positives']})"
            )
    if "naive" in runs:
        r = runs["naive"].result
        lines.append(
            f"naive: {r['discrepancies']:,} discrepancies, answer key {expected:,} (a "
            "simplified classification, not required to agree): missed "
            f"{r['missed']}, false positives {r['false_positives']}; {r['matches']:,} matches"
        )
    if "join" in runs:
        r = runs["join"].result
        verdict = "yes" if r["missed"] == 0 and r["false_positives"] == 0 else "NO"
        lines.append(
            f"join: {r['discrepancies']:,} discrepancies, answer key {expected:,}: equal "
            f"{verdict} (missed {r['missed']}, false positives {r['false_positives']}); "
            f"{r['matches']:,} matches"
        )
    lines.append("")
    lines.extend(_ratios(runs))
    for name in ("job", "job2"):
        if name in runs and runs[name].result.get("stages"):
            lines.append(f"{name} phases (peak RSS of the process tree during each):")
            lines.append("    " + phase_lines(runs[name].result, _PHASES["running"]))
    if "plain" in runs:
        phases = runs["plain"].result["phases"]
        lines.append("plain phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    return "\n".join(lines)


def _ratios(runs: dict[str, Measured]) -> list[str]:
    lines = []

    def ratio(a: str, b: str) -> tuple[float, float]:
        return (
            runs[a].seconds / runs[b].seconds,
            runs[a].result["work_seconds"] / runs[b].result["work_seconds"],
        )

    for job in ("job", "job2"):
        if job in runs and "plain" in runs:
            wall, work = ratio(job, "plain")
            met = "met" if wall <= TARGET_JOB_OVER_PLAIN else "NOT met"
            lines.append(
                f"{job}/plain   {wall:5.2f}x  (work only {work:.2f}x)   target <= "
                f"{TARGET_JOB_OVER_PLAIN}x: {met}"
            )
        if job in runs and "naive" in runs:
            wall, work = ratio("naive", job)
            met = "met" if wall >= TARGET_NAIVE_OVER_JOB else "NOT met"
            lines.append(
                f"naive/{job}   {wall:5.2f}x  (work only {work:.2f}x)   target >= "
                f"{TARGET_NAIVE_OVER_JOB:.0f}x: {met}"
            )
        if job in runs:
            peak = runs[job].peak_rss_bytes
            met = "met" if peak < TARGET_RSS_BYTES else "NOT met"
            lines.append(
                f"{job} peak RSS {peak / MIB:,.0f} MiB   target < {TARGET_RSS_BYTES // MIB:,} "
                f"MiB: {met}"
            )
    if "join" in runs and "naive" in runs:
        wall, work = ratio("naive", "join")
        met = "met" if wall >= TARGET_NAIVE_OVER_JOB else "NOT met"
        lines.append(
            f"naive/join  {wall:5.2f}x  (work only {work:.2f}x)   the join and classification "
            f"alone, from the same decoded files; target >= {TARGET_NAIVE_OVER_JOB:.0f}x: {met}"
        )
    return lines


_PHASES = {
    "planning": "plan the read",
    "run": "topics, run id, staging",
    "running": "Beam pipeline",
    "loading": "warehouse load, daily revenue, offset commit, summary",
}


# -- the children: one variant each ----------------------------------------------------------


def run_child(variant: str, work: Path, bootstrap: str, buckets: int | None = None) -> int:
    key = json.loads((work / "day" / "answer_key.json").read_text())
    if variant in ("job", "job2"):
        result = _job(variant, work, bootstrap, key, buckets)
    else:
        fn = {"plain": _plain, "naive": _naive, "join": _join, "prepare": _prepare_naive}
        result = fn[variant](variant, work, bootstrap, key)
    result["variant"] = variant
    (work / f"result-{variant}.json").write_text(json.dumps(result))
    return int(result.get("exit_code", 0))


def _window(key: dict):
    from pipelines.options import rfc3339
    from transforms.match import MatchConfig

    return MatchConfig(
        rfc3339(key["window"]["start"]),
        rfc3339(key["window"]["end"]),
        "bench",
        detected_at=rfc3339(key["report_as_of"]),
    )


def _against_key(found: set, key: dict) -> dict:
    expected = {
        _finding(d["kind"], d["order_id"], d["stripe_object_id"]) for d in key["discrepancies"]
    }
    return {"missed": len(expected - found), "false_positives": len(found - expected)}


def _finding(kind: str, order_id: str | None, stripe_object_id: str | None) -> tuple:
    """How payrecon demo compares a finding with the answer key."""
    return (kind, order_id if kind == "duplicate_charge" else stripe_object_id)


def _job(variant: str, work: Path, bootstrap: str, key: dict, buckets: int | None = None) -> dict:
    t = time.perf_counter()
    import duckdb

    from pipelines.reconcile import main as reconcile

    imports = time.perf_counter() - t
    warehouse = work / f"{variant}.duckdb"
    argv = [
        "--bootstrap-servers",
        bootstrap,
        "--window-start",
        key["window"]["start"],
        "--window-end",
        key["window"]["end"],
        "--stripe-source",
        str(work / "day" / key["files"]["stripe"]),
        "--warehouse",
        f"duckdb:///{warehouse}",
        "--as-of",
        key["report_as_of"],
        "--group-id",
        f"bench-{variant}",
    ]
    if variant == "job2":
        argv += ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    if buckets:
        argv += ["--buckets", str(buckets)]
    started = time.perf_counter()
    with Probe(started, _PHASES) as probe:
        code = reconcile(argv)
    seconds = time.perf_counter() - started
    if code not in (0, 1):  # 1: it found discrepancies above a threshold, tables loaded
        return {"exit_code": code, "work_seconds": seconds}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found = {
            _finding(*r)
            for r in con.execute(
                "SELECT kind, order_id, stripe_object_id FROM recon_discrepancies"
            ).fetchall()
        }
        n = con.execute("SELECT count(*) FROM recon_discrepancies").fetchone()[0]
        run = con.execute("SELECT messages_in, dead_letters, matched FROM recon_runs").fetchone()
    return {
        "exit_code": code,
        "import_seconds": imports,
        "work_seconds": seconds,
        **probe_result(probe),
        "discrepancies": n,
        "messages_in": run[0],
        "dead_letters": run[1],
        "matched": run[2],
        **_against_key(found, key),
    }


def read_ledger(bootstrap: str, plan, batch: int = 20_000, idle_timeout: float = 30.0):
    """The planned ranges, consumed with ``assign()`` to their ends and decoded batch by
    batch (what the Beam read does, as a loop). Returns (events, dead letters, messages)."""
    import pyarrow as pa

    from transforms.decode import decode_ledger_batch
    from transforms.kafka_ranges import consume_plan

    events, dead, messages = [], 0, 0
    for kept in consume_plan(bootstrap, plan, batch_size=batch, idle_timeout=idle_timeout):
        table = messages_table(kept)
        decoded = decode_ledger_batch(table, job="bench")
        events.append(decoded.events)
        dead += decoded.dead_letters.num_rows
        messages += table.num_rows
    return pa.concat_tables(events), dead, messages


def _plain(variant: str, work: Path, bootstrap: str, key: dict) -> dict:
    t = time.perf_counter()
    import pyarrow as pa

    from schemas.tables import TABLES
    from transforms.kafka_offsets import plan_read
    from transforms.match import reconcile
    from transforms.stripe_files import read_stripe_export
    from transforms.warehouse import open_warehouse

    imports = time.perf_counter() - t
    started = time.perf_counter()
    watch = Stopwatch()
    config = _window(key)
    with watch("plan"):
        plan = plan_read(bootstrap, [TOPIC], config.read_start, config.read_end)
    with watch("kafka read + decode"):
        ledger, dead, messages = read_ledger(bootstrap, plan)
    with watch("stripe csv"):
        stripe = read_stripe_export(work / "day" / key["files"]["stripe"], config.detected_at)
    with watch("match + classify"):
        result = reconcile(ledger, stripe, config, buckets=16)
    with watch("duckdb load"), open_warehouse(f"duckdb:///{work / 'plain.duckdb'}") as warehouse:
        warehouse.load(
            {
                TABLES["recon_discrepancies"]: result.discrepancies,
                TABLES["recon_matches"]: pa.concat_tables([result.matches, result.pending]),
                TABLES["fact_ledger_events"]: ledger,
                TABLES["fact_balance_transactions"]: stripe,
            }
        )
    seconds = time.perf_counter() - started
    d = result.discrepancies
    found = {
        _finding(k, o, s)
        for k, o, s in zip(
            d.column("kind").to_pylist(),
            d.column("order_id").to_pylist(),
            d.column("stripe_object_id").to_pylist(),
            strict=True,
        )
    }
    return {
        "import_seconds": imports,
        "work_seconds": seconds,
        "phases": watch.phases,
        "discrepancies": d.num_rows,
        "messages_in": messages,
        "dead_letters": dead,
        "matched": result.matches.num_rows,
        **_against_key(found, key),
    }


def _prepare_naive(variant: str, work: Path, bootstrap: str, key: dict) -> dict:
    """The naive pipeline's input: the decoded ledger window and the Stripe rows, as a few
    Parquet files (not timed: the naive variant starts from already decoded rows)."""
    import pyarrow.parquet as pq

    from transforms.kafka_offsets import plan_read
    from transforms.stripe_files import read_stripe_export

    config = _window(key)
    plan = plan_read(bootstrap, [TOPIC], config.read_start, config.read_end)
    ledger, _, _ = read_ledger(bootstrap, plan)
    stripe = read_stripe_export(work / "day" / key["files"]["stripe"], config.detected_at)
    out = work / "naive-input"
    out.mkdir(exist_ok=True)
    for name, table in (("ledger", ledger), ("stripe", stripe)):
        step = -(-table.num_rows // NAIVE_FILES)
        for i in range(NAIVE_FILES):
            pq.write_table(table.slice(i * step, step), out / f"{name}-{i}.parquet")
    return {"ledger_rows": ledger.num_rows, "stripe_rows": stripe.num_rows}


def naive_classify(element, start, end):
    """Per Stripe object: the ledger events and balance transactions naming it, compared
    the way one would by hand (a simplified version of DESIGN.md's kinds; no pending)."""
    import apache_beam as beam

    from transforms.match_rules import FAILURES, MONEY_MOVING, MOVED_CATEGORIES, REVERSALS

    obj, sides = element
    ledger = {e["event_id"]: e for e in sides["ledger"]}  # redelivered copies collapse
    stripe = {s["balance_transaction_id"]: s for s in sides["stripe"]}
    by_category: dict[str, list[dict]] = {}
    for s in stripe.values():
        by_category.setdefault(s["reporting_category"], []).append(s)
    reversed_by = {undone: rev for rev, undone in REVERSALS.items()}
    claimed, seen = set(), set()

    def finding(kind, event=None, rows=()):
        stripe_amount = abs(sum(r["amount"] for r in rows)) if rows else None
        return {
            "kind": kind,
            "stripe_object_id": obj,
            "order_id": event["order_id"] if event else None,
            "ledger_amount": event["amount"] if event else None,
            "stripe_amount": stripe_amount,
            "currency": event["currency"] if event else rows[0]["currency"],
        }

    for event in sorted(ledger.values(), key=lambda e: (e["occurred_at"], e["event_id"])):
        kind = event["event_type"]
        category = MONEY_MOVING.get(kind) or FAILURES.get(kind)
        if category:
            claimed.add(category)
        in_window = start <= event["occurred_at"] < end
        if kind in seen:
            if in_window:
                yield finding("duplicate_in_ledger", event)
            continue
        seen.add(kind)
        if in_window and kind == "charge.succeeded":
            yield beam.pvalue.TaggedOutput("charges", (event["order_id"], obj))
        if not in_window or category is None:
            continue
        rows = by_category.get(category, [])
        if kind in MONEY_MOVING:
            if by_category.get(reversed_by.get(category, "")):
                yield finding("status_mismatch", event, rows)
            elif not rows:
                yield finding("missing_in_stripe", event)
            elif rows[0]["currency"] != event["currency"]:
                yield finding("currency_mismatch", event, rows)
            elif abs(sum(r["amount"] for r in rows)) != event["amount"]:
                yield finding("amount_mismatch", event, rows)
            else:
                yield beam.pvalue.TaggedOutput(
                    "matches",
                    {
                        "event_id": event["event_id"],
                        "balance_transaction_ids": [r["balance_transaction_id"] for r in rows],
                        "stripe_object_id": obj,
                        "amount": event["amount"],
                        "currency": event["currency"],
                    },
                )
        elif rows:  # a failure event, and Stripe moved money
            yield finding("status_mismatch", event, rows)
    for category, rows in by_category.items():
        unclaimed = category in MOVED_CATEGORIES and category not in claimed
        if unclaimed and any(start <= r["created"] < end for r in rows):
            yield finding("missing_in_ledger", None, rows)
        if category == "charge":
            for r in rows:
                if r.get("order_id") and start <= r["created"] < end:
                    yield beam.pvalue.TaggedOutput("charges", (r["order_id"], obj))


def naive_double_charges(element):
    order_id, objects = element
    distinct = sorted(set(objects))
    if len(distinct) > 1:
        yield {
            "kind": "duplicate_charge",
            "order_id": order_id,
            "stripe_object_id": distinct[1],
            "ledger_amount": None,
            "stripe_amount": None,
            "currency": None,
        }


def _join(variant: str, work: Path, bootstrap: str, key: dict) -> dict:
    from join_variant import run_join

    result = run_join(work, _window(key))
    found = {_finding(d["kind"], d["order_id"], d["stripe_object_id"]) for d in result.pop("found")}
    return {**result, **_against_key(found, key)}


def _naive(variant: str, work: Path, bootstrap: str, key: dict) -> dict:
    t = time.perf_counter()
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    imports = time.perf_counter() - t
    config = _window(key)
    src, out = work / "naive-input", work / "naive-output"
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    ledger = (
        pipeline
        | "ReadLedger" >> beam.io.ReadFromParquet(str(src / "ledger-*.parquet"))
        | "KeyLedger" >> beam.Map(lambda e: (e["stripe_object_id"], e))
    )
    stripe = (
        pipeline
        | "ReadStripe" >> beam.io.ReadFromParquet(str(src / "stripe-*.parquet"))
        | "KeyStripe" >> beam.Map(lambda s: (s["source_id"] or s["balance_transaction_id"], s))
    )
    found = (
        {"ledger": ledger, "stripe": stripe}
        | "JoinOnObject" >> beam.CoGroupByKey()
        | "Classify"
        >> beam.FlatMap(naive_classify, config.window_start, config.window_end).with_outputs(
            "matches", "charges", main="discrepancies"
        )
    )
    doubles = (
        found.charges
        | "GroupByOrder" >> beam.GroupByKey()
        | "DoubleCharges" >> beam.FlatMap(naive_double_charges)
    )
    for name, pcoll in (
        ("discrepancies", (found.discrepancies, doubles) | beam.Flatten()),
        ("matches", found.matches),
    ):
        _ = (
            pcoll
            | f"Json_{name}" >> beam.Map(json.dumps, default=str)
            | f"Write_{name}" >> beam.io.WriteToText(str(out / name), file_name_suffix=".jsonl")
        )
    pipeline.run().wait_until_finish()
    seconds = time.perf_counter() - started

    def rows(name: str) -> list[dict]:
        found = []
        for path in out.glob(f"{name}*.jsonl"):
            with path.open("rb") as f:
                found.extend(json.loads(line) for line in f)
        return found

    discrepancies = rows("discrepancies")
    found = {_finding(d["kind"], d["order_id"], d["stripe_object_id"]) for d in discrepancies}
    return {
        "import_seconds": imports,
        "work_seconds": seconds,
        "discrepancies": len(discrepancies),
        "matches": len(rows("matches")),
        **_against_key(found, key),
    }


if __name__ == "__main__":
    raise SystemExit(main())
