"""PhonePe v2 over real HTTP: the portal against a fake speaking PhonePe's wire format.

The callback's Authorization hash only lets a callback in; every state change below comes from
PhonePe's order or refund status API, which the fake answers from its own records.
"""

import json
import logging
import threading
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from gateways.base import EventStatus, GatewayError, UnknownStatus
from gateways.phonepe import TOKENS, PhonePeGateway
from portal.models import (
    ExchangeKind,
    Job,
    LinkStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    RefundStatus,
    utcnow,
)
from portal.services.checkout import fetch_and_apply
from portal.services.keys import save_credentials
from portal.services.refunds import RefundNotAllowed, request_refund, submit_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, gateway_lab, serving
from tests.fakes.phonepe_fake import FakePhonePe, callback_authorization
from tests.gateways.test_gateway_secrets import admin_pages, assert_nowhere
from tests.gateways.test_stripe_http import press_pay
from tests.polling import wait_until

CLIENT_ID = "PORTAL_CLIENT_UAT"
CLIENT_SECRET = "pp-client-secret-7f3e91ab"
USERNAME = "acme_hooks"
PASSWORD = "hookPass4821"
CREDENTIALS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "client_version": "1",
               "callback_username": USERNAME, "callback_password": PASSWORD}
AUTHORIZATION = callback_authorization(USERNAME, PASSWORD)


@pytest.fixture(autouse=True)
def no_cached_tokens():
    TOKENS.clear()
    yield
    TOKENS.clear()


@pytest.fixture
def fake(app):
    with FakePhonePe(clients={CLIENT_ID: (CLIENT_SECRET, "1")}) as server:
        app.config["PORTAL_PHONEPE_API_BASE"] = server.url
        yield server


@pytest.fixture
def live(app, fake):
    with serving(app) as url:
        fake.add_webhook(f"{url}/payments/webhook/phonepe", USERNAME, PASSWORD)
        yield url


pp_lab = gateway_lab("phonepe", CREDENTIALS)


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def pay_on_hosted_page(browser: requests.Session, checkout_url: str, outcome: str = "pay"):
    page = browser.get(checkout_url)
    assert page.status_code == 200 and "Pay ₹" in page.text
    return browser.post(checkout_url, data={"outcome": outcome, "mode": "UPI_QR"},
                        allow_redirects=False)


def exchanges(db, kind) -> list[PaymentGatewayTransaction]:
    return list(db.scalars(select(PaymentGatewayTransaction)
                           .where(PaymentGatewayTransaction.kind == kind)
                           .order_by(PaymentGatewayTransaction.id)))


def post_callback(live: str, body: dict | bytes, authorization: str = AUTHORIZATION):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{live}/payments/webhook/phonepe", data=data, timeout=10,
                         headers={"Authorization": authorization,
                                  "Content-Type": "application/json"})


def order_callback(payment: Payment, state: str = "COMPLETED", amount: int | None = None,
                   event: str = "checkout.order.completed") -> dict:
    return {"event": event, "type": event.upper().replace(".", "_"), "payload": {
        "merchantId": "M22PORTALUAT", "merchantOrderId": payment.reference,
        "orderId": payment.checkout_id, "state": state,
        "amount": payment.amount if amount is None else amount, "paymentDetails": []}}


def test_patient_pays_and_the_confirmed_callback_closes_the_link(live, fake, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000, expires_at=utcnow() + timedelta(minutes=30))
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{fake.url}/transact/v2?token=")
    payment = only_payment(db, link)
    assert payment.checkout_id.startswith("OMO")
    [token_call] = fake.requests_to("POST", "/v1/oauth/token")
    assert token_call.form == {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                               "client_version": "1", "grant_type": "client_credentials"}
    [pay_call] = fake.requests_to("POST", "/checkout/v2/pay")
    assert pay_call.headers["Authorization"].startswith("O-Bearer ")
    sent = pay_call.json
    assert (sent["merchantOrderId"], sent["amount"]) == (payment.reference, 150000)
    assert 1790 <= sent["expireAfter"] <= 1800  # the link's half hour
    assert sent["paymentFlow"]["merchantUrls"]["redirectUrl"] == \
        f"{live}/pay/{link.token}/return?ref={payment.reference}"

    back = pay_on_hosted_page(browser, checkout_url)
    assert back.status_code == 302
    assert back.headers["Location"] == f"{live}/pay/{link.token}/return?ref={payment.reference}"
    assert "Processing your payment" in browser.get(back.headers["Location"]).text

    [callback] = fake.wait_callbacks(1)
    assert (callback.event, callback.status) == ("checkout.order.completed", 200)
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 150000
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id.startswith("OM") and payment.method == "upi"
    [received] = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)
    assert received.signature_valid and received.payment_id == payment.id
    assert received.event_id == \
        f"phonepe:checkout.order.completed:{payment.reference}:COMPLETED"
    assert received.payload["state"] == "COMPLETED"  # PhonePe's own answer, not the callback's
    [status_call] = fake.requests_to("GET", f"/checkout/v2/order/{payment.reference}/status")
    assert status_call.headers["Authorization"] == pay_call.headers["Authorization"]
    assert len(fake.requests_to("POST", "/v1/oauth/token")) == 1  # the token was reused
    assert "Payment received" in browser.get(back.headers["Location"]).text


