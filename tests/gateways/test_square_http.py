"""Square over real HTTP: the portal, through the `squareup` SDK, against a fake of Square."""

import json
import logging
import time

import pytest
import requests
from sqlalchemy import select

from gateways.base import GatewayError, RefundRequest, UnknownStatus
from gateways.square import SquareGateway
from gateways.square.wire import split_checkout_id
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
from portal.services.links import cancel_link
from portal.services.refunds import RefundNotAllowed, request_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, gateway_lab, serving
from tests.fakes.square_fake import FakeSquare, sign_webhook
from tests.gateways.test_gateway_secrets import admin_pages, assert_nowhere
from tests.gateways.test_stripe_http import press_pay
from tests.polling import wait_until

ACCESS_TOKEN = "EAAAl-square-access-token-7f3e91c2"
LOCATION_ID = "LACMEMAIN0001"
SIGNATURE_KEY = "sq-signature-key-4b2d9e0a"
CREDENTIALS = {"access_token": ACCESS_TOKEN, "location_id": LOCATION_ID,
               "webhook_signature_key": SIGNATURE_KEY}


@pytest.fixture
def square(app):
    with FakeSquare(access_token=ACCESS_TOKEN, location_id=LOCATION_ID, currency="USD",
                    signature_key=SIGNATURE_KEY) as fake:
        app.config["PORTAL_SQUARE_API_BASE"] = fake.url
        yield fake


@pytest.fixture
def live(app, square):
    with serving(app) as url:
        square.add_webhook(f"{url}/payments/webhook/square")
        yield url


sq_lab = gateway_lab("square", CREDENTIALS, currency="USD")  # the currency of the location


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def pay_on_square(browser: requests.Session, checkout_url: str,
                  outcome: str = "pay") -> requests.Response:
    assert browser.get(checkout_url).status_code == 200
    return browser.post(checkout_url, data={"outcome": outcome}, allow_redirects=False)


def exchanges(db, kind: ExchangeKind) -> list[PaymentGatewayTransaction]:
    return list(db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == kind).order_by(PaymentGatewayTransaction.id)))


def paid_link(live, square, lab, build, db, amount=150000):
    link = build.link(lab, amount=amount)
    browser, checkout_url = press_pay(live, link.token)
    browser.get(pay_on_square(browser, checkout_url).headers["Location"])
    square.wait_events(3)
    wait_until(lambda: only_payment(db, link).status == PaymentStatus.SUCCEEDED)
    return link, only_payment(db, link)


def test_patient_pays_and_the_signed_webhook_closes_the_link(live, square, sq_lab, build, db):
    link = build.link(sq_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{square.url}/u/")
    payment = only_payment(db, link)
    created = square.requests_to("POST", "/v2/online-checkout/payment-links")[0]
    assert created.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert created.headers["Square-Version"]
    body = created.json
    assert body["idempotency_key"] == f"checkout-{payment.reference}"
    assert body["quick_pay"] == {"name": f"Acme Diagnostics: bill {link.bill_reference}",
                                 "location_id": LOCATION_ID,
                                 "price_money": {"amount": 150000, "currency": "USD"}}
    assert body["checkout_options"]["redirect_url"] == (
        f"{live}/pay/{link.token}/return?ref={payment.reference}")
    assert body["payment_note"].startswith(f"Ref {payment.reference}: ")
    assert body["pre_populated_data"] == {"buyer_email": "asha@example.com",
                                          "buyer_phone_number": "+919876543210"}
    link_id, order_id = split_checkout_id(payment.checkout_id)
    assert square.links[link_id]["order_id"] == order_id

    back = pay_on_square(browser, checkout_url)
    assert back.status_code == 302
    assert back.headers["Location"].startswith(
        f"{live}/pay/{link.token}/return?ref={payment.reference}&")
    assert browser.get(back.headers["Location"]).status_code == 200
    events = square.wait_events(3)
    assert [e.type for e in events] == ["payment.created", "payment.updated", "order.updated"]
    assert all(e.status == 200 for e in events)
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 150000
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id == events[1].json["data"]["id"]
    assert (payment.card_brand, payment.card_last4, payment.method) == ("VISA", "1111", "card")
    rows = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)  # order.updated is acknowledged only
    assert [r.event_type for r in rows] == ["payment.created", "payment.updated"]
    assert all(r.signature_valid and r.payment_id == payment.id for r in rows)
    assert rows[1].outcome == "payment succeeded; link paid"


