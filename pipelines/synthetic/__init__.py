"""Synthetic payment days for demos and tests: ``payrecon generate`` is the command line.

``generate_day(GenerateConfig(...))`` writes a ledger (``ledger.jsonl``, ledger event v1),
Stripe's itemized balance-change export for the same activity
(``stripe_balance_change_from_activity.csv``) and ``answer_key.json``, which lists every
injected discrepancy and malformed line so a reconciliation can be checked exactly.
"""

from pipelines.synthetic.day import DaySummary, GenerateConfig, generate_day
from pipelines.synthetic.writers import ANSWER_KEY_FILE, LEDGER_FILE, STRIPE_COLUMNS, STRIPE_FILE

__all__ = [
    "ANSWER_KEY_FILE",
    "LEDGER_FILE",
    "STRIPE_COLUMNS",
    "STRIPE_FILE",
    "DaySummary",
    "GenerateConfig",
    "generate_day",
]
