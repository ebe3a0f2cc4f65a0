"""``payrecon config check FILE`` and ``payrecon config show FILE``.

``check`` validates a ``payrecon.yaml`` and prints one line per problem (key path, the value
given, what is allowed); exit 0 valid, 2 invalid. ``show`` prints the effective configuration
(the file with every default filled in) and which secret environment variables are set,
always masked: a secret's value is never printed.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from pipelines.cli_args import OneLineParser
from pipelines.config import ConfigError, PayreconConfig, load_config, mask_url, secrets_status
from transforms.stripe_io import API, API_KEY_ENV

PROG = "payrecon config"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (
        ("check", "Validate a config file; one line per problem, exit 2 if any."),
        ("show", "Print the effective config (defaults filled in, secrets masked)."),
    ):
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.add_argument("file", help="The YAML file, e.g. payrecon.yaml.")
    return parser


def effective(config: PayreconConfig) -> dict:
    """The configuration as plain data, URLs masked, plus the secrets' status."""
    data = config.model_dump(mode="json")
    data["reconcile"]["warehouse"] = mask_url(data["reconcile"]["warehouse"])
    for section in ("repair", "telemetry"):
        if data[section]["warehouse"]:
            data[section]["warehouse"] = mask_url(data[section]["warehouse"])
    data["environment"] = secrets_status()
    return data


def _notes(config: PayreconConfig) -> list[str]:
    uses_api = API in (config.reconcile.stripe_source, config.repair.stripe_source)
    if uses_api and secrets_status()[API_KEY_ENV] == "not set":
        return [f"note: stripe_source is api: set ${API_KEY_ENV} where the jobs run"]
    return []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        count = len(exc.problems)
        print(f"{PROG} {args.command}: {count} problem(s) in {exc.source}", file=sys.stderr)
        return 2
    if args.command == "check":
        for note in _notes(config):
            print(note, file=sys.stderr)
        print(f"{args.file}: valid")
        return 0
    print(yaml.safe_dump(effective(config), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