def test_return_without_webhooks_is_confirmed_against_the_order(app, square, sq_lab, build,
                                                                 db):
    square.append_return_params = False  # as in Square's sandbox: nothing on the URL
    with serving(app) as live:  # no webhook subscription: only the return remains
        link = build.link(sq_lab)
        browser, checkout_url = press_pay(live, link.token)
        back = pay_on_square(browser, checkout_url)
        assert back.headers["Location"] == (
            f"{live}/pay/{link.token}/return?ref={only_payment(db, link).reference}")
        assert browser.get(back.headers["Location"]).status_code == 200
        db.refresh(link)
        assert link.status == LinkStatus.CREATED  # the unsigned return proves nothing
        job = db.scalar(select(Job).where(Job.kind == "payment.fetch_status"))
        job.run_at = utcnow()
        db.commit()
        wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    payment = only_payment(db, link)
    _link_id, order_id = split_checkout_id(payment.checkout_id)
    assert square.requests_to("GET", f"/v2/orders/{order_id}")
    assert square.requests_to("GET", f"/v2/payments/{payment.gateway_transaction_id}")
    fetched = exchanges(db, ExchangeKind.STATUS_FETCHED)[-1]
    assert fetched.event_type == "payment.completed" and fetched.success


def forged_payment_body(payment: Payment, **fields) -> bytes:
    obj = {"id": "forgedPayment000000000000001", "status": "COMPLETED",
           "note": f"Ref {payment.reference}: forged", "source_type": "CARD",
           "order_id": split_checkout_id(payment.checkout_id)[1],
           "amount_money": {"amount": payment.amount, "currency": payment.currency}, **fields}
    return json.dumps({"merchant_id": "M1", "type": "payment.updated",
                       "event_id": f"evt-{time.monotonic_ns()}",
                       "created_at": "2026-11-26T10:00:00Z",
                       "data": {"type": "payment", "id": obj["id"],
                                "object": {"payment": obj}}}).encode()


