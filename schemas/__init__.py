"""The contracts: versioned pyarrow schemas of every record kind payrecon reads or writes."""

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.dead_letter import DEAD_LETTER_V1
from schemas.discrepancy import DISCREPANCY_V1
from schemas.ledger_event import LEDGER_EVENT_V1

REGISTRY = {
    "balance_transaction": BALANCE_TRANSACTION_V1,
    "ledger_event": LEDGER_EVENT_V1,
    "discrepancy": DISCREPANCY_V1,
    "dead_letter": DEAD_LETTER_V1,
}

__all__ = [
    "BALANCE_TRANSACTION_V1",
    "DEAD_LETTER_V1",
    "DISCREPANCY_V1",
    "LEDGER_EVENT_V1",
    "REGISTRY",
]
