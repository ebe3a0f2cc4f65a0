"""The contracts: versioned pyarrow schemas of every record kind payrecon reads or writes."""

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.dead_letter import DEAD_LETTER_V1
from schemas.discrepancy import DISCREPANCY_V1
from schemas.dlq_replay import DLQ_REPLAY_V1
from schemas.dq_result import CONSERVATION_V1, DQ_RESULT_V1
from schemas.health import RECON_HEALTH_V1
from schemas.ledger_event import LEDGER_EVENT_V1
from schemas.match import RECON_COUNT_V1, RECON_MATCH_V1, RECON_TOTALS_V1
from schemas.order_status import ORDER_STATUS_V1
from schemas.payments import PAYMENT_REQUEST_V1, PAYMENT_RESULT_V1, PAYMENT_TELEMETRY_V1
from schemas.repair import RECON_REPAIR_V1, RECON_REVIEW_V1
from schemas.stripe_event import STRIPE_EVENT_ENVELOPE_V1
from schemas.tables import DAILY_REVENUE_V1, RECON_RUN_V1

REGISTRY = {
    "balance_transaction": BALANCE_TRANSACTION_V1,
    "ledger_event": LEDGER_EVENT_V1,
    "discrepancy": DISCREPANCY_V1,
    "dead_letter": DEAD_LETTER_V1,
    "recon_match": RECON_MATCH_V1,
    "recon_count": RECON_COUNT_V1,
    "recon_totals": RECON_TOTALS_V1,
    "recon_run": RECON_RUN_V1,
    "daily_revenue": DAILY_REVENUE_V1,
    "dq_result": DQ_RESULT_V1,
    "conservation": CONSERVATION_V1,
    "order_status": ORDER_STATUS_V1,
    "stripe_event": STRIPE_EVENT_ENVELOPE_V1,
    "dlq_replay": DLQ_REPLAY_V1,
    "recon_repair": RECON_REPAIR_V1,
    "recon_review": RECON_REVIEW_V1,
    "recon_health": RECON_HEALTH_V1,
    "payment_request": PAYMENT_REQUEST_V1,
    "payment_result": PAYMENT_RESULT_V1,
    "payment_telemetry": PAYMENT_TELEMETRY_V1,
}

__all__ = [
    "BALANCE_TRANSACTION_V1",
    "DEAD_LETTER_V1",
    "DISCREPANCY_V1",
    "LEDGER_EVENT_V1",
    "ORDER_STATUS_V1",
    "PAYMENT_REQUEST_V1",
    "PAYMENT_RESULT_V1",
    "PAYMENT_TELEMETRY_V1",
    "REGISTRY",
    "STRIPE_EVENT_ENVELOPE_V1",
]
