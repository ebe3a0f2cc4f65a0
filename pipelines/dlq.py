"""``payrecon dlq``: inspect, replay and park the dead letters of every consuming job.

  payrecon dlq list   [--topic T.dlq ...]         counts by reason and job, status of each
  payrecon dlq show   [--topic T.dlq] [selection]  dead letters with their original bytes
  payrecon dlq replay --topic T.dlq (selection | --fixed-file F) [--include-parked] [--dry-run]
  payrecon dlq park   --topic T.dlq selection [--note TEXT] [--dry-run]

A selection is ``--offset N`` (repeatable, with ``--partition P`` on a topic of several
partitions), ``--reason R``, ``--older-than 7d``, ``--failed-again`` (dead letters of
messages that were themselves replays), or ``--all``; given filters must all match.

A replay re-publishes a dead letter's original key and value, or the fix given in
``--fixed-file`` (JSON lines ``{"partition": P, "offset": N, "value": {...}}``), to its
source topic and partition with ``payrecon.replay.*`` provenance headers, once: a dead letter
already replayed is reported and left alone, even across a crash (see pipelines/dlq_replay.py).
Parked dead letters (copied to ``<dlq>.parked``) are skipped unless ``--include-parked``.

Exit codes: 0 done; 2 bad usage (one line: the flag, the value, what is allowed); 3 the
broker was unreachable or did not acknowledge a write.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from pipelines.cli_args import OneLineParser, whole_number
from pipelines.dlq_inspect import TopicSummary, render_letter, show_json
from pipelines.dlq_park import choose_to_park, park
from pipelines.dlq_replay import Kafka, Replayer, ReplayOutcome, choose
from pipelines.dlq_select import Selection, duration, load_fixes
from pipelines.options import UsageError
from schemas.dead_letter import dlq_topic
from schemas.dlq_replay import Coordinates
from transforms.dlq_io import topic_partitions
from transforms.dlq_letters import DeadLetter, DlqState, load_state, read_dead_letters
from transforms.kafka_config import parse_overrides
from transforms.kafka_offsets import BrokerUnavailable

PROG = "payrecon dlq"
DEFAULT_DLQ = dlq_topic("ledger.transactions")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers, host:port[,host:port] (default: %(default)s).",
    )
    parser.add_argument(
        "--broker-timeout",
        type=float,
        default=30.0,
        help="Seconds to wait for the broker before exit code 3 (default: %(default)s).",
    )
    parser.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra librdkafka setting (repeatable), e.g. security.protocol=SASL_SSL.",
    )
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")


def _selection(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--offset",
        dest="offsets",
        action="append",
        type=whole_number(0),
        default=[],
        help=f"{verb} the dead letter at this offset of the .dlq topic (repeatable).",
    )
    parser.add_argument(
        "--partition", type=whole_number(0), help="Partition of the .dlq topic (for --offset)."
    )
    parser.add_argument("--reason", help=f"{verb} dead letters with this reason, e.g. not_json.")
    parser.add_argument(
        "--older-than", type=duration, help=f"{verb} dead letters older than this, e.g. 7d."
    )
    parser.add_argument(
        "--failed-again",
        action="store_true",
        help=f"{verb} dead letters of messages that were replays already.",
    )
    parser.add_argument(
        "--all", dest="everything", action="store_true", help=f"{verb} every dead letter."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="Counts by reason, job and status.")
    listing.add_argument(
        "--topic",
        dest="topics",
        action="append",
        metavar="TOPIC",
        help="A .dlq topic (repeatable; default: every topic whose name ends in .dlq).",
    )
    listing.add_argument("--all", action="store_true", help="Every .dlq topic (the default).")
    show = commands.add_parser("show", help="Dead letters with their original bytes.")
    show.add_argument("--topic", default=DEFAULT_DLQ, help="The .dlq topic (%(default)s).")
    _selection(show, "Show")
    show.add_argument(
        "--limit", type=whole_number(1), default=20, help="Show at most this many (%(default)s)."
    )
    replay = commands.add_parser("replay", help="Re-publish dead letters to their source, once.")
    replay.add_argument("--topic", required=True, help="The .dlq topic, e.g. " + DEFAULT_DLQ)
    _selection(replay, "Replay")
    replay.add_argument(
        "--fixed-file",
        type=Path,
        help="JSON lines {partition, offset, value}: replay these dead letters with this value.",
    )
    replay.add_argument(
        "--include-parked", action="store_true", help="Replay parked dead letters too."
    )
    replay.add_argument("--dry-run", action="store_true", help="Say what would be replayed.")
    parking = commands.add_parser("park", help="Set aside dead letters that keep failing.")
    parking.add_argument("--topic", required=True, help="The .dlq topic, e.g. " + DEFAULT_DLQ)
    _selection(parking, "Park")
    parking.add_argument("--note", help="Why they are parked (default: the selection).")
    parking.add_argument("--dry-run", action="store_true", help="Say what would be parked.")
    for sub in (listing, show, replay, parking):
        _common(sub)
    return parser


def _partitions_of(dlq: str, topics: dict[str, int]) -> int:
    """The partition count of an existing ``.dlq`` topic, or a UsageError naming the others."""
    if not dlq.endswith(".dlq"):
        hint = f"; did you mean {dlq_topic(dlq)}?" if dlq_topic(dlq) in topics else ""
        raise UsageError(f"--topic {dlq!r} is not a dead-letter topic (no .dlq suffix){hint}")
    if dlq not in topics:
        known = ", ".join(sorted(t for t in topics if t.endswith(".dlq"))) or "none"
        raise UsageError(f"--topic {dlq!r} does not exist (dead-letter topics: {known})")
    return topics[dlq]


class _Topic:
    """One ``.dlq`` topic read whole, with its replay and park state."""

    def __init__(self, kafka: Kafka, dlq: str, topics: dict[str, int] | None = None):
        if topics is None:
            topics = topic_partitions(kafka.bootstrap_servers, kafka.overrides, kafka.timeout)
        self.topics = topics
        self.name = dlq
        self.partitions = _partitions_of(dlq, topics)
        where = (kafka.bootstrap_servers, dlq)
        self.letters: list[DeadLetter] = list(
            read_dead_letters(*where, self.partitions, kafka.overrides, kafka.timeout)
        )
        self.state: DlqState = load_state(*where, topics, kafka.overrides, kafka.timeout)

    def select(self, selection: Selection) -> list[DeadLetter]:
        selection.check(self.partitions)
        now = datetime.now(UTC)
        selection.check_found(self.letters)
        return [x for x in self.letters if selection.matches(x, self.state, now)]


def _selection_of(args: argparse.Namespace, extra: Iterable[Coordinates] = ()) -> Selection:
    return Selection(
        topic=args.topic,
        offsets=frozenset(args.offsets),
        partition=args.partition,
        reason=args.reason,
        older_than=args.older_than,
        failed_again=args.failed_again,
        everything=args.everything,
        extra=frozenset(extra),
    )


def cmd_list(args: argparse.Namespace, kafka: Kafka) -> int:
    topics = topic_partitions(kafka.bootstrap_servers, kafka.overrides, kafka.timeout)
    names = args.topics or sorted(t for t in topics if t.endswith(".dlq"))
    summaries = []
    for name in names:
        topic = _Topic(kafka, name, topics)
        summaries.append(TopicSummary.of(name, topic.partitions, topic.letters, topic.state))
    if args.json:
        print(json.dumps({"topics": [s.as_json() for s in summaries]}, indent=2))
    else:
        print("\n\n".join(s.render() for s in summaries) or "no dead-letter topics")
    return 0


def cmd_show(args: argparse.Namespace, kafka: Kafka) -> int:
    topic = _Topic(kafka, args.topic)
    selection = _selection_of(args)
    if not selection.asked:
        selection = dataclasses.replace(selection, everything=True)
    chosen = topic.select(selection)
    for letter in chosen[: args.limit]:
        if args.json:
            print(json.dumps(show_json(letter, topic.state), ensure_ascii=False))
        else:
            print(render_letter(letter, topic.state) + "\n")
    if not chosen:
        print(f"no dead letter of {args.topic} matches", file=sys.stderr)
    elif len(chosen) > args.limit:
        print(f"showed {args.limit} of {len(chosen)}; see --limit", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace, kafka: Kafka) -> int:
    topic = _Topic(kafka, args.topic)
    fixes = load_fixes(args.fixed_file, args.topic, topic.partitions) if args.fixed_file else {}
    selection = _selection_of(args, fixes)
    if not selection.asked:
        raise UsageError(
            "say what to replay: --offset, --reason, --older-than, --failed-again, "
            "--fixed-file or --all"
        )
    outcome = ReplayOutcome()
    chosen = topic.select(selection)
    new, pending = choose(chosen, topic.state, fixes, topic.topics, args.include_parked, outcome)
    outcome.dry_run = args.dry_run
    Replayer(kafka, args.topic).run(new, pending, topic.state, outcome)
    _print(outcome.rows(), outcome.render(), args.json)
    return 3 if outcome.failed else 0


def cmd_park(args: argparse.Namespace, kafka: Kafka) -> int:
    topic = _Topic(kafka, args.topic)
    selection = _selection_of(args)
    if not selection.asked:
        raise UsageError(
            "say what to park: --offset, --reason, --older-than, --failed-again or --all"
        )
    outcome = choose_to_park(topic.select(selection), topic.state)
    outcome.dry_run = args.dry_run
    note = args.note or f"parked by payrecon dlq park ({selection.describe()})"
    if not args.dry_run:
        park(kafka, args.topic, outcome, note)
    _print(outcome.rows(), outcome.render(), args.json)
    return 0


def _print(rows: list[dict], text: str, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(text)


COMMANDS = {"list": cmd_list, "show": cmd_show, "replay": cmd_replay, "park": cmd_park}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    where = f"{PROG} {args.command}"
    try:
        overrides = parse_overrides(args.kafka_config)
    except ValueError as exc:
        parser.error(str(exc))
    kafka = Kafka(args.bootstrap_servers, overrides, args.broker_timeout)
    try:
        return COMMANDS[args.command](args, kafka)
    except UsageError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    except BrokerUnavailable as exc:
        print(f"{where}: broker unavailable: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
