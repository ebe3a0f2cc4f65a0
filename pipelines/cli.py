"""The ``payrecon`` command: one subcommand per job, each also ``python -m pipelines.<job>``.

Exit codes (DESIGN.md): 0 success; 1 the job ran and found discrepancies above the
configured threshold; 2 bad usage or configuration; 3 a dependency (broker, Stripe,
warehouse) was unreachable after retries.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipelines.demo", "Run the whole thing locally on embedded defaults."),
    "broker": ("pipelines.broker", "Run the embedded Kafka-compatible broker (Tansu)."),
    "generate": ("pipelines.generate", "Generate a synthetic ledger day and Stripe export."),
    "publish": ("pipelines.publish", "Publish JSON lines to a Kafka topic."),
    "read": ("pipelines.read", "Read and decode a topic window; print the counts."),
    "reconcile": ("pipelines.reconcile", "Reconcile a ledger window against Stripe."),
    "repair": ("pipelines.repair", "Heal the ledger from Stripe for each new discrepancy."),
    "report": ("pipelines.report", "Write an HTML report of a reconcile run (charts, tables)."),
    "dlq": ("pipelines.dlq", "List, show, replay (once) and park dead letters."),
    "webhooks": ("pipelines.webhooks", "Receive Stripe webhooks; map them to order updates."),
    "config": ("pipelines.config_cmd", "Check a payrecon.yaml, or show it with secrets masked."),
    "gateway": ("pipelines.gateway", "Pay payments.requests through Stripe (or a local method)."),
    "telemetry": ("pipelines.telemetry", "Payment metrics per window; conversion by cohort."),
}

USAGE = "usage: payrecon <command> [options]   (payrecon <command> --help for its options)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        print("\ncommands:")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<10} {summary}")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"payrecon: unknown command {command!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
