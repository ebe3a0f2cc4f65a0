"""``payrecon generate``: a synthetic ledger day, the matching Stripe export and an answer key.

Writes into --out:
  ledger.jsonl                               ledger events v1, one JSON object per line, in
                                             time order (plus the malformed lines asked for)
  stripe_balance_change_from_activity.csv    Stripe's balance_change_from_activity.itemized
                                             report for the same activity (major units)
  answer_key.json                            every injected discrepancy and malformed line,
                                             lateness edge cases, counts and sums

The same --seed always produces byte-identical files.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
from datetime import date
from pathlib import Path

from pipelines.cli_args import OneLineParser, whole_number
from pipelines.synthetic import GenerateConfig, generate_day
from pipelines.synthetic.day import DEFAULT_MAX_PAYLOAD

PROG = "payrecon generate"


def _day(text: str) -> date:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-20")


_count = whole_number(0)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def _payload(text: str) -> int:
    value = _count(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"{value} is below the minimum of 1024 bytes")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--date",
        type=_day,
        required=True,
        help="The UTC day to generate, YYYY-MM-DD (e.g. 2026-11-20).",
    )
    parser.add_argument(
        "--events",
        type=_count,
        default=10_000,
        help="Number of valid ledger events (default: %(default)s).",
    )
    parser.add_argument(
        "--discrepancy-rate",
        type=_rate,
        default=0.01,
        help="Injected discrepancies as a fraction of --events, in [0, 1], "
        "spread over every kind; at least one of each kind when --events "
        ">= 100 and the rate is > 0 (default: %(default)s).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Directory to write the three files into (created if missing).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="Random seed; the same seed gives identical files (default: %(default)s).",
    )
    parser.add_argument(
        "--malformed-rate",
        type=_rate,
        default=0.0,
        help="Malformed lines to add to the ledger, as a fraction of --events, "
        "in [0, 1]: one of every dead-letter reason in turn, including one line "
        "over --max-payload (default: %(default)s).",
    )
    parser.add_argument(
        "--max-payload",
        type=_payload,
        default=DEFAULT_MAX_PAYLOAD,
        help="The decoder's payload limit in bytes; the oversized malformed "
        "line is about 1 KiB over it (default: %(default)s).",
    )
    parser.add_argument(
        "--workers",
        type=_count,
        default=0,
        help="Processes to generate with (default 0: one per CPU); the files "
        "are the same whatever the number.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress lines on stderr.")
    return parser


def _check_writable(parser: argparse.ArgumentParser, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        parser.error(f"argument --out: cannot write to {str(out)!r}: {exc.strerror or exc}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _check_writable(parser, args.out)
    config = GenerateConfig(
        day=args.date,
        events=args.events,
        discrepancy_rate=args.discrepancy_rate,
        out=args.out,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
        max_payload=args.max_payload,
    )

    def progress(done: int, total: int) -> None:
        print(f"{PROG}: {done:,}/{total:,} events ({done / total:.0%})", file=sys.stderr)

    summary = generate_day(config, None if args.quiet else progress, args.workers or None)
    for warning in summary.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(
        f"{summary.events:,} ledger events (+{summary.malformed:,} malformed lines) -> "
        f"{summary.ledger_path}\n"
        f"{summary.stripe_rows:,} balance transactions -> {summary.stripe_path}\n"
        f"{summary.discrepancies:,} injected discrepancies -> {summary.answer_key_path}\n"
        f"generated in {summary.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
