"""Razorpay over real HTTP: the portal against a fake speaking Razorpay's wire format."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select

from gateways.base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    SignatureError,
    hmac_sha256_hex,
)
from gateways.razorpay import RazorpayGateway
from gateways.razorpay.wire import payment_link_params, return_message
from portal.models import (
    ExchangeKind,
    Job,
    LinkStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    RefundStatus,
)
from portal.services.keys import save_credentials
from portal.services.links import cancel_link
from portal.services.refunds import RefundNotAllowed, request_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, gateway_lab, serving
from tests.fakes.razorpay_fake import FakeRazorpay, sign_payment_link_return, sign_webhook
from tests.gateways.test_sandbox_http import press_pay

KEY_ID = "rzp_test_PortalKey0001"
KEY_SECRET = "rzp-key-secret-3f9a1c77"
WEBHOOK_SECRET = "rzp-webhook-secret-81be02"
CREDENTIALS = {"key_id": KEY_ID, "key_secret": KEY_SECRET, "webhook_secret": WEBHOOK_SECRET}


@pytest.fixture
def razorpay(app):
    with FakeRazorpay(keys={KEY_ID: KEY_SECRET}, webhook_secret=WEBHOOK_SECRET) as fake:
        app.config["PORTAL_RAZORPAY_API_BASE"] = fake.url
        yield fake


@pytest.fixture
def live(app, razorpay):
    with serving(app) as url:
        razorpay.add_webhook(f"{url}/payments/webhook/razorpay")
        yield url


rz_lab = gateway_lab("razorpay", CREDENTIALS)


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def pay_on_hosted_page(browser: requests.Session, checkout_url: str,
                       outcome: str = "pay") -> requests.Response:
    assert browser.get(checkout_url).status_code == 200
    return browser.post(checkout_url, data={"outcome": outcome}, allow_redirects=False)


def test_published_payment_link_return_vector():
    params = {"razorpay_payment_link_id": "plink_IH3cNucfVEgV68",
              "razorpay_payment_link_reference_id": "TSsd1989",
              "razorpay_payment_link_status": "paid",
              "razorpay_payment_id": "pay_IH3d0ara9bSsjQ"}
    assert hmac_sha256_hex("EnLs21M47BllR3X8PSFtjtbd", return_message(params).encode()) == (
        "07ae18789e35093e51d0a491eb9922646f3f82773547e5b0f67ee3f2d3bf7d5b")


def test_payment_link_request_is_built_from_our_payment():
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    request = CheckoutRequest(
        reference="pay_abc", amount=150000, currency="INR", description="CBC",
        bill_reference="B-7", merchant_name="Acme Diagnostics",
        return_url="https://portal.example/pay/tok/return?ref=pay_abc",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/razorpay",
        expires_at=now + timedelta(hours=72), idempotency_key="checkout-pay_abc",
        customer_name="Asha Rao", customer_email="asha@example.com",
        customer_phone="+919876543210")
    assert payment_link_params(request, now) == {
        "amount": 150000, "currency": "INR", "accept_partial": False, "reference_id": "pay_abc",
        "description": "Acme Diagnostics: bill B-7",
        "expire_by": int((now + timedelta(hours=72)).timestamp()),
        "notify": {"sms": False, "email": False}, "reminder_enable": False,
        "notes": {"reference": "pay_abc", "bill_reference": "B-7"},
        "callback_url": "https://portal.example/pay/tok/return?ref=pay_abc",
        "callback_method": "get",
        "customer": {"name": "Asha Rao", "email": "asha@example.com",
                     "contact": "+919876543210"},
    }
    soon = payment_link_params(
        CheckoutRequest(**{**request.__dict__, "expires_at": now + timedelta(minutes=5)}), now)
    assert soon["expire_by"] >= int((now + timedelta(minutes=15)).timestamp())


def test_patient_pays_and_the_signed_return_closes_the_link(app, live, razorpay, rz_lab, build,
                                                             db):
    link = build.link(rz_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{razorpay.url}/pl/plink_")
    payment = only_payment(db, link)
    sent = razorpay.requests_to("POST", "/v1/payment_links")[0].json
    assert sent["reference_id"] == payment.reference and sent["amount"] == 150000
    assert sent["callback_method"] == "get" and sent["notify"] == {"sms": False, "email": False}

    back = pay_on_hosted_page(browser, checkout_url)
    assert back.status_code in (302, 303)
    assert back.headers["Location"].startswith(f"{live}/pay/{link.token}/return?ref=")
    assert "razorpay_signature=" in back.headers["Location"]
    page = browser.get(back.headers["Location"])
    assert page.status_code == 200
    db.refresh(link)
    assert link.status == LinkStatus.PAID  # the verified return, before any webhook
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id.startswith("pay_")
    assert payment.card_last4 == "1111"
    kinds = db.scalars(select(PaymentGatewayTransaction.kind).where(
        PaymentGatewayTransaction.payment_id == payment.id)).all()
    assert ExchangeKind.RETURN_VERIFIED in kinds

    events = razorpay.wait_events(2)
    assert {e.event for e in events} == {"payment.captured", "payment_link.paid"}
    assert all(e.status == 200 for e in events)
    webhook_rows = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED)).all()
    assert len(webhook_rows) == 2 and all(r.signature_valid for r in webhook_rows)
    assert all(r.payment_id == payment.id for r in webhook_rows)
    db.refresh(link)
    assert link.amount_paid == 150000  # counted once whatever arrived first


def test_forged_return_changes_nothing(app, live, razorpay, rz_lab, build, db):
    link = build.link(rz_lab)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    plink = payment.checkout_id
    forged = {"ref": payment.reference, "razorpay_payment_id": "pay_Forged0000001",
              "razorpay_payment_link_id": plink,
              "razorpay_payment_link_reference_id": payment.reference,
              "razorpay_payment_link_status": "paid",
              "razorpay_signature": hmac_sha256_hex("not-the-secret", b"x")}
    assert browser.get(f"{live}/pay/{link.token}/return", params=forged).status_code == 200
    assert razorpay.requests_to("GET", "/v1/payment_links/") == []  # refused unread
    gateway = RazorpayGateway(CREDENTIALS, api_base=razorpay.url)
    with pytest.raises(SignatureError):
        gateway.verify_return(forged)
    genuine = {**forged, "razorpay_signature": sign_payment_link_return(
        KEY_SECRET, plink, payment.reference, "paid", "pay_Forged0000001")}
    assert gateway.verify_return(genuine).status == EventStatus.PENDING  # Razorpay's own word
    wait_idle(app)  # the status check the forged return triggered asks Razorpay itself
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_webhook_with_a_bad_signature_is_refused_and_changes_nothing(live, rz_lab, build, db):
    link = build.link(rz_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    body = json.dumps({"entity": "event", "event": "payment_link.paid", "contains": [],
                       "payload": {"payment_link": {"entity": {
                           "id": payment.checkout_id, "reference_id": payment.reference,
                           "status": "paid", "amount": payment.amount,
                           "amount_paid": payment.amount, "currency": "INR"}}},
                       "created_at": 1}).encode()
    url = f"{live}/payments/webhook/razorpay"
    for signature in (sign_webhook("wrong-secret", body), ""):
        answer = requests.post(url, data=body, headers={
            "X-Razorpay-Signature": signature, "x-razorpay-event-id": "evt_forged_1",
            "Content-Type": "application/json"})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_signature"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED)).all() == []
    # the same body, signed Razorpay's way, is applied once; its replay is a duplicate
    headers = {"X-Razorpay-Signature": sign_webhook(WEBHOOK_SECRET, body),
               "x-razorpay-event-id": "evt_genuine_1", "Content-Type": "application/json"}
    assert requests.post(url, data=body, headers=headers).json()["duplicate"] is False
    assert requests.post(url, data=body, headers=headers).json()["duplicate"] is True
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == payment.amount


def test_amount_mismatch_in_a_genuine_webhook_is_not_marked_paid(live, razorpay, rz_lab, build,
                                                                  db):
    link = build.link(rz_lab, amount=150000)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    razorpay.send_event("payment_link.paid", {"payment_link": {"entity": {
        "id": payment.checkout_id, "reference_id": payment.reference, "status": "paid",
        "amount": 100, "amount_paid": 100, "currency": "INR"}}})
    assert razorpay.wait_events(1)[0].status == 200
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and link.needs_attention
    assert "expected 150000 INR" in link.attention_reason


def test_partial_then_full_refund_settled_by_webhooks(app, live, razorpay, rz_lab, build, db):
    link = build.link(rz_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    browser.get(pay_on_hosted_page(browser, checkout_url).headers["Location"])
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED

    refund = request_refund(db, app.config, payment.id, 50000, "requested_by_customer")
    assert refund.status == RefundStatus.PENDING and refund.gateway_refund_id.startswith("rfnd_")
    call = razorpay.requests_to("POST", f"/v1/payments/{payment.gateway_transaction_id}/refund")
    assert call[0].json["amount"] == 50000
    assert call[0].headers["X-Refund-Idempotency"] == f"refund-{refund.reference}"
    with pytest.raises(RefundNotAllowed):  # 50,000 is in flight: at most 100,000 remains
        request_refund(db, app.config, payment.id, 100001)

    razorpay.process_refund(refund.gateway_refund_id)
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while datetime.now(UTC) < deadline:
        db.refresh(refund)
        if refund.status != RefundStatus.PENDING:
            break
    assert refund.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert payment.amount_refunded == 50000

    razorpay.refunds_settle_immediately = True
    rest = request_refund(db, app.config, payment.id, 100000)
    assert rest.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert payment.status == PaymentStatus.REFUNDED and payment.amount_refunded == 150000


def test_cancelling_the_link_cancels_it_at_razorpay(app, live, razorpay, rz_lab, build, db):
    link = build.link(rz_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    cancel_link(db, link, user_id=None)
    db.commit()
    wait_idle(app)
    assert razorpay.links[payment.checkout_id]["status"] == "cancelled"
    assert db.scalars(select(Job.status).where(Job.kind == "payment.cancel_checkout")).one() \
        .value == "done"


def test_bad_keys_and_outages_reach_the_patient_as_a_clear_message(app, live, razorpay, lab,
                                                                    build, db):
    build.connect(lab, "razorpay", {**CREDENTIALS, "key_secret": "a-wrong-secret-value"})
    link = build.link(lab)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    assert "We could not reach the payment service" in answer.text
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    exchange = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.payment_id == payment.id)).one()
    assert not exchange.success and "Authentication failed" in exchange.error
    assert "a-wrong-secret-value" not in json.dumps(exchange.payload) + exchange.error

    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "razorpay", CREDENTIALS)
    db.commit()
    razorpay.fail_next(500, {"code": "SERVER_ERROR", "description": "We are facing issues"})
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    razorpay.fail_next(502, raw=b"<html>Bad gateway</html>")
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    # the gateway is back: the patient just presses Pay again
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(razorpay.url)


def test_read_timeout_is_bounded_and_retryable(razorpay):
    gateway = RazorpayGateway(CREDENTIALS, api_base=razorpay.url, timeout=(2.0, 0.3))
    razorpay.delay_next(1.5)
    with pytest.raises(GatewayError) as caught:
        gateway.test_connection()
    assert caught.value.code == "timeout" and caught.value.retryable


def test_admin_tests_the_connection_and_sees_razorpays_own_error(app, admin_client, razorpay,
                                                                  rz_lab, db):
    page = admin_client.get("/admin/gateways/razorpay").get_data(as_text=True)
    assert "/payments/webhook/razorpay" in page and "payment_link.paid" in page
    assert "refund.processed" in page
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/razorpay/test", data={"csrf_token": token},
                               follow_redirects=True)
    assert "Connected to Razorpay (test mode)." in answer.get_data(as_text=True)
    razorpay.fail_next(401, {"code": "BAD_REQUEST_ERROR", "description": "Authentication failed"})
    answer = admin_client.post("/admin/gateways/razorpay/test", data={"csrf_token": token},
                               follow_redirects=True)
    text = answer.get_data(as_text=True)
    assert "Connection failed. Razorpay: Authentication failed" in text
    assert KEY_SECRET not in text and WEBHOOK_SECRET not in text