def test_return_without_a_callback_is_confirmed_by_the_status_api(app, fake, pp_lab, build, db):
    with serving(app) as live:  # no webhook configured at PhonePe: only the return remains
        link = build.link(pp_lab)
        browser, checkout_url = press_pay(live, link.token)
        back = pay_on_hosted_page(browser, checkout_url)
        assert browser.get(back.headers["Location"]).status_code == 200
        db.refresh(link)
        assert link.status == LinkStatus.CREATED  # the browser's arrival proves nothing
        job = db.scalar(select(Job).where(Job.kind == "payment.fetch_status"))
        job.run_at = utcnow()
        db.commit()
        wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    [polled] = exchanges(db, ExchangeKind.STATUS_FETCHED)
    assert polled.outcome == "payment succeeded; link paid" and polled.signature_valid is None


def test_declined_payment_fails_with_phonepes_reason(live, fake, pp_lab, build, db):
    link = build.link(pp_lab)
    browser, checkout_url = press_pay(live, link.token)
    pay_on_hosted_page(browser, checkout_url, "decline")
    assert fake.wait_callbacks(1)[0].event == "checkout.order.failed"
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_reason == "PAYMENT_ERROR / TXN_AUTO_FAILED"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED  # the patient may try again


def test_a_callback_without_our_authorization_is_refused_and_changes_nothing(live, fake, pp_lab,
                                                                          build, db):
    link = build.link(pp_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    body = order_callback(payment)
    for header in (callback_authorization(USERNAME, "wrongPass999"), "", AUTHORIZATION.upper(),
                   f"SHA256 {AUTHORIZATION}"):
        answer = post_callback(live, body, header)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_signature"
    assert fake.requests_to("GET", "/checkout/v2/order/") == []  # refused before asking
    assert exchanges(db, ExchangeKind.WEBHOOK_RECEIVED) == []
    db.refresh(link)
    assert link.status == LinkStatus.CREATED


def test_an_authorised_but_false_callback_is_checked_against_phonepe(live, fake, pp_lab, build,
                                                                    db):
    """Anyone who once saw the static header could send this: the status API decides."""
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    forged = post_callback(live, order_callback(payment, amount=150000))
    assert forged.status_code == 200 and forged.json()["duplicate"] is False
    db.refresh(link)
    assert link.status == LinkStatus.CREATED  # PhonePe says PENDING
    [received] = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)
    assert received.outcome == "no change: still pending at the gateway"
    assert received.event_id.endswith(":PENDING")  # the confirmed state, not the claimed one
    # ...so the genuine callback for the real payment is not taken for a duplicate
    pay_on_hosted_page(browser, checkout_url)
    assert fake.wait_callbacks(1)[0].status == 200
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    # and a replay of it changes nothing
    assert post_callback(live, fake.sent_callbacks[0].body).json()["duplicate"] is True


