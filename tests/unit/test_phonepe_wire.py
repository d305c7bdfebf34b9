"""PhonePe v2 wire functions: the callback vector, request bodies, answers, token lifetimes."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateways.base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    IgnoredEvent,
    MalformedPayload,
    UnknownStatus,
)
from gateways.phonepe import PhonePeGateway, TokenCache, wire

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
CREDENTIALS = {"client_id": "PORTAL_CLIENT", "client_secret": "s3cret-value",
               "client_version": "1", "callback_username": "lab_hooks",
               "callback_password": "hookpass123"}


def checkout_request(**overrides) -> CheckoutRequest:
    fields = dict(
        reference="pay_0f3a9c", amount=150000, currency="INR", description="CBC",
        bill_reference="B-7", merchant_name="Acme Diagnostics",
        return_url="https://portal.example/pay/tok/return?ref=pay_0f3a9c",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/phonepe",
        expires_at=NOW + timedelta(hours=72), idempotency_key="checkout-pay_0f3a9c")
    return CheckoutRequest(**{**fields, **overrides})


def test_published_callback_authorization_vector():
    # PhonePe/phonepe-pg-sdk-python tests/test_validate_callback.py
    assert wire.callback_authorization("username", "password") == (
        "bc842c31a9e54efe320d30d948be61291f3ceee4766e36ab25fa65243cd76e0e")
    good = "bc842c31a9e54efe320d30d948be61291f3ceee4766e36ab25fa65243cd76e0e"
    assert wire.callback_is_authentic(good, "username", "password")
    assert not wire.callback_is_authentic(good, "username", "passwort")
    assert not wire.callback_is_authentic(good[:-1] + "f", "username", "password")
    assert not wire.callback_is_authentic(f"Basic {good}", "username", "password")
    assert not wire.callback_is_authentic("", "username", "password")
    assert not wire.callback_is_authentic(None, "username", "password")


def test_pay_request_is_built_from_our_payment():
    assert wire.pay_request(checkout_request(), NOW) == {
        "merchantOrderId": "pay_0f3a9c",
        "amount": 150000,
        "expireAfter": 3600,
        "metaInfo": {"udf1": "B-7"},
        "paymentFlow": {
            "type": "PG_CHECKOUT",
            "message": "Acme Diagnostics: bill B-7",
            "merchantUrls": {"redirectUrl": "https://portal.example/pay/tok/return?ref=pay_0f3a9c"},
        },
    }


@pytest.mark.parametrize(("left", "expected"), [
    (timedelta(hours=72), 3600), (timedelta(minutes=30), 1800), (timedelta(minutes=2), 300),
    (timedelta(minutes=-5), 300)])
def test_expire_after_follows_the_link_within_phonepes_range(left, expected):
    assert wire.expire_after(NOW + left, NOW) == expected


@pytest.mark.parametrize(("overrides", "code"), [
    ({"currency": "USD"}, "unsupported_currency"), ({"amount": 99}, "amount_too_small"),
    ({"reference": "pay/../x"}, "gateway_error"), ({"reference": "p" * 64}, "gateway_error")])
def test_pay_request_refuses_what_phonepe_cannot_take(overrides, code):
    with pytest.raises(GatewayError) as caught:
        wire.pay_request(checkout_request(**overrides), NOW)
    assert caught.value.code == code
    if code == "unsupported_currency":
        assert "INR only" in caught.value.message and "USD" in caught.value.message


def test_refund_request_allows_partial_amounts():
    assert wire.refund_request("rfd_1", "pay_0f3a9c", 5000) == {
        "merchantRefundId": "rfd_1", "originalMerchantOrderId": "pay_0f3a9c", "amount": 5000}
    with pytest.raises(GatewayError):
        wire.refund_request("rfd_1", "pay_0f3a9c", 99)


def test_hosts_default_to_production_and_an_override_serves_everything():
    production = PhonePeGateway(CREDENTIALS)
    assert production.http.base == "https://api.phonepe.com/apis/pg"
    assert production.oauth.base == "https://api.phonepe.com/apis/identity-manager"
    sandbox = PhonePeGateway(CREDENTIALS, api_base=wire.SANDBOX_BASE)
    assert sandbox.http.base == sandbox.oauth.base == \
        "https://api-preprod.phonepe.com/apis/pg-sandbox"
    fake = PhonePeGateway(CREDENTIALS, api_base="http://127.0.0.1:9/")
    assert fake.http.base == fake.oauth.base == "http://127.0.0.1:9"


COMPLETED_ORDER = {
    "orderId": "OMO2403282020198641071317", "state": "COMPLETED", "amount": 150000,
    "expireAt": 1711638919000, "metaInfo": {"udf1": "B-7"},
    "paymentDetails": [
        {"transactionId": "OM1", "paymentMode": "UPI_QR", "timestamp": 1711637000000,
         "amount": 150000, "state": "FAILED", "errorCode": "PAYMENT_ERROR"},
        {"transactionId": "OM2", "paymentMode": "UPI_INTENT", "timestamp": 1711637119000,
         "amount": 150000, "state": "COMPLETED"}]}


def test_a_completed_order_becomes_a_succeeded_event_with_phonepes_amount():
    event = wire.order_event(COMPLETED_ORDER, "pay_0f3a9c", event="checkout.order.completed")
    assert (event.status, event.amount, event.currency) == (EventStatus.SUCCEEDED, 150000, "INR")
    assert (event.reference, event.checkout_id, event.transaction_id, event.method) == (
        "pay_0f3a9c", "OMO2403282020198641071317", "OM2", "upi")
    assert event.dedupe_id == "phonepe:checkout.order.completed:pay_0f3a9c:COMPLETED"
    assert event.occurred_at == datetime(2024, 3, 28, 14, 45, 19, tzinfo=UTC)
    polled = wire.order_event(COMPLETED_ORDER, "pay_0f3a9c")
    assert polled.dedupe_id is None and polled.type == "order.completed"


@pytest.mark.parametrize(("state", "status"), [
    ("PENDING", EventStatus.PENDING), ("FAILED", EventStatus.FAILED),
    ("EXPIRED", EventStatus.FAILED)])
def test_other_order_states(state, status):
    order = {"orderId": "OMO1", "state": state, "amount": 100, "errorCode": "PAYMENT_ERROR",
             "detailedErrorCode": "TXN_AUTO_FAILED", "paymentDetails": []}
    event = wire.order_event(order, "pay_1")
    assert event.status == status and event.transaction_id is None
    if state == "FAILED":
        assert event.raw["failure_message"] == "PAYMENT_ERROR / TXN_AUTO_FAILED"


@pytest.mark.parametrize("state", ["SUCCESS", "completed", None, ""])
def test_an_unknown_order_state_raises(state):
    with pytest.raises(UnknownStatus):
        wire.order_event({"state": state, "amount": 100}, "pay_1")


@pytest.mark.parametrize(("state", "status"), [
    ("PENDING", EventStatus.PENDING), ("CONFIRMED", EventStatus.PENDING),
    ("COMPLETED", EventStatus.REFUND_SUCCEEDED), ("FAILED", EventStatus.REFUND_FAILED)])
def test_refund_status_answers(state, status):
    answer = {"merchantId": "M", "merchantRefundId": "rfd_1", "originalMerchantOrderId": "pay_1",
              "refundId": "OMR1", "amount": 5000, "state": state, "timestamp": 1706629419799}
    event = wire.refund_event(answer, "pay_1", "rfd_1", event="pg.refund.completed")
    assert (event.status, event.amount, event.refund_id, event.refund_reference) == (
        status, 5000, "OMR1", "rfd_1")
    assert event.dedupe_id == f"phonepe:pg.refund.completed:rfd_1:{state}"
    with pytest.raises(UnknownStatus):
        wire.refund_event({**answer, "state": "REVERSED"}, "pay_1", "rfd_1")


def test_callbacks_name_our_payment_or_are_ignored():
    body = {"event": "checkout.order.completed", "type": "CHECKOUT_ORDER_COMPLETED",
            "payload": {"merchantOrderId": "pay_1", "state": "COMPLETED", "amount": 100}}
    callback = wire.parse_callback(json.dumps(body).encode())
    assert (callback.event, callback.reference, callback.merchant_refund_id) == (
        "checkout.order.completed", "pay_1", None)
    refund = {"event": "pg.refund.completed", "payload": {
        "originalMerchantOrderId": "pay_1", "merchantRefundId": "rfd_1", "state": "COMPLETED"}}
    assert wire.parse_callback(json.dumps(refund).encode()).merchant_refund_id == "rfd_1"
    attempt = {"event": "checkout.transaction.attempt.failed", "payload": {}}
    with pytest.raises(IgnoredEvent):
        wire.parse_callback(json.dumps(attempt).encode())
    for broken in (b"not json", b"[]", b'{"event": "checkout.order.completed"}',
                   b'{"event": "checkout.order.completed", "payload": []}',
                   b'{"event": "checkout.order.completed", "payload": {}}',
                   b'{"event": "pg.refund.failed", "payload": {"originalMerchantOrderId": "p"}}'):
        with pytest.raises(MalformedPayload):
            wire.parse_callback(broken)


def test_error_answers_keep_phonepes_own_words():
    assert wire.error_message({"success": False, "code": "INVALID_CLIENT",
                               "message": "Client authentication failed"}, 401) == (
        "Client authentication failed (INVALID_CLIENT)", "INVALID_CLIENT")
    assert wire.error_message({"errorCode": "BAD_REQUEST"}, 400) == ("BAD_REQUEST",
                                                                    "BAD_REQUEST")
    assert wire.error_message("<html>", 502) == ("HTTP 502", None)


def test_token_lifetime_comes_from_issued_and_expires_at_not_our_clock():
    body = {"access_token": "abc", "token_type": "O-Bearer", "issued_at": 1706073005,
            "expires_at": 1706076605, "expires_in": None}
    token = wire.parse_token(body, now=5000.0)  # whatever the skew, an hour from now
    assert token.header == "O-Bearer abc"
    assert token.refresh_at == 5000.0 + 3600 - 300  # a few minutes before it expires
    short = wire.parse_token({**body, "expires_at": 1706073005 + 120}, now=0.0)
    assert short.refresh_at == 60.0  # a short-lived token is renewed at half-life
    assert wire.parse_token({"access_token": "abc", "expires_in": 600}, 0).refresh_at == 300
    with pytest.raises(GatewayError):
        wire.parse_token({"token_type": "O-Bearer"}, 0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_token_cache_reuses_until_refresh_time_and_replaces_a_rejected_token():
    clock, fetched = Clock(), []

    def fetch():
        fetched.append(1)
        return wire.AccessToken(f"O-Bearer t{len(fetched)}", clock.now + 100)

    cache = TokenCache(clock)
    key = ("http://fake", "client")
    assert cache.header(key, fetch) == cache.header(key, fetch) == "O-Bearer t1"
    clock.now += 99
    assert cache.header(key, fetch) == "O-Bearer t1"
    clock.now += 1
    assert cache.header(key, fetch) == "O-Bearer t2"
    assert cache.header(key, fetch, rejected="O-Bearer t2") == "O-Bearer t3"
    # a second caller holding the already-replaced token does not fetch again
    assert cache.header(key, fetch, rejected="O-Bearer t2") == "O-Bearer t3"
    assert cache.header(("http://fake", "other"), fetch) == "O-Bearer t4"
    assert len(fetched) == 4


def test_token_cache_fetches_once_for_many_threads():
    fetched = []

    def slow_fetch():
        fetched.append(1)
        time.sleep(0.2)
        return wire.AccessToken("O-Bearer shared", time.time() + 100)

    cache = TokenCache()
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        cache.header(("b", "c"), slow_fetch))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["O-Bearer shared"] * 8 and len(fetched) == 1


def test_status_checks_follow_phonepes_published_schedule():
    delays = PhonePeGateway.status_check_delays
    assert 20 <= delays[0] <= 25
    gaps = [b - a for a, b in zip(delays, delays[1:], strict=False)]
    assert gaps[:10] == [3] * 10 and gaps[10:20] == [6] * 10 and gaps[20:26] == [10] * 6
    assert gaps[26:28] == [30] * 2 and set(gaps[28:]) == {60}
    # every minute until the longest order (an hour) is surely final
    assert delays[-1] <= PhonePeGateway.status_check_cutoff
    assert PhonePeGateway.status_check_cutoff >= wire.MAX_EXPIRE_AFTER
    assert delays[-1] + 60 > PhonePeGateway.status_check_cutoff


def test_the_callback_hash_counts_as_a_secret():
    secrets = PhonePeGateway.secret_values(CREDENTIALS)
    assert set(secrets) == {"s3cret-value", "hookpass123",
                            wire.callback_authorization("lab_hooks", "hookpass123")}
    assert "s3cret" not in repr(PhonePeGateway(CREDENTIALS))


def test_credential_fields_are_the_designed_ones():
    assert [(f.name, f.secret) for f in PhonePeGateway.credential_fields] == [
        ("client_id", False), ("client_secret", True), ("client_version", False),
        ("callback_username", False), ("callback_password", True)]