def test_forged_or_tampered_webhooks_are_refused_and_change_nothing(live, sq_lab, build, db):
    link = build.link(sq_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    url = f"{live}/payments/webhook/square"
    body = forged_payment_body(payment)
    header = "x-square-hmacsha256-signature"
    for signature, sent in [
        (sign_webhook("not-the-signature-key", url, body), body),
        (sign_webhook(SIGNATURE_KEY, "https://tunnel.example/payments/webhook/square", body),
         body),  # signed for another notification URL
        (sign_webhook(SIGNATURE_KEY, url, body), body.replace(b'"M1"', b'"M2"')),  # tampered
        ("", body),
    ]:
        answer = requests.post(url, data=sent, headers={header: signature,
                                                        "Content-Type": "application/json"})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_signature"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING
    assert exchanges(db, ExchangeKind.WEBHOOK_RECEIVED) == []
    # the same body signed Square's way is applied once; a redelivery is a duplicate
    genuine = {header: sign_webhook(SIGNATURE_KEY, url, body)}
    assert requests.post(url, data=body, headers=genuine).json()["duplicate"] is False
    assert requests.post(url, data=body, headers=genuine).json()["duplicate"] is True
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == payment.amount


def test_other_payments_at_the_location_are_acknowledged_and_ignored(live, square, sq_lab,
                                                                     build, db):
    link = build.link(sq_lab)
    press_pay(live, link.token)
    square.send_event("payment.updated", "payment", "instore1", {"payment": {
        "id": "instore1", "status": "COMPLETED", "note": "Table 4", "source_type": "CASH",
        "amount_money": {"amount": link.amount, "currency": "USD"}}})
    square.send_event("payment.updated", "payment", "instore2", {"payment": {
        "id": "instore2", "status": "COMPLETED", "note": "Ref pay_not_ours: x",
        "amount_money": {"amount": link.amount, "currency": "USD"}}})
    first, second = square.wait_events(2)
    assert first.status == 200 and first.json["data"]["id"] == "instore1"
    assert second.status == 400  # names a reference of ours that does not exist
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert exchanges(db, ExchangeKind.WEBHOOK_RECEIVED) == []


@pytest.mark.parametrize("money", [{"amount": 100, "currency": "USD"},
                                   {"amount": 123450, "currency": "CAD"}])
def test_amount_or_currency_mismatch_is_not_marked_paid(live, square, sq_lab, build, db, money):
    link = build.link(sq_lab, amount=123450)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    square.send_event("payment.updated", "payment", "p1", {"payment": {
        "id": "p1", "status": "COMPLETED", "note": f"Ref {payment.reference}: x",
        "amount_money": money}})
    assert square.wait_events(1)[0].status == 200
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and link.needs_attention
    assert "expected 123450 USD" in link.attention_reason
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_unknown_status_is_refused_logged_and_changes_nothing(app, live, square, sq_lab, build,
                                                              db, caplog):
    link = build.link(sq_lab)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    square.send_event("payment.updated", "payment", "p1", {"payment": {
        "id": "p1", "status": "SETTLED", "note": f"Ref {payment.reference}: x",
        "amount_money": {"amount": payment.amount, "currency": "USD"}}})
    assert square.wait_events(1)[0].status == 400
    assert "unknown gateway status 'SETTLED'" in caplog.text
    # the status check meets an unknown value too: it raises, is recorded, and moves nothing
    square.webhooks.clear()
    pay_on_square(browser, checkout_url)
    paid = next(iter(square.payments.values()))
    paid["status"] = "REVERSED"
    with pytest.raises(UnknownStatus):
        fetch_and_apply(db, app.config, payment.id)
    row = exchanges(db, ExchangeKind.STATUS_FETCHED)[-1]
    assert not row.success and "REVERSED" in row.error
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING
    paid["status"] = "COMPLETED"
    fetch_and_apply(db, app.config, payment.id)
    db.refresh(link)
    assert link.status == LinkStatus.PAID


def test_declined_card_fails_the_attempt_and_the_patient_may_retry(live, square, sq_lab, build,
                                                                   db):
    link = build.link(sq_lab)
    browser, checkout_url = press_pay(live, link.token)
    declined = pay_on_square(browser, checkout_url, "decline")
    assert declined.status_code == 200 and "declined" in declined.text
    square.wait_events(1)
    wait_until(lambda: only_payment(db, link).status == PaymentStatus.FAILED)
    assert "GENERIC_DECLINE" in only_payment(db, link).failure_reason
    browser.get(pay_on_square(browser, checkout_url).headers["Location"])  # the same link
    square.wait_events(4)
    wait_until(lambda: only_payment(db, link).status == PaymentStatus.SUCCEEDED)
    db.refresh(link)
    assert link.status == LinkStatus.PAID


def test_partial_then_full_refund_with_idempotency_keys(app, live, square, sq_lab, build, db):
    link, payment = paid_link(live, square, sq_lab, build, db)
    refund = request_refund(db, app.config, payment.id, 50000, "Overcharged")
    assert refund.status == RefundStatus.PENDING
    sent = square.requests_to("POST", "/v2/refunds")[0].json
    assert sent == {"idempotency_key": f"refund-{refund.reference}",
                    "payment_id": payment.gateway_transaction_id,
                    "amount_money": {"amount": 50000, "currency": "USD"},
                    "reason": "Overcharged"}
    with pytest.raises(RefundNotAllowed):  # 50,000 is in flight: at most 100,000 remains
        request_refund(db, app.config, payment.id, 100001)
    # a retry with the same key refunds once
    gateway = SquareGateway(CREDENTIALS, api_base=square.url)
    again = gateway.refund(RefundRequest(reference=payment.reference,
                                         transaction_id=payment.gateway_transaction_id,
                                         amount=50000, currency="USD", reason="Overcharged",
                                         idempotency_key=f"refund-{refund.reference}"))
    assert again.refund_id == refund.gateway_refund_id and len(square.refunds) == 1

    square.complete_refund(refund.gateway_refund_id)

    def settled():
        db.refresh(refund)
        return refund.status == RefundStatus.SUCCEEDED

    wait_until(settled)
    db.refresh(payment)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert payment.amount_refunded == 50000

    square.refunds_settle_immediately = True
    rest = request_refund(db, app.config, payment.id, 100000)
    assert rest.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert payment.status == PaymentStatus.REFUNDED and payment.amount_refunded == 150000
    with pytest.raises(GatewayError) as caught:  # Square's own refusal, in its words
        gateway.refund(RefundRequest(reference=payment.reference,
                                     transaction_id=payment.gateway_transaction_id, amount=1,
                                     currency="USD", reason="", idempotency_key="refund-extra"))
    assert "exceeds the amount available to refund" in caught.value.message
    assert not caught.value.retryable


def test_cancelling_the_link_deletes_it_at_square_so_a_late_payment_fails(
        app, live, square, sq_lab, build, db):
    link = build.link(sq_lab)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    link_id, order_id = split_checkout_id(payment.checkout_id)
    cancel_link(db, link, user_id=None)
    db.commit()
    wait_idle(app)
    assert square.requests_to("DELETE", f"/v2/online-checkout/payment-links/{link_id}")
    assert link_id in square.deleted_links and square.orders[order_id]["state"] == "CANCELED"
    assert browser.get(checkout_url).status_code == 404
    late = browser.post(checkout_url, data={"outcome": "pay"}, allow_redirects=False)
    assert late.status_code == 404 and square.payments == {}
    fetch_and_apply(db, app.config, payment.id)  # reconciliation reads the cancelled order
    assert only_payment(db, link).status == PaymentStatus.FAILED
    gateway = SquareGateway(CREDENTIALS, api_base=square.url)
    gateway.cancel_checkout(payment.reference, payment.checkout_id)  # already gone: fine


def test_a_paid_link_is_not_deleted(live, square, sq_lab, build, db):
    _link, payment = paid_link(live, square, sq_lab, build, db)
    SquareGateway(CREDENTIALS, api_base=square.url).cancel_checkout(payment.reference,
                                                                    payment.checkout_id)
    assert square.requests_to("DELETE", "/v2/") == []


def test_a_currency_square_does_not_take_is_a_clear_error(live, square, lab, app, build, db):
    build.connect(lab, "square", CREDENTIALS)  # the lab bills in INR; the location takes USD
    link = build.link(lab)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    assert "Please contact the lab" in answer.text
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    assert "This merchant can only process payments in USD" in payment.failure_reason
    exchange = exchanges(db, ExchangeKind.CHECKOUT_CREATED)[0]
    assert not exchange.success and exchange.payload["code"] == "not_configured"
    assert exchange.payload["raw"]["errors"][0]["field"] == "quick_pay.price_money.currency"


def test_bad_token_and_outages_reach_the_patient_as_a_clear_message(app, live, square, lab,
                                                                     build, db):
    build.connect(lab, "square", {**CREDENTIALS, "access_token": "EAAAl-wrong-but-secret-0003"},
                  currency="USD")
    link = build.link(lab)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    assert "We could not reach the payment service" in answer.text
    exchange = exchanges(db, ExchangeKind.CHECKOUT_CREATED)[0]
    assert not exchange.success
    assert exchange.error == "Square: This request could not be authorized."
    assert "EAAAl-wrong-but-secret-0003" not in json.dumps(exchange.payload) + exchange.error

    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "square", CREDENTIALS)
    db.commit()
    before = len(square.requests_to("POST", "/v2/"))
    square.fail_next(500)
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    assert len(square.requests_to("POST", "/v2/")) == before + 1  # the SDK did not retry
    square.fail_next(502, raw=b"<html>Bad gateway</html>")
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    rows = exchanges(db, ExchangeKind.CHECKOUT_CREATED)
    assert [r.error for r in rows[1:]] == [
        "Square: An internal error has occurred.",
        "Square answered with an unreadable error (HTTP 502)."]
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(square.url)


