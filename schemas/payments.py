"""The payment gateway adapter's contracts: requests in, results and telemetry out.

``payments.requests`` carries payment request v1 (one JSON object per message, any key);
``payrecon gateway`` pays each one through a gateway implementation and publishes one
payment result v1 to ``payments.results`` (key = ``request_id``) and, for every call to the
gateway and every change of its concurrency, one payment telemetry v1 to
``payments.telemetry`` (key = ``request_id``, or the consumer's id for controller events).
A request that can never be paid goes to ``payments.requests.dlq`` instead of a result.
Amounts are integers in the currency's minor units, greater than zero.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.currencies import ISO_4217
from schemas.fields import UTC_MICROS, field, is_required, versioned
from schemas.ledger_event import MAX_AMOUNT

# What a payment came to. requires_action: the customer still has to act (3-D Secure, a
# voucher to pay at a store, a payment method to enter); processing: the gateway has not
# decided yet (bank debits); failed: declined or canceled, a retry needs a new request.
PAYMENT_STATUSES = ("succeeded", "requires_action", "processing", "failed")
TELEMETRY_KINDS = ("attempt", "controller")
# attempt: success (the gateway answered with a result, a decline included), retry (a
# transient failure, retried after backoff_ms), permanent (the gateway refused the request:
# it is dead-lettered), give_up (the retry budget is spent); controller: increase or
# decrease of the concurrency limit, or of its ceiling and the retry backoff (an alert on
# telemetry.alerts slows the gateway down: decrease; a quiet period undoes it: increase).
TELEMETRY_OUTCOMES = ("success", "retry", "permanent", "give_up", "increase", "decrease")

PAYMENT_REQUEST_V1 = versioned(
    "payment_request",
    1,
    [
        field(
            "request_id",
            pa.string(),
            "UUID of this request, chosen by the requester. The gateway's idempotency key "
            "is derived from it: a request delivered or sent twice pays once.",
            format="uuid",
        ),
        field("order_id", pa.string(), "The order being paid.", minLength=1),
        field(
            "amount",
            pa.int64(),
            "Amount in minor units of currency, at least 1.",
            minimum=1,
            maximum=MAX_AMOUNT,
        ),
        field("currency", pa.string(), "ISO 4217 code, lowercase.", enum=sorted(ISO_4217)),
        field(
            "payment_method_type",
            pa.string(),
            "card, sepa_debit, konbini, boleto, oxxo ...; also routes the request to a "
            "gateway (payrecon gateway --route).",
            minLength=1,
        ),
        field(
            "payment_method",
            pa.string(),
            "The gateway's payment method (pm_... for Stripe). With one the payment is "
            "confirmed at once; without, it waits for the customer (requires_action).",
            required=False,
        ),
        field("customer_id", pa.string(), "The gateway's customer (cus_...).", required=False),
        field(
            "country",
            pa.string(),
            "ISO 3166-1 alpha-2 country of the payment.",
            required=False,
            pattern="^[A-Z]{2}$",
        ),
        field("card_brand", pa.string(), "visa, mastercard, jcb ... (cohorts).", required=False),
        field(
            "gateway",
            pa.string(),
            "Which gateway implementation pays it (stripe, voucher ...). Absent: the "
            "route of its payment_method_type, else the consumer's default.",
            required=False,
        ),
        field(
            "metadata",
            pa.map_(pa.string(), pa.string()),
            "Free-form string map, passed on to the gateway.",
            required=False,
        ),
        field(
            "created_at",
            UTC_MICROS,
            "When the request was made, RFC 3339, stored in UTC.",
            format="date-time",
        ),
    ],
    doc="A request to take a payment, published by the checkout service.",
)

PAYMENT_RESULT_V1 = versioned(
    "payment_result",
    1,
    [
        field("request_id", pa.string(), "The request's UUID; also the Kafka message key."),
        field("order_id", pa.string(), "The order paid for."),
        field(
            "status",
            pa.string(),
            "succeeded, requires_action, processing or failed.",
            enum=list(PAYMENT_STATUSES),
        ),
        field(
            "payment_intent_id",
            pa.string(),
            "The gateway's payment object (Stripe PaymentIntent pi_..., voucher vch_...); "
            "null when the gateway refused before creating one.",
            nullable=True,
        ),
        field(
            "charge_id",
            pa.string(),
            "The charge (ch_...), when the gateway made one.",
            nullable=True,
        ),
        field("amount", pa.int64(), "Amount requested, minor units.", minimum=1),
        field("currency", pa.string(), "ISO 4217 code, lowercase.", enum=sorted(ISO_4217)),
        field(
            "error_code",
            pa.string(),
            "Why it failed or needs action (card_declined ...); null otherwise.",
            nullable=True,
        ),
        field(
            "gateway_status",
            pa.string(),
            "The gateway's own status word (Stripe: requires_payment_method ...).",
            nullable=True,
        ),
        field("gateway", pa.string(), "The gateway implementation that paid it."),
        field(
            "idempotency_key",
            pa.string(),
            "The idempotency key the payment was created with (ledger events carry it too).",
        ),
        field(
            "attempts",
            pa.int32(),
            "Calls to the gateway for this request by the consumer that published it.",
            minimum=1,
        ),
        field("processed_at", UTC_MICROS, "When the result was decided (UTC).", format="date-time"),
    ],
    doc="What became of one payment request; exactly one per request that was not "
    "dead-lettered (a redelivery after a crash may repeat it, with the same payment).",
)

PAYMENT_TELEMETRY_V1 = versioned(
    "payment_telemetry",
    1,
    [
        field("event_id", pa.string(), "Unique id of this telemetry event."),
        field("kind", pa.string(), "attempt or controller.", enum=list(TELEMETRY_KINDS)),
        field(
            "outcome",
            pa.string(),
            "attempt: success (a result, a decline included), retry, permanent (dead-"
            "lettered), give_up; controller: increase, decrease.",
            enum=list(TELEMETRY_OUTCOMES),
        ),
        field("at", UTC_MICROS, "When it happened (UTC).", format="date-time"),
        field("consumer_id", pa.string(), "The gateway consumer instance."),
        field("request_id", pa.string(), "The request (attempts only).", nullable=True),
        field("order_id", pa.string(), "The order (attempts only).", nullable=True),
        field("gateway", pa.string(), "The gateway called (attempts only).", nullable=True),
        field("attempt", pa.int32(), "1 for the first call of a request ...", nullable=True),
        field("latency_ms", pa.float64(), "Duration of the call.", nullable=True),
        field("http_status", pa.int32(), "HTTP status; null: no answer.", nullable=True),
        field(
            "reason",
            pa.string(),
            "Classified failure: http_429, http_500, timeout, connection ...; for a "
            "controller event, the signal that caused it (http_429, timeout, successes, "
            "alert:<metric> for a telemetry alert, recovered after one).",
            nullable=True,
        ),
        field("error_code", pa.string(), "The gateway's code (rate_limit ...).", nullable=True),
        field(
            "stripe_request_id",
            pa.string(),
            "Stripe's Request-Id of the call (req_...), to quote to Stripe support.",
            nullable=True,
        ),
        field(
            "backoff_ms",
            pa.float64(),
            "The wait before the next attempt (retry only): jittered backoff, or the "
            "server's Retry-After when longer. Controller events: the backoff base in "
            "force after it (--backoff-base times the telemetry alerts' factor).",
            nullable=True,
        ),
        field(
            "retry_after_ms",
            pa.float64(),
            "The wait the server asked for (Retry-After).",
            nullable=True,
        ),
        field(
            "concurrency",
            pa.int32(),
            "The concurrency limit in force after this event.",
            minimum=1,
        ),
        field(
            "previous_concurrency",
            pa.int32(),
            "The limit before a controller event.",
            nullable=True,
        ),
        field(
            "ceiling",
            pa.int32(),
            "Controller events: the highest the limit may grow to after it (the maximum "
            "concurrency, or lower while telemetry alerts hold the gateway down).",
            required=False,
            minimum=1,
        ),
        field("amount", pa.int64(), "Amount requested, minor units.", nullable=True),
        field("currency", pa.string(), "ISO 4217 code, lowercase.", nullable=True),
        field("payment_method_type", pa.string(), "Cohort: card, konbini ...", nullable=True),
        field("card_brand", pa.string(), "Cohort: visa, mastercard ...", nullable=True),
        field("country", pa.string(), "Cohort: ISO 3166-1 alpha-2.", nullable=True),
    ],
    doc="One call to a payment gateway, or one change of the consumer's concurrency.",
)

REQUEST_REQUIRED_FIELDS = tuple(f.name for f in PAYMENT_REQUEST_V1 if is_required(f))
