"""``payrecon demo``: the whole pipeline on embedded defaults, no configuration, no network.

Starts the embedded broker, generates a realistic ledger day with known discrepancies and
malformed messages, publishes it to ``ledger.transactions``, reads the day back through the
Beam bounded read and decode (dead letters to ``ledger.transactions.dlq``), commits the
offsets it read, and prints what it found beside the generator's answer key.

The reconciliation against the Stripe export joins this run as that job is built; for now
the demo proves the foundation: every message is accounted for, in = out + dead letters.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.broker import EmbeddedBroker
from pipelines.publish import publish_lines
from pipelines.read import ReadOptions, run_read
from pipelines.synthetic.day import GenerateConfig, generate_day

DEMO_DAY = date(2026, 11, 20)
TOPIC = "ledger.transactions"
GROUP = "payrecon-demo"


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
        help="Directory for the generated files (default: %(default)s).",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Use this broker instead of starting the embedded one.",
    )
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
            malformed_rate=0.002,
        )
    )
    key = json.loads(day.answer_key_path.read_text())
    print(
        f"    {day.events:,} events, {day.malformed:,} malformed lines, "
        f"{day.stripe_rows:,} Stripe balance transactions, "
        f"{day.discrepancies:,} injected discrepancies ({time.perf_counter() - started:.1f} s)"
    )
    if args.bootstrap_servers:
        return _run(args.bootstrap_servers, day, key)
    _step("starting the embedded Kafka-compatible broker")
    with EmbeddedBroker() as broker:
        print(f"    listening on {broker.bootstrap_servers}")
        return _run(broker.bootstrap_servers, day, key)


def _run(bootstrap: str, day, key: dict) -> int:
    started = _step(f"publishing {day.ledger_path} to {TOPIC}")
    with day.ledger_path.open("rb") as lines:
        published = publish_lines(bootstrap, TOPIC, lines)
    if not published.ok:
        print(f"payrecon demo: {published.failed} messages were not acknowledged", file=sys.stderr)
        return 3
    print(
        f"    {published.published:,} messages acknowledged ({time.perf_counter() - started:.1f} s)"
    )

    window_start = datetime(DEMO_DAY.year, DEMO_DAY.month, DEMO_DAY.day, tzinfo=UTC)
    window_end = window_start + timedelta(days=1)
    started = _step(
        f"reading [{window_start:%Y-%m-%dT%H:%MZ}, {window_end:%Y-%m-%dT%H:%MZ}) "
        "through the Beam bounded read and decode (DirectRunner)"
    )
    options = PipelineOptions(
        [
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            TOPIC,
            "--group-id",
            GROUP,
            "--commit",
            "--window-start",
            window_start.isoformat(),
            "--window-end",
            window_end.isoformat(),
        ]
    ).view_as(ReadOptions)
    summary = run_read(options, ["--runner=DirectRunner"])
    print(f"    done in {time.perf_counter() - started:.1f} s\n")
    print(summary.render())

    expected = key["totals"]["malformed_by_reason"]
    events_ok = summary.events_out == day.events
    reasons_ok = summary.dead_letters_by_reason == expected
    print("\nagainst the generator's answer key:")
    print(f"  events decoded = events generated ({day.events:,}): {_yes(events_ok)}")
    print(f"  dead letters by reason = malformed lines by reason: {_yes(reasons_ok)}")
    print(f"  counts add up (in = out + dead letters): {_yes(summary.balanced)}")
    print(
        f"\ninjected discrepancies waiting for the reconciliation job "
        f"(answer key: {day.answer_key_path}):"
    )
    for kind, n in key["totals"]["discrepancies"]["by_kind"].items():
        print(f"  {kind:<22}{n:>6,}")
    return 0 if events_ok and reasons_ok and summary.balanced else 1


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    raise SystemExit(main())
