"""The ordinary traffic of a day: checkouts, declines and retries, refunds, disputes.

Everything here is consistent between the ledger and Stripe (it reconciles cleanly); the
injected discrepancies come from :mod:`pipelines.synthetic.scenarios`.

Mix per ledger event: ~91% charge attempts (8% of card attempts are declined, and about
half of the declined orders are retried, usually successfully, on the same PaymentIntent),
~7.5% refunds (of today's charges or of older ones, full or partial), ~0.4% new disputes and
~0.1% disputes won (funds reinstated) on older charges. Failed charges have no balance
transaction. Stripe creates a balance transaction 0-2 s before the ledger records the event.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from pipelines.synthetic.catalog import METHODS, Picker
from pipelines.synthetic.clock import Window
from pipelines.synthetic.records import BalanceTxn, Mint, StripeObject

P_REFUND = 0.075
P_DISPUTE = 0.004
P_REINSTATED = 0.001
P_RETRY = 0.6
_LAG_S = Picker([(0, 0.50), (1, 0.35), (2, 0.15)])
_RESERVOIR = 5_000


class NormalFlow:
    """Emits one ordinary ledger event per call, plus its balance transaction if any.

    ``write_event`` receives each ledger event, ``add_txn`` each balance transaction;
    ``edge_cases`` collects the pairs whose two sides fall on different days.
    """

    def __init__(
        self,
        mint: Mint,
        window: Window,
        write_event: Callable[[dict], int],
        add_txn: Callable[[BalanceTxn], None],
    ):
        self.mint = mint
        self.rnd: random.Random = mint.rnd
        self._start_s, self._end_s = window.start_s, window.end_s
        self._write = write_event
        self._add = add_txn
        self._declined: deque = deque()
        self._refundable: list[StripeObject] = []
        self.edge_cases: list[dict] = []

    def emit(self, ms: int) -> None:
        u = self.rnd.random()
        if u < P_REFUND:
            self.refund(ms)
        elif u < P_REFUND + P_DISPUTE:
            self.dispute(ms)
        elif u < P_REFUND + P_DISPUTE + P_REINSTATED:
            self.dispute_won(ms)
        else:
            self.charge_attempt(ms)

    def charge_attempt(self, ms: int, *, created_s: int | None = None) -> None:
        """A checkout attempt; ``created_s`` forces a succeeded card charge created then."""
        rnd, mint = self.rnd, self.mint
        if created_s is not None:
            payment = mint.payment(ms, card=True)
        elif self._declined and rnd.random() < 0.5:
            payment = self._declined.popleft()
        else:
            payment = mint.payment(ms)
        charge = mint.charge(payment, ms // 1000 if created_s is None else created_s)
        if created_s is None and rnd.random() < METHODS[payment.method].failure_rate:
            self._write(
                mint.event("charge.failed", ms, charge, metadata=mint.failure_metadata(charge))
            )
            if rnd.random() < P_RETRY:
                self._declined.append(payment)
            return
        if created_s is None:
            charge.created_s = charge.charge_created_s = ms // 1000 - _LAG_S(rnd)
        event = mint.event("charge.succeeded", ms, charge)
        self._record(event, mint.balance_txn(charge, charge.created_s, "charge"), ms)
        if METHODS[payment.method].refundable:
            self._remember(charge)

    def refund(self, ms: int) -> None:
        created = ms // 1000 - _LAG_S(self.rnd)
        if self._refundable and self.rnd.random() < 0.4:
            i = self.rnd.randrange(len(self._refundable))
            charge = self._refundable[i]
            self._refundable[i] = self._refundable[-1]
            self._refundable.pop()
        else:
            charge = self.mint.past_charge(ms, days=(1, 30))
        refund = self.mint.refund(charge, created, partial=self.rnd.random() < 0.25)
        event = self.mint.event("refund.succeeded", ms, refund)
        self._record(event, self.mint.balance_txn(refund, created, "refund"), ms)

    def dispute(self, ms: int) -> None:
        created = ms // 1000 - _LAG_S(self.rnd)
        charge = self.mint.past_charge(ms, days=(7, 60), card=True)
        dispute = self.mint.dispute(charge, created)
        event = self.mint.event("dispute.created", ms, dispute, idempotency_key=None)
        self._record(event, self.mint.balance_txn(dispute, created, "dispute"), ms)

    def dispute_won(self, ms: int) -> None:
        """A dispute opened weeks ago is closed in the merchant's favour today."""
        created = ms // 1000 - _LAG_S(self.rnd)
        charge = self.mint.past_charge(ms, days=(40, 90), card=True)
        opened_s = charge.created_s + self.rnd.randint(7, 30) * 86_400
        dispute = self.mint.dispute(charge, opened_s)
        event = self.mint.event("dispute.funds_reinstated", ms, dispute, idempotency_key=None)
        self._record(event, self.mint.balance_txn(dispute, created, "dispute_reversal"), ms)

    def _record(self, event: dict, bt: BalanceTxn, ms: int) -> None:
        self._write(event)
        self._add(bt)
        if not self._start_s <= bt.created_s < self._end_s:
            self.edge_cases.append(
                {
                    "event_id": event["event_id"],
                    "stripe_object_id": event["stripe_object_id"],
                    "occurred_at": event["occurred_at"],
                    "balance_transaction_id": bt.id,
                    "created": bt.created_s,
                    "gap_seconds": round(abs(bt.created_s - ms / 1000), 3),
                }
            )

    def _remember(self, charge: StripeObject) -> None:
        if len(self._refundable) < _RESERVOIR:
            self._refundable.append(charge)
        else:
            self._refundable[self.rnd.randrange(_RESERVOIR)] = charge
