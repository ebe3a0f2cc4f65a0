"""The Stripe gateway against localstripe, through the fault proxy, and its Arrow rows.

Retry delays are asserted on an injected clock (no test waits for a backoff); only the
timeout test waits, for a 0.3 s read timeout.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pytest

from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from tests.stripe_proxy import (
    StripeProxy,
    drop,
    drop_response,
    error_response,
    hang,
    rate_limited,
    server_error,
)
from transforms.retry import RetryPolicy
from transforms.stripe_api import (
    RequestRecord,
    StripeClient,
    StripePermanentError,
    StripeUnavailable,
    decode_json,
    epoch_seconds_ceil,
    mask_secret,
)
from transforms.stripe_rows import balance_transactions_to_arrow, fetch_window

if TYPE_CHECKING:
    from tests.stripe_fixtures import FakeClock, LocalStripe

pytest_plugins = ("tests.stripe_fixtures",)

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.1, max_delay_s=1.0, deadline_s=60.0)
REFERENCE = Path("/work/shared/reference/stripe/fixtures3.json")
BT_PATH = "/v1/balance_transactions"
PI_PATH = "/v1/payment_intents"
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _client(proxy: StripeProxy, api_key: str, clock: FakeClock, **kwargs: Any) -> StripeClient:
    options: dict[str, Any] = {"retry": FAST, "connect_timeout_s": 2.0, "read_timeout_s": 5.0}
    options.update(kwargs)
    return StripeClient(api_key, api_base=proxy.url, timing=clock.timing(), **options)


@pytest.fixture
def client(
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
    fake_clock: FakeClock,
) -> Iterator[StripeClient]:
    with _client(stripe_proxy, stripe_api_key, fake_clock) as made:
        yield made


def _all_pages(client: StripeClient, **kwargs: Any) -> list[list[dict[str, Any]]]:
    return list(client.list_balance_transactions(*ALL_TIME, **kwargs))


def _next_second() -> None:
    time.sleep(1.0 - time.time() % 1.0 + 0.02)


# -- listing ----------------------------------------------------------------------------


def test_listing_follows_cursors_through_every_balance_transaction(
    client: StripeClient,
    localstripe: LocalStripe,
) -> None:
    charges = [localstripe.create_charge(100 + i) for i in range(250)]

    pages = _all_pages(client)

    assert [len(page) for page in pages] == [100, 100, 50]
    listed = [bt["id"] for page in pages for bt in page]
    assert sorted(listed) == sorted(c["balance_transaction"] for c in charges)
    assert len(set(listed)) == 250


def test_listing_asks_the_server_to_filter_and_filters_itself_when_refused(
    client: StripeClient,
    localstripe: LocalStripe,
    stripe_proxy: StripeProxy,
) -> None:
    localstripe.create_charge(500)

    assert sum(len(page) for page in _all_pages(client)) == 1

    queries = [parse_qs(r.query) for r in stripe_proxy.requests_to(BT_PATH)]
    assert queries[0]["created[gte]"] == [str(epoch_seconds_ceil(ALL_TIME[0]))]
    assert queries[0]["created[lt]"] == [str(epoch_seconds_ceil(ALL_TIME[1]))]
    assert [r.status for r in stripe_proxy.requests_to(BT_PATH)] == [400, 200]
    assert "created[gte]" not in queries[1]


def test_only_transactions_created_inside_the_window_are_listed(
    client: StripeClient,
    localstripe: LocalStripe,
) -> None:
    batches = _three_batches_one_second_apart(localstripe)
    inside = batches[1]
    start = datetime.fromtimestamp(min(inside.values()), UTC)
    end = datetime.fromtimestamp(max(inside.values()) + 1, UTC)

    listed = [bt["id"] for page in client.list_balance_transactions(start, end) for bt in page]

    assert sorted(listed) == sorted(inside)


def test_fetch_window_widens_the_window_by_the_margin_on_both_sides(
    client: StripeClient,
    localstripe: LocalStripe,
) -> None:
    batches = _three_batches_one_second_apart(localstripe)
    created = {txn: at for batch in batches for txn, at in batch.items()}
    first, last = min(batches[1].values()), max(batches[1].values())
    start, end = datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last + 1, UTC)

    plain = fetch_window(client, start, end)
    widened = fetch_window(client, start, end, timedelta(seconds=1))

    assert sorted(plain.column("balance_transaction_id").to_pylist()) == sorted(batches[1])
    expected = sorted(txn for txn, at in created.items() if first - 1 <= at < last + 2)
    assert sorted(widened.column("balance_transaction_id").to_pylist()) == expected
    assert len(expected) > len(batches[1])  # the neighbours one second away are included


def _three_batches_one_second_apart(server: LocalStripe) -> list[dict[str, int]]:
    """Three batches of charges, each in later seconds than the one before:
    ``[{balance transaction id: created}, ...]``."""
    batches: list[dict[str, int]] = []
    for size in (2, 3, 2):
        if batches:
            _next_second()
        batch = {}
        for i in range(size):
            txn = server.create_charge(1000 + i)["balance_transaction"]
            batch[txn] = server.get(f"{BT_PATH}/{txn}")["created"]
        batches.append(batch)
    return batches


def test_expanded_sources_give_the_charge_order_and_refund_links(
    client: StripeClient,
    localstripe: LocalStripe,
) -> None:
    charge = localstripe.create_charge(2500, "eur", order_id="order-42")
    refund = localstripe.refund(charge["id"], 1000)

    table = fetch_window(client, *ALL_TIME)

    rows = {row["source_id"]: row for row in table.to_pylist()}
    assert table.schema == BALANCE_TRANSACTION_V1
    sale, refunded = rows[charge["id"]], rows[refund["id"]]
    assert (sale["amount"], sale["fee"], sale["net"], sale["currency"]) == (2500, 0, 2500, "eur")
    assert (sale["type"], sale["charge_id"], sale["order_id"]) == (
        "charge",
        charge["id"],
        "order-42",
    )
    assert (refunded["amount"], refunded["type"], refunded["charge_id"]) == (
        -1000,
        "refund",
        charge["id"],
    )
    assert sale["exchange_rate"] == "1.0"
    assert sale["created"] == datetime.fromtimestamp(charge["created"], UTC)
    assert {row["origin"] for row in rows.values()} == {"api"}


def test_without_expansion_the_source_is_its_id(
    client: StripeClient,
    localstripe: LocalStripe,
) -> None:
    charge = localstripe.create_charge(700, order_id="order-7")

    (row,) = fetch_window(client, *ALL_TIME, expand_source=False).to_pylist()

    assert (row["source_id"], row["charge_id"], row["order_id"]) == (
        charge["id"],
        charge["id"],
        None,
    )


# -- retrieve and create -----------------------------------------------------------------


def test_retrieve_returns_each_kind_of_object(
    client: StripeClient,
    localstripe: LocalStripe,
) -> None:
    charge = localstripe.create_charge(900)
    refund = localstripe.refund(charge["id"])
    intent = client.create_payment_intent(
        300, "usd", idempotency_key="retrieve-kinds", payment_method="pm_card_visa", confirm=True
    )

    assert client.retrieve("charge", charge["id"])["amount"] == 900
    assert client.retrieve("refund", refund["id"])["charge"] == charge["id"]
    txn = client.retrieve("balance_transaction", charge["balance_transaction"])
    assert txn["source"] == charge["id"]
    assert client.retrieve("payment_intent", intent["id"])["status"] == "succeeded"
    expanded = client.retrieve("balance_transaction", txn["id"], expand=["source"])
    assert expanded["source"]["id"] == charge["id"]


def test_retrieving_an_unknown_kind_is_a_usage_error(client: StripeClient) -> None:
    with pytest.raises(ValueError, match="payout"):
        client.retrieve("payout", "po_123")


def test_a_payment_intent_is_created_with_its_idempotency_key(
    client: StripeClient,
    stripe_proxy: StripeProxy,
) -> None:
    intent = client.create_payment_intent(
        1234, "jpy", idempotency_key="req-1", metadata={"order_id": "o-1"}
    )

    assert (intent["amount"], intent["currency"], intent["metadata"]) == (
        1234,
        "jpy",
        {"order_id": "o-1"},
    )
    (post,) = stripe_proxy.requests_to(PI_PATH, "POST")
    assert post.idempotency_key == "req-1"


@pytest.mark.parametrize(
    ("amount", "currency", "key"), [(0, "usd", "k"), (100, "USD", "k"), (100, "usd", "")]
)
def test_an_invalid_payment_intent_is_refused_before_any_request(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    amount: int,
    currency: str,
    key: str,
) -> None:
    with pytest.raises(ValueError):
        client.create_payment_intent(amount, currency, idempotency_key=key)
    assert stripe_proxy.requests == []


# -- retries ------------------------------------------------------------------------------


def test_a_rate_limited_request_waits_as_long_as_retry_after_says(
    client: StripeClient,
    localstripe: LocalStripe,
    stripe_proxy: StripeProxy,
    fake_clock: FakeClock,
) -> None:
    localstripe.create_charge(100)
    stripe_proxy.inject(rate_limited(retry_after=3), path=BT_PATH)

    assert client.retrieve("charge", localstripe.get("/v1/charges")["data"][0]["id"])
    assert sum(len(page) for page in _all_pages(client)) == 1

    assert fake_clock.sleeps == [3.0]
    assert [r.status for r in stripe_proxy.requests_to(BT_PATH)] == [429, 400, 200]


def test_retry_after_as_an_http_date_is_honoured(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    fake_clock: FakeClock,
) -> None:
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(fake_clock.now + 5))
    stripe_proxy.inject(rate_limited(retry_after=date), path=PI_PATH)

    client.create_payment_intent(100, "usd", idempotency_key="dated")

    assert fake_clock.sleeps == [5.0]


def test_server_errors_are_retried_with_backoff_until_success(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    fake_clock: FakeClock,
) -> None:
    stripe_proxy.inject(server_error(500), server_error(503), path=PI_PATH)

    intent = client.create_payment_intent(100, "usd", idempotency_key="after-5xx")

    assert intent["id"].startswith("pi_")
    assert fake_clock.sleeps == [0.05, 0.1]  # jitter 0.5 of 0.1 s, then of 0.2 s
    assert [r.status for r in stripe_proxy.requests_to(PI_PATH)] == [500, 503, 200]


def test_timeouts_and_dropped_connections_are_retried(
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
    fake_clock: FakeClock,
    localstripe: LocalStripe,
) -> None:
    charge = localstripe.create_charge(100)
    stripe_proxy.inject(hang(2.0), drop(), path="/v1/charges")

    with _client(stripe_proxy, stripe_api_key, fake_clock, read_timeout_s=0.3) as client:
        assert client.retrieve("charge", charge["id"])["id"] == charge["id"]

    assert [r.fault for r in stripe_proxy.requests_to("/v1/charges")] == ["hang", "drop", None]
    assert len(fake_clock.sleeps) == 2


def test_a_missing_object_is_a_permanent_error_raised_at_once(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    fake_clock: FakeClock,
) -> None:
    with pytest.raises(StripePermanentError) as raised:
        client.retrieve("charge", "ch_doesnotexist")

    assert (raised.value.status, raised.value.operation) == (404, "retrieve charge")
    assert raised.value.transient is False
    assert len(stripe_proxy.requests) == 1
    assert fake_clock.sleeps == []


def test_a_declined_card_is_permanent(client: StripeClient) -> None:
    with pytest.raises(StripePermanentError) as raised:
        client.create_payment_intent(
            100,
            "usd",
            idempotency_key="declined",
            payment_method="pm_card_chargeCustomerFail",
            confirm=True,
        )
    assert (raised.value.status, raised.value.code) == (402, "card_declined")


def test_stripe_should_retry_false_stops_retries_of_a_server_error(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    fake_clock: FakeClock,
) -> None:
    stripe_proxy.inject(server_error(500, should_retry=False), path=PI_PATH)

    with pytest.raises(StripePermanentError):
        client.create_payment_intent(100, "usd", idempotency_key="no-retry")

    assert len(stripe_proxy.requests_to(PI_PATH)) == 1
    assert fake_clock.sleeps == []


def test_stripe_should_retry_true_retries_a_client_error(
    client: StripeClient,
    stripe_proxy: StripeProxy,
) -> None:
    stripe_proxy.inject(error_response(409, should_retry=True), path=PI_PATH)

    client.create_payment_intent(100, "usd", idempotency_key="lock-timeout")

    assert [r.status for r in stripe_proxy.requests_to(PI_PATH)] == [409, 200]


def test_stripe_unavailable_after_the_retries_are_exhausted(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    fake_clock: FakeClock,
) -> None:
    stripe_proxy.inject(*[server_error(503)] * FAST.max_attempts, path=PI_PATH)

    with pytest.raises(StripeUnavailable) as raised:
        client.create_payment_intent(100, "usd", idempotency_key="down")

    assert (raised.value.attempts, raised.value.status) == (FAST.max_attempts, 503)
    assert raised.value.transient is True
    assert len(fake_clock.sleeps) == FAST.max_attempts - 1
    keys = {r.idempotency_key for r in stripe_proxy.requests_to(PI_PATH)}
    assert keys == {"down"}


def test_every_attempt_is_reported_for_telemetry(
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
    fake_clock: FakeClock,
) -> None:
    records: list[RequestRecord] = []
    stripe_proxy.inject(rate_limited(retry_after=1), path=PI_PATH)

    with _client(stripe_proxy, stripe_api_key, fake_clock, on_request=records.append) as client:
        client.create_payment_intent(100, "usd", idempotency_key="observed")

    assert [(r.operation, r.attempt, r.status, r.reason) for r in records] == [
        ("create payment intent", 1, 429, "http_429"),
        ("create payment intent", 2, 200, None),
    ]


# -- idempotency ----------------------------------------------------------------------------


def test_a_lost_response_to_a_post_is_replayed_not_repeated(
    client: StripeClient,
    localstripe: LocalStripe,
    stripe_proxy: StripeProxy,
) -> None:
    stripe_proxy.inject(drop_response(), path=PI_PATH)

    intent = client.create_payment_intent(
        4200, "eur", idempotency_key="order-9:pay", payment_method="pm_card_visa", confirm=True
    )

    posts = stripe_proxy.requests_to(PI_PATH, "POST")
    assert [(p.fault, p.forwarded, p.replayed, p.status) for p in posts] == [
        ("drop_response", True, False, None),
        (None, False, True, 200),
    ]
    assert {p.idempotency_key for p in posts} == {"order-9:pay"}
    assert localstripe.count(PI_PATH) == 1
    assert localstripe.get(PI_PATH)["data"][0]["id"] == intent["id"]


def test_under_thirty_percent_faults_every_payment_intent_is_created_exactly_once(
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
    fake_clock: FakeClock,
    localstripe: LocalStripe,
) -> None:
    faults = [rate_limited(retry_after=0), server_error(500), drop(), drop_response()]
    stripe_proxy.inject(drop_response(), path=PI_PATH)  # at least one applied-then-lost POST
    stripe_proxy.chaos(0.3, faults, seed=7, path=PI_PATH)
    patient = RetryPolicy(max_attempts=12, base_delay_s=0.1, max_delay_s=1.0, deadline_s=None)

    with _client(stripe_proxy, stripe_api_key, fake_clock, retry=patient) as client:
        created = [
            client.create_payment_intent(100 + i, "usd", idempotency_key=f"chaos-{i}")["id"]
            for i in range(20)
        ]

    assert len(set(created)) == 20
    assert localstripe.count(PI_PATH) == 20
    applied = [r for r in stripe_proxy.requests_to(PI_PATH) if r.forwarded]
    assert sorted(str(r.idempotency_key) for r in applied) == sorted(
        f"chaos-{i}" for i in range(20)
    )
    faulted = [r.fault for r in stripe_proxy.requests_to(PI_PATH) if r.fault]
    assert len(faulted) >= 5 and "drop_response" in faulted


def test_reusing_a_key_with_other_parameters_is_an_idempotency_error(
    client: StripeClient,
    localstripe: LocalStripe,
    stripe_proxy: StripeProxy,
) -> None:
    client.create_payment_intent(100, "usd", idempotency_key="same-key")

    with pytest.raises(StripePermanentError) as raised:
        client.create_payment_intent(200, "usd", idempotency_key="same-key")

    assert (raised.value.status, raised.value.error_type) == (400, "idempotency_error")
    assert localstripe.count(PI_PATH) == 1
    assert len(stripe_proxy.requests_to(PI_PATH)) == 2


# -- secrets ---------------------------------------------------------------------------------


def test_the_api_key_never_appears_in_logs_errors_or_repr(
    client: StripeClient,
    stripe_proxy: StripeProxy,
    stripe_api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stripe_proxy.inject(rate_limited(retry_after=1), path=BT_PATH)
    _all_pages(client)
    stripe_proxy.inject(*[server_error(502)] * FAST.max_attempts, path=PI_PATH)
    errors: list[BaseException] = []
    for call in (
        lambda: client.create_payment_intent(100, "usd", idempotency_key="leak-check"),
        lambda: client.retrieve("charge", "ch_missing"),
    ):
        with pytest.raises((StripeUnavailable, StripePermanentError)) as raised:
            call()
        errors.append(raised.value)

    assert caplog.records, "the retries and the fallback should have been logged"
    assert stripe_api_key not in caplog.text
    for error in errors:
        assert stripe_api_key not in "".join(traceback.format_exception(error))
        assert stripe_api_key not in repr(error.args)
    assert stripe_api_key not in repr(client) + str(client)
    assert mask_secret(stripe_api_key) in repr(client)


def test_the_client_cannot_be_pickled_into_a_pipeline_graph(client: StripeClient) -> None:
    with pytest.raises(TypeError, match="setup"):
        pickle.dumps(client)


def test_a_key_is_masked_to_its_kind_and_last_four_characters() -> None:
    assert mask_secret("sk_test_51Habcdefghijklmnop1234") == "sk_test_…1234"
    assert mask_secret("rk_live_short") == "rk_live_…"


# -- conversion -------------------------------------------------------------------------------


def _reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text(), parse_float=Decimal)["resources"]


def test_reference_objects_convert_exactly() -> None:
    resources = _reference()
    charge = {
        **resources["charge"],
        "metadata": {"order_id": "o-1", "idempotency_key": "ik-1"},
        "payment_intent": "pi_123",
    }
    bt = {
        **resources["balance_transaction"],
        "amount": 10_000,
        "fee": 320,
        "net": 9_680,
        "available_on": 1_234_567_890 + 2 * 86_400,
        "status": "pending",
        "exchange_rate": Decimal("1.234567891234567891"),
        "fee_details": [{"amount": 320, "currency": "usd", "type": "stripe_fee"}],
        "source": charge,
    }

    (row,) = balance_transactions_to_arrow([bt]).to_pylist()

    assert (row["amount"], row["fee"], row["net"]) == (10_000, 320, 9_680)
    assert row["exchange_rate"] == "1.234567891234567891"
    assert row["created"] == datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)
    assert row["available_on"] - row["created"] == timedelta(days=2)
    assert row["fee_details"] == [{"amount": 320, "currency": "usd", "type": "stripe_fee"}]
    assert (row["charge_id"], row["payment_intent_id"]) == (charge["id"], "pi_123")
    assert (row["order_id"], row["idempotency_key"]) == ("o-1", "ik-1")
    assert (row["payment_method_type"], row["card_brand"], row["card_country"]) == (
        "card",
        "visa",
        "US",
    )
    assert row["status"] == "pending"


@pytest.mark.parametrize(("kind", "txn_type"), [("refund", "refund"), ("dispute", "adjustment")])
def test_refunds_and_disputes_point_at_their_charge(kind: str, txn_type: str) -> None:
    resources = _reference()
    source = resources[kind]
    bt = {**resources["balance_transaction"], "type": txn_type, "source": source, "amount": -100}

    (row,) = balance_transactions_to_arrow([bt]).to_pylist()

    assert (row["source_id"], row["charge_id"]) == (source["id"], source["charge"])
    assert row["amount"] == -100


def test_a_fractional_amount_is_bad_data_not_rounded() -> None:
    bt = {**_reference()["balance_transaction"], "amount": Decimal("100.5")}
    with pytest.raises(ValueError, match="minor units"):
        balance_transactions_to_arrow([bt])


def test_a_transaction_without_an_amount_is_bad_data() -> None:
    bt = dict(_reference()["balance_transaction"])
    del bt["amount"]
    with pytest.raises(ValueError, match="amount"):
        balance_transactions_to_arrow([bt])


def test_decoding_keeps_the_exact_text_of_decimal_numbers() -> None:
    decoded = decode_json('{"exchange_rate": 0.123456789012345678901, "amount": 5}')
    assert str(decoded["exchange_rate"]) == "0.123456789012345678901"
    assert decoded["amount"] == 5


def test_window_edges_round_up_to_whole_seconds() -> None:
    edge = datetime(2026, 11, 20, tzinfo=UTC)
    assert epoch_seconds_ceil(edge) == int(edge.timestamp())
    assert epoch_seconds_ceil(edge + timedelta(milliseconds=1)) == int(edge.timestamp()) + 1
    with pytest.raises(ValueError, match="timezone"):
        epoch_seconds_ceil(datetime(2026, 11, 20))
