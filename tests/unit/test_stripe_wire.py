"""Stripe's wire format in pure functions: signatures, the session request, event parsing."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateways.base import CheckoutRequest, EventStatus, IgnoredEvent, SignatureError, UnknownStatus
from gateways.stripe import StripeGateway
from gateways.stripe.wire import (
    parse_event,
    session_expires_at,
    session_params,
    sign,
    verify_signature,
)

# stripe-python tests/test_webhook.py: DUMMY_WEBHOOK_PAYLOAD and its secret (gateways.md §1)
DUMMY_PAYLOAD = b"""{
  "id": "evt_test_webhook",
  "object": "event",
  "data": { "object": { "id": "rdr_123", "object": "terminal.reader" } }
}"""
VECTOR = "t=1700000000,v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_signature_vector_from_the_reference():
    assert sign("whsec_test_secret", DUMMY_PAYLOAD, 1700000000) == VECTOR
    verify_signature("whsec_test_secret", DUMMY_PAYLOAD, VECTOR, tolerance=None)


def test_signature_checks():
    body = b'{"id":"evt_1"}'
    now = int(time.time())
    good = sign("whsec_a", body, now)
    verify_signature("whsec_a", body, good)
    rotated = f"t={now},v1={'0' * 64},v1={good.split('v1=')[1]}"  # any v1 may match
    verify_signature("whsec_a", body, rotated)
    for header in (sign("whsec_b", body, now), sign("whsec_a", body, now - 301), "", None,
                   f"t={now}", "garbage"):
        with pytest.raises(SignatureError):
            verify_signature("whsec_a", body, header)
    with pytest.raises(SignatureError):
        verify_signature("whsec_a", body + b" ", good)  # tampered body
    with pytest.raises(SignatureError):
        verify_signature("whsec_a", b"\xff\xfe", sign("whsec_a", b"\xff\xfe", now))


def request(**overrides) -> CheckoutRequest:
    fields = dict(
        reference="pay_abc", amount=150000, currency="INR", description="Bill B-7",
        bill_reference="B-7", merchant_name="Acme Diagnostics",
        return_url="https://portal.example/pay/tok/return?ref=pay_abc",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/stripe",
        expires_at=NOW + timedelta(hours=3), idempotency_key="checkout-pay_abc",
        customer_name="Asha Rao", customer_email="asha@example.com")
    return CheckoutRequest(**{**fields, **overrides})


def test_checkout_session_request():
    metadata = {"reference": "pay_abc", "bill_reference": "B-7"}
    assert session_params(request(), NOW) == {
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": {
            "currency": "inr", "unit_amount": 150000,
            "product_data": {"name": "Acme Diagnostics: bill B-7"}}}],
        "client_reference_id": "pay_abc",
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata, "description": "Bill B-7"},
        "success_url": "https://portal.example/pay/tok/return?ref=pay_abc"
                       "&session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://portal.example/pay/tok",
        "expires_at": int((NOW + timedelta(hours=3)).timestamp()),
        "customer_email": "asha@example.com",
    }
    saving = session_params(request(save_method=True), NOW)
    assert saving["customer_creation"] == "always"
    assert saving["payment_intent_data"]["setup_future_usage"] == "off_session"
    known = session_params(request(save_method=True, gateway_customer_id="cus_1"), NOW)
    assert known["customer"] == "cus_1" and "customer_creation" not in known
    assert "customer_email" not in known


def test_session_expiry_stays_within_what_stripe_allows():
    assert session_expires_at(NOW + timedelta(days=3), NOW) == int(
        (NOW + timedelta(hours=23, minutes=59)).timestamp())
    assert session_expires_at(NOW + timedelta(minutes=5), NOW) == int(
        (NOW + timedelta(minutes=31)).timestamp())


def event(kind: str, obj: dict) -> dict:
    return {"id": "evt_1", "object": "event", "type": kind, "created": 1700000000,
            "data": {"object": obj}}


SESSION = {"id": "cs_test_1", "object": "checkout.session", "client_reference_id": "pay_abc",
           "metadata": {"reference": "pay_abc"}, "amount_total": 150000, "currency": "inr",
           "payment_intent": "pi_1", "payment_status": "paid", "status": "complete"}


def test_checkout_session_events():
    paid = parse_event(event("checkout.session.completed", SESSION))
    assert (paid.status, paid.reference, paid.amount, paid.currency, paid.transaction_id,
            paid.checkout_id, paid.dedupe_id) == (EventStatus.SUCCEEDED, "pay_abc", 150000,
                                                  "INR", "pi_1", "cs_test_1", "evt_1")
    unpaid = parse_event(event("checkout.session.completed",
                               {**SESSION, "payment_status": "unpaid"}))
    assert unpaid.status == EventStatus.PENDING
    assert parse_event(event("checkout.session.async_payment_succeeded", SESSION)).status \
        == EventStatus.SUCCEEDED
    assert parse_event(event("checkout.session.async_payment_failed", SESSION)).status \
        == EventStatus.FAILED
    assert parse_event(event("checkout.session.expired", SESSION)).status == EventStatus.FAILED
    with pytest.raises(UnknownStatus):
        parse_event(event("checkout.session.completed", {**SESSION, "payment_status": "weird"}))


def test_payment_intent_and_refund_events():
    intent = {"id": "pi_1", "object": "payment_intent", "amount": 5000, "amount_received": 5000,
              "currency": "usd", "metadata": {"reference": "pay_x"},
              "last_payment_error": {"message": "Your card was declined."}}
    ok = parse_event(event("payment_intent.succeeded", intent))
    assert (ok.status, ok.reference, ok.transaction_id, ok.amount) == (
        EventStatus.SUCCEEDED, "pay_x", "pi_1", 5000)
    failed = parse_event(event("payment_intent.payment_failed", intent))
    assert failed.status == EventStatus.FAILED
    assert failed.raw["failure_message"] == "Your card was declined."
    refund = {"id": "re_1", "object": "refund", "amount": 2000, "currency": "usd",
              "payment_intent": "pi_1", "status": "succeeded",
              "metadata": {"reference": "pay_x", "refund_reference": "rfd_1"}}
    settled = parse_event(event("refund.updated", refund))
    assert (settled.status, settled.refund_id, settled.refund_reference, settled.amount) == (
        EventStatus.REFUND_SUCCEEDED, "re_1", "rfd_1", 2000)
    assert parse_event(event("refund.failed", {**refund, "status": "failed"})).status \
        == EventStatus.REFUND_FAILED
    assert parse_event(event("refund.created", {**refund, "status": "pending"})).status \
        == EventStatus.PENDING


def test_events_we_do_not_use_are_ignored_before_verification():
    raw = json.dumps(event("customer.created", {"id": "cus_1", "object": "customer"})).encode()
    with pytest.raises(IgnoredEvent):
        StripeGateway.extract_reference({}, raw)
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_9", "metadata": {},
              "amount_refunded": 100, "currency": "usd"}
    raw = json.dumps(event("charge.refunded", charge)).encode()
    assert StripeGateway.extract_reference({}, raw) == ""
    assert StripeGateway.extract_transaction_id({}, raw) == "pi_9"
