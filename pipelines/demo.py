"""``payrecon demo``: the whole reconciliation on embedded defaults, no configuration.

Generates a realistic ledger day with every kind of discrepancy injected (and malformed
messages), starts the embedded broker, publishes the day to ``ledger.transactions``, runs
``payrecon reconcile`` against the generated Stripe export into a DuckDB file, checks
what the job found against the generator's answer key, runs ``payrecon repair`` (Stripe's
truth from the export) and reconciles again, checks that only the discrepancies a human
must handle are left, and writes ``payrecon report``'s HTML report next to the DuckDB file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path

import duckdb

from pipelines.broker import EmbeddedBroker
from pipelines.publish import publish_lines
from pipelines.reconcile import main as reconcile
from pipelines.repair import main as repair
from pipelines.report import main as report
from pipelines.synthetic.day import GenerateConfig, generate_day

DEMO_DAY = date(2026, 11, 20)
# Discrepancies payrecon repair hands to a human rather than fixing (see repair_rules).
UNREPAIRABLE = frozenset({"missing_in_stripe", "duplicate_charge"})
TOPIC = "ledger.transactions"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payrecon demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--events",
        type=int,
        default=50_000,
        help="Ledger events to generate (default: %(default)s).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="Directory for the generated files, the DuckDB warehouse and the HTML report "
        "(default: %(default)s).",
    )
    parser.add_argument("--seed", type=int, default=1, help="Generator seed (default: 1).")
    return parser


def _step(text: str) -> float:
    print(f"==> {text}", flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    args = _parser().parse_args(argv)
    if args.events < 100:
        print("payrecon demo: --events must be at least 100", file=sys.stderr)
        return 2
    started = _step(f"generating {args.events:,} ledger events for {DEMO_DAY} into {args.out}/")
    day = generate_day(
        GenerateConfig(
            day=DEMO_DAY,
            events=args.events,
            discrepancy_rate=0.01,
            out=args.out,
            seed=args.seed,
            malformed_rate=0.002,
        )
    )
    key = json.loads(day.answer_key_path.read_text())
    print(
        f"    {day.events:,} events, {day.malformed:,} malformed lines, "
        f"{day.stripe_rows:,} Stripe balance transactions, "
        f"{day.discrepancies:,} injected discrepancies ({time.perf_counter() - started:.1f} s)"
    )
    _step("starting the embedded Kafka-compatible broker")
    with EmbeddedBroker() as broker:
        print(f"    listening on {broker.bootstrap_servers}")
        started = _step(f"publishing {day.ledger_path} to {TOPIC}")
        with day.ledger_path.open("rb") as lines:
            published = publish_lines(broker.bootstrap_servers, TOPIC, lines)
        if not published.ok:
            print(f"payrecon demo: {published.failed} messages not acknowledged", file=sys.stderr)
            return 3
        print(
            f"    {published.published:,} messages acknowledged "
            f"({time.perf_counter() - started:.1f} s)"
        )
        warehouse = (args.out / "payrecon.duckdb").resolve()
        _step(f"payrecon reconcile, DuckDB warehouse {warehouse}")
        code = _reconcile(broker.bootstrap_servers, key, day.stripe_path, warehouse)
        if code != 0:
            return code
        checked = _check_against_key(warehouse, key)
        _step("payrecon repair: ask Stripe (its export) about each discrepancy")
        code = repair(
            ["--bootstrap-servers", broker.bootstrap_servers, "--stripe-source",
             str(day.stripe_path), "--as-of", key["report_as_of"],
             "--warehouse", f"duckdb:///{warehouse}"]
        )  # fmt: skip
        if code != 0:
            return code
        _step("payrecon reconcile again, with the repairs")
        code = _reconcile(broker.bootstrap_servers, key, day.stripe_path, warehouse)
    if code != 0:
        return code
    healed = _check_after_repair(warehouse, key)
    page = warehouse.with_name("report.html")
    _step(f"payrecon report into {page}")
    argv = ["--warehouse", f"duckdb:///{warehouse}", "--out", str(page)]
    # Ages as of the generated day's report time: the demo day may lie in the future.
    written = report([*argv, "--as-of", key["report_as_of"]])
    return checked or healed or written


def _reconcile(bootstrap: str, key: dict, stripe: Path, warehouse: Path) -> int:
    return reconcile(
        [
            "--bootstrap-servers", bootstrap,
            "--window-start", key["window"]["start"], "--window-end", key["window"]["end"],
            "--stripe-source", str(stripe), "--warehouse", f"duckdb:///{warehouse}",
            "--as-of", key["report_as_of"],
        ]
    )  # fmt: skip


def _check_after_repair(warehouse: Path, key: dict) -> int:
    """After the repair, the window's latest run must find exactly the answer key's
    discrepancies that a machine must not fix."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        left = {
            _finding(*r)
            for r in con.execute(
                "SELECT d.kind, d.order_id, d.stripe_object_id FROM recon_discrepancies d "
                "JOIN recon_runs r ON r.run_id = d.run_id "
                "WHERE r.finished_at = (SELECT max(finished_at) FROM recon_runs)"
            ).fetchall()
        }
    expected = {
        _finding(d["kind"], d["order_id"], d["stripe_object_id"])
        for d in key["discrepancies"]
        if d["kind"] in UNREPAIRABLE
    }
    repaired = len(key["discrepancies"]) - len(expected)
    if left == expected:
        print(
            f"    repaired {repaired:,} discrepancies from Stripe's record; the reconcile after "
            f"the repair finds the {len(left):,} that need a human "
            f"({', '.join(sorted(UNREPAIRABLE))}): as expected"
        )
        return 0
    print(
        f"payrecon demo: after the repair {len(left):,} discrepancies are left, expected "
        f"{len(expected):,} (missing {len(expected - left)}, unexpected {len(left - expected)})",
        file=sys.stderr,
    )
    return 1


def _finding(kind: str, order_id: str | None, stripe_object_id: str | None) -> tuple:
    return (kind, order_id if kind == "duplicate_charge" else stripe_object_id)


def _check_against_key(warehouse: Path, key: dict) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        found = {
            _finding(*r)
            for r in con.execute(
                "SELECT kind, order_id, stripe_object_id FROM recon_discrepancies"
            ).fetchall()
        }
        by_reason = json.loads(
            con.execute("SELECT dead_letters_by_reason FROM recon_runs").fetchone()[0]
        )
    expected = {
        _finding(d["kind"], d["order_id"], d["stripe_object_id"]) for d in key["discrepancies"]
    }
    missed, extra = expected - found, found - expected
    reasons_ok = by_reason == key["totals"]["malformed_by_reason"]
    print("\nagainst the generator's answer key:")
    print(
        f"  discrepancies found {len(found):,} of {len(expected):,} injected; "
        f"missed {len(missed)}, false positives {len(extra)}"
    )
    print(f"  dead letters by reason = malformed lines by reason: {'yes' if reasons_ok else 'NO'}")
    for kind, ref in sorted(missed)[:5]:
        print(f"  missed: {kind} {ref}")
    for kind, ref in sorted(extra)[:5]:
        print(f"  false positive: {kind} {ref}")
    print(
        f"\nthe tables are in {warehouse}, for example:\n"
        f"  .venv/bin/python -c \"import duckdb; duckdb.connect('{warehouse}', read_only=True)"
        ".sql('SELECT kind, count(*) FROM recon_discrepancies GROUP BY kind').show()\""
    )
    return 0 if not missed and not extra and reasons_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