def test_timeouts_are_bounded_and_retryable(square):
    gateway = SquareGateway(CREDENTIALS, api_base=square.url, timeout=(2.0, 0.3))
    gateway.test_connection()  # the SDK's first call sets it up: seconds on a busy machine
    square.delay_next(1.5)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        gateway.test_connection()
    assert caught.value.code == "timeout" and caught.value.retryable
    assert time.monotonic() - started < 1.2
    closed = SquareGateway(CREDENTIALS, api_base="http://127.0.0.1:9", timeout=(0.5, 0.5))
    with pytest.raises(GatewayError) as caught:
        closed.test_connection()
    assert caught.value.code in ("unreachable", "timeout") and caught.value.retryable


def test_admin_tests_the_connection_and_sees_squares_own_error(admin_client, square, sq_lab):
    page = admin_client.get("/admin/gateways/square").get_data(as_text=True)
    assert "/payments/webhook/square" in page and "payment.updated" in page
    assert "refund.updated" in page and "Webhook signature key" in page
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/square/test", data={"csrf_token": token},
                               follow_redirects=True)
    assert "Connected to Square: location Acme Main, payments in USD." in answer.get_data(
        as_text=True)
    assert square.requests_to("GET", f"/v2/locations/{LOCATION_ID}")
    square.fail_next(401, [{"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED",
                            "detail": "This request could not be authorized."}])
    text = admin_client.post("/admin/gateways/square/test", data={"csrf_token": token},
                             follow_redirects=True).get_data(as_text=True)
    assert "Connection failed. Square: This request could not be authorized." in text
    assert ACCESS_TOKEN not in text and SIGNATURE_KEY not in text


def test_square_secrets_stay_secret(app, square, lab, build, db, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    wrong = "EAAAl-wrong-but-secret-0004"
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    build.connect(lab, "square", {**CREDENTIALS, "access_token": wrong}, currency="USD")
    square.refunds_settle_immediately = True
    pages = []
    with serving(app) as live:
        square.add_webhook(f"{live}/payments/webhook/square")
        failed = build.link(lab)
        browser = requests.Session()
        page = browser.get(f"{live}/pay/{failed.token}").text
        pages.append(browser.post(f"{live}/pay/{failed.token}",
                                  data={"csrf_token": csrf_from(page)}).text)
        save_credentials(db, keys, lab, "square", CREDENTIALS)
        db.commit()
        link, payment = paid_link(live, square, lab, build, db)
        pages.append(browser.get(f"{live}/pay/{link.token}").text)
        request_refund(db, app.config, payment.id, 1000, "Overcharged")
        square.wait_events(5)  # refund.created and refund.updated
        wait_idle(app)
    pages += admin_pages(app, build, lab, "square", link)
    assert "Connected to Square" in pages[-3]
    assert_nowhere([ACCESS_TOKEN, SIGNATURE_KEY, wrong], caplog, capsys, pages, db)