def test_tampered_body_with_a_valid_header_cannot_name_a_bigger_amount(live, fake, pp_lab, build,
                                                                     db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    fake.webhooks.clear()  # PhonePe's own callback is lost; a tampered one arrives
    pay_on_hosted_page(browser, checkout_url)
    payment = only_payment(db, link)
    answer = post_callback(live, order_callback(payment, amount=1))
    assert answer.status_code == 200
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 150000  # PhonePe's amount


def test_amount_mismatch_at_phonepe_is_not_marked_paid(live, fake, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    fake.orders[payment.reference]["amount"] = 100  # PhonePe holds a different amount
    pay_on_hosted_page(browser, checkout_url)
    assert fake.wait_callbacks(1)[0].status == 200
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and link.needs_attention
    assert "Gateway reported 100 INR" in link.attention_reason
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_other_currencies_are_refused_before_phonepe_is_called(live, fake, pp_lab, build, db):
    link = build.link(pp_lab, currency="USD", amount=5000)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_reason == "PhonePe takes payments in INR only; this bill is in USD."
    [exchange] = exchanges(db, ExchangeKind.CHECKOUT_CREATED)
    assert not exchange.success and exchange.payload["code"] == "unsupported_currency"
    assert fake.requests == []


def test_unknown_status_raises_is_logged_and_changes_nothing(app, live, fake, pp_lab, build, db,
                                                             caplog):
    link = build.link(pp_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    fake.orders[payment.reference]["state"] = "AUTHORIZED"
    answer = post_callback(live, order_callback(payment))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unknown_status"
    assert "unknown gateway status 'AUTHORIZED'" in caplog.text
    with pytest.raises(UnknownStatus):
        fetch_and_apply(db, app.config, payment.id)
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING
    [failed] = exchanges(db, ExchangeKind.STATUS_FETCHED)
    assert not failed.success and "AUTHORIZED" in failed.error


def test_partial_then_full_refund_settled_by_confirmed_callbacks(app, live, fake, pp_lab, build,
                                                                 db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    pay_on_hosted_page(browser, checkout_url)
    fake.wait_callbacks(1)
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED

    refund = request_refund(db, app.config, payment.id, 50000, "requested_by_customer")
    assert refund.status == RefundStatus.PENDING and refund.gateway_refund_id.startswith("OMR")
    [call] = fake.requests_to("POST", "/payments/v2/refund")
    assert call.json == {"merchantRefundId": refund.reference,
                         "originalMerchantOrderId": payment.reference, "amount": 50000}
    with pytest.raises(RefundNotAllowed):  # 50,000 is in flight
        request_refund(db, app.config, payment.id, 100001)
    assert fake.wait_callbacks(2)[1].event == "pg.refund.accepted"
    db.refresh(refund)
    assert refund.status == RefundStatus.PENDING  # accepted is not done

    fake.settle_refund(refund.reference)
    assert fake.wait_callbacks(3)[2].status == 200
    db.refresh(refund)
    assert refund.status == RefundStatus.SUCCEEDED
    assert fake.requests_to("GET", f"/payments/v2/refund/{refund.reference}/status")
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.PARTIALLY_REFUNDED,
                                                         50000)

    fake.refunds_settle_immediately = True
    rest = request_refund(db, app.config, payment.id, 100000)
    assert fake.wait_callbacks(4)[3].event == "pg.refund.completed"
    db.refresh(rest)
    assert rest.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert payment.status == PaymentStatus.REFUNDED and payment.amount_refunded == 150000


def test_a_failed_refund_callback_fails_the_refund(app, live, fake, pp_lab, build, db):
    link = build.link(pp_lab)
    browser, checkout_url = press_pay(live, link.token)
    pay_on_hosted_page(browser, checkout_url)
    fake.wait_callbacks(1)
    payment = only_payment(db, link)
    refund = request_refund(db, app.config, payment.id, 20000)
    fake.settle_refund(refund.reference, ok=False)
    assert fake.wait_callbacks(3)[2].event == "pg.refund.failed"
    db.refresh(refund)
    assert refund.status == RefundStatus.FAILED and refund.failure_reason == "REFUND_FAILED"
    db.refresh(payment)
    assert payment.amount_refunded == 0


def test_a_refund_whose_answer_was_lost_is_found_not_repeated(app, live, fake, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    pay_on_hosted_page(browser, checkout_url)
    fake.wait_callbacks(1)
    payment = only_payment(db, link)
    fake.fail_next(503, path="/payments/v2/refund", after=True)  # done, but the answer is lost
    refund = request_refund(db, app.config, payment.id, 30000)
    assert refund.status == RefundStatus.PENDING and refund.gateway_refund_id is None
    assert refund.failure_reason.startswith("Will retry: PhonePe:")
    retried = submit_refund(db, app.config, refund.id, schedule_retry=False)
    assert retried.gateway_refund_id == fake.refunds[refund.reference]["refundId"]
    assert len(fake.refunds) == 1  # PhonePe refused the repeat; we found the first one


def test_an_expired_token_is_fetched_again_once(fake):
    gateway = PhonePeGateway(CREDENTIALS, api_base=fake.url)
    with pytest.raises(GatewayError) as caught:
        gateway.fetch_status("pay_unknown")
    assert caught.value.code == "not_found" and "ORDER_NOT_FOUND" in caught.value.message
    fake.revoke_tokens()  # PhonePe no longer honours the cached token
    with pytest.raises(GatewayError) as caught:
        gateway.fetch_status("pay_unknown")
    assert caught.value.code == "not_found"  # answered after a fresh token
    assert len(fake.requests_to("POST", "/v1/oauth/token")) == 2
    # a token PhonePe keeps refusing is not fetched in a loop
    fake.refuse_tokens = True
    with pytest.raises(GatewayError) as caught:
        gateway.fetch_status("pay_unknown")
    assert caught.value.code == "bad_credentials"
    assert len(fake.requests_to("POST", "/v1/oauth/token")) == 3


def test_concurrent_calls_share_one_token_request(fake):
    fake.delay_next(0.3, path="/v1/oauth/token")
    errors = []

    def ask():
        try:
            PhonePeGateway(CREDENTIALS, api_base=fake.url).fetch_status("pay_unknown")
        except GatewayError as exc:
            errors.append(exc.code)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == ["not_found"] * 6
    assert len(fake.requests_to("POST", "/v1/oauth/token")) == 1


def test_bad_keys_and_outages_reach_the_patient_as_a_clear_message(app, live, fake, lab, build,
                                                                    db):
    wrong = "pp-wrong-but-secret-0003"
    build.connect(lab, "phonepe", {**CREDENTIALS, "client_secret": wrong})
    link = build.link(lab)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    assert "We could not reach the payment service" in answer.text
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    [exchange] = exchanges(db, ExchangeKind.CHECKOUT_CREATED)
    assert not exchange.success and "Client authentication failed" in exchange.error
    assert "Check the client id, secret and version" in exchange.error
    assert wrong not in json.dumps(exchange.payload) + exchange.error

    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "phonepe", CREDENTIALS)
    db.commit()
    fake.fail_next(500, "INTERNAL_SERVER_ERROR", "Something went wrong", path="/checkout/")
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    fake.fail_next(502, raw=b"<html>Bad gateway</html>", path="/checkout/")
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    errors = [e.error for e in exchanges(db, ExchangeKind.CHECKOUT_CREATED)]
    assert errors[1:] == ["PhonePe: Something went wrong (INTERNAL_SERVER_ERROR)",
                          "PhonePe answered the payment request with an unreadable error "
                          "(HTTP 502)."]
    assert all(p.status == PaymentStatus.FAILED for p in db.scalars(select(Payment)))
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(fake.url)


def test_read_timeout_is_bounded_and_retryable(fake):
    gateway = PhonePeGateway(CREDENTIALS, api_base=fake.url, timeout=(2.0, 0.3))
    fake.delay_next(1.5, path="/v1/oauth/token")
    with pytest.raises(GatewayError) as caught:
        gateway.fetch_status("pay_x")
    assert caught.value.code == "timeout" and caught.value.retryable


def test_admin_tests_the_connection_and_sees_phonepes_own_error(admin_client, fake, pp_lab):
    page = admin_client.get("/admin/gateways/phonepe").get_data(as_text=True)
    assert "/payments/webhook/phonepe" in page and "checkout.order.completed" in page
    assert "pg.refund.completed" in page and "Webhook password" in page
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/phonepe/test", data={"csrf_token": token},
                               follow_redirects=True)
    assert f"Connected to PhonePe ({fake.url}): token issued." in answer.get_data(as_text=True)
    fake.clients[CLIENT_ID] = ("rotated-at-phonepe", "1")  # a cached token must not hide this
    answer = admin_client.post("/admin/gateways/phonepe/test", data={"csrf_token": token},
                               follow_redirects=True)
    text = answer.get_data(as_text=True)
    assert "Connection failed. PhonePe: Client authentication failed (INVALID_CLIENT)" in text
    assert CLIENT_SECRET not in text and PASSWORD not in text


def test_phonepe_secrets_stay_secret(app, build, lab, db, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    wrong = "pp-wrong-but-secret-0004"
    with FakePhonePe(clients={CLIENT_ID: (CLIENT_SECRET, "1")}) as fake:
        fake.refunds_settle_immediately = True
        app.config["PORTAL_PHONEPE_API_BASE"] = fake.url
        keys = app.config["PORTAL_ENCRYPTION_KEYS"]
        save_credentials(db, keys, lab, "phonepe", {**CREDENTIALS, "client_secret": wrong})
        db.commit()
        pages = []
        with serving(app) as live:
            fake.add_webhook(f"{live}/payments/webhook/phonepe", USERNAME, PASSWORD)
            failed = build.link(lab)
            browser = requests.Session()
            page = browser.get(f"{live}/pay/{failed.token}").text
            pages.append(browser.post(f"{live}/pay/{failed.token}",
                                      data={"csrf_token": csrf_from(page)}).text)
            save_credentials(db, keys, lab, "phonepe", CREDENTIALS)
            db.commit()
            link = build.link(lab)
            browser, checkout_url = press_pay(live, link.token)
            back = pay_on_hosted_page(browser, checkout_url)
            pages.append(browser.get(back.headers["Location"]).text)
            fake.wait_callbacks(1)
            post_callback(live, fake.sent_callbacks[0].body, "forged")  # logged as rejected
            payment = only_payment(db, link)
            request_refund(db, app.config, payment.id, 1000, "Overcharged")
            fake.wait_callbacks(2)
            wait_idle(app)
        pages += admin_pages(app, build, lab, "phonepe", link)
    assert only_payment(db, link).status == PaymentStatus.PARTIALLY_REFUNDED
    assert "Connected to PhonePe" in pages[-3]
    tokens = list(fake.tokens)  # the bearer tokens PhonePe issued
    assert tokens
    assert_nowhere([CLIENT_SECRET, PASSWORD, AUTHORIZATION, wrong, *tokens], caplog, capsys,
                   pages, db)


def test_fetch_status_reads_phonepes_record(fake, live, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    gateway = PhonePeGateway(CREDENTIALS, api_base=fake.url)
    assert gateway.fetch_status(payment.reference).status == EventStatus.PENDING
    pay_on_hosted_page(browser, checkout_url)
    event = gateway.fetch_status(payment.reference)
    assert (event.status, event.amount, event.currency) == (EventStatus.SUCCEEDED, 150000, "INR")
    assert event.checkout_id == payment.checkout_id
    call = fake.requests_to("GET", f"/checkout/v2/order/{payment.reference}/status")[-1]
    assert call.query == {"details": "false"}


def test_a_refund_callback_must_match_phonepes_refund_record(app, live, fake, pp_lab, build, db):
    links = [build.link(pp_lab), build.link(pp_lab)]
    payments = []
    for link in links:
        browser, checkout_url = press_pay(live, link.token)
        pay_on_hosted_page(browser, checkout_url)
        payments.append(only_payment(db, link))
    fake.wait_callbacks(2)
    refund = request_refund(db, app.config, payments[1].id, 20000)
    fake.settle_refund(refund.reference)
    fake.wait_callbacks(4)
    # a callback that pins payment 0 on payment 1's refund
    answer = post_callback(live, {"event": "pg.refund.completed", "payload": {
        "merchantRefundId": refund.reference, "originalMerchantOrderId": payments[0].reference,
        "refundId": refund.gateway_refund_id, "amount": 20000, "state": "COMPLETED"}})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_signature"
    db.refresh(links[0])
    assert not links[0].needs_attention
    assert only_payment(db, links[0]).amount_refunded == 0


def test_no_database_transaction_waits_on_phonepes_status_api(live, fake, pp_lab, build, db):
    """The status call inside the callback must not hold SQLite's write lock."""
    link = build.link(pp_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    fake.delay_next(1.5, path="/checkout/v2/order/")
    callback = threading.Thread(target=post_callback, args=(live, order_callback(payment)))
    callback.start()
    wait_until(lambda: fake.requests_to("GET", "/checkout/v2/order/"), timeout=5)
    started = time.monotonic()
    build.link(pp_lab)  # a write while PhonePe is being asked
    took = time.monotonic() - started
    callback.join()
    assert took < 1.0
