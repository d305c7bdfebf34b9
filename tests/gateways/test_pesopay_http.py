"""PesoPay over real HTTP: the portal against a fake speaking AsiaPay's wire format."""

import json
import logging
import time
from html.parser import HTMLParser

import pytest
import requests
from sqlalchemy import select

from gateways.base import EventStatus, GatewayError, RefundRequest, UnknownStatus
from gateways.pesopay import PesoPayGateway
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
from portal.services.refunds import RefundNotAllowed, refundable, request_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, serving
from tests.fakes.pesopay_fake import (
    DECLINED_CARD,
    ORDER_API,
    PAY_COMPLETE,
    PAY_FORM,
    TEST_VISA,
    FakePesoPay,
    asiapay_hash,
    sign_datafeed,
)
from tests.gateways.test_gateway_secrets import admin_pages, assert_nowhere

MERCHANT_ID = "18061234"
SECURE_HASH_SECRET = "pp-hash-secret-5b1e77c0"
API_LOGIN = "portal-api"
API_PASSWORD = "pp-api-password-93d4aa"
CREDENTIALS = {"merchant_id": MERCHANT_ID, "secure_hash_secret": SECURE_HASH_SECRET,
               "hash_function": "SHA-256", "api_login_id": API_LOGIN,
               "api_password": API_PASSWORD}


@pytest.fixture
def pesopay(app):
    with FakePesoPay(MERCHANT_ID, SECURE_HASH_SECRET, "SHA-256",
                     {API_LOGIN: API_PASSWORD}) as fake:
        app.config["PORTAL_PESOPAY_API_BASE"] = fake.api_base
        yield fake


@pytest.fixture
def live(app, pesopay):
    with serving(app) as url:
        pesopay.datafeed_url = f"{url}/payments/webhook/pesopay"
        yield url


@pytest.fixture
def pp_lab(build):
    return build.lab("manila", name="Manila Diagnostics", currency="PHP", gateway="pesopay",
                     credentials=CREDENTIALS)


class FormReader(HTMLParser):
    """The form of the portal's redirect page: its action, hidden fields and button."""

    def __init__(self, page: str):
        super().__init__()
        self.page = page
        self.action, self.fields, self.buttons = "", {}, []
        self._button = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and "data-autosubmit" in attrs:
            self.action = attrs["action"]
        elif tag == "input" and attrs.get("type") == "hidden" and self.action:
            self.fields[attrs["name"]] = attrs["value"]
        self._button = tag == "button"

    def handle_data(self, data):
        if self._button and data.strip():
            self.buttons.append(data.strip())


def press_pay(live: str, token: str) -> tuple[requests.Session, FormReader]:
    """The patient presses Pay: the portal answers with the form to post to PesoPay."""
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{token}").text
    answer = browser.post(f"{live}/pay/{token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 200
    return browser, FormReader(answer.text)


def pay(browser: requests.Session, form: FormReader, card: str = TEST_VISA,
        action: str = "pay") -> requests.Response:
    """The browser posts the form (as autosubmit.js does), then the patient pays on the page."""
    hosted = browser.post(form.action, data=form.fields)
    assert hosted.status_code == 200, hosted.text
    session = hosted.text.split("name='session' value='")[1].split("'")[0]
    return browser.post(form.action.replace(PAY_FORM, PAY_COMPLETE),
                        data={"session": session, "cardNo": card, "action": action},
                        allow_redirects=False)


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def exchanges(db, kind) -> list[PaymentGatewayTransaction]:
    return db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == kind)).all()


def post_datafeed(live: str, fields: dict) -> requests.Response:
    return requests.post(f"{live}/payments/webhook/pesopay", data=fields)


def test_patient_posts_the_form_pays_and_the_datafeed_closes_the_link(live, pesopay, pp_lab,
                                                                      build, db):
    link = build.link(pp_lab, amount=123450)
    browser, form = press_pay(live, link.token)
    payment = only_payment(db, link)
    assert form.action == f"{pesopay.api_base}/payment/payForm.jsp"
    assert form.buttons == ["Continue to secure payment"]  # for browsers without JavaScript
    return_url = f"{live}/pay/{link.token}/return?ref={payment.reference}"
    assert form.fields == {
        "merchantId": MERCHANT_ID, "orderRef": payment.reference, "currCode": "608",
        "amount": "1234.50", "payType": "N", "payMethod": "ALL", "lang": "E",
        "successUrl": return_url, "failUrl": return_url, "cancelUrl": f"{live}/pay/{link.token}",
        "secureHash": asiapay_hash("SHA-256", [MERCHANT_ID, payment.reference, "608",
                                               "1234.50", "N"], SECURE_HASH_SECRET)}
    assert payment.checkout_id == payment.reference

    back = pay(browser, form)
    assert back.status_code == 302
    assert back.headers["Location"] == f"{return_url}&Ref={payment.reference}"
    sent = pesopay.wait_datafeeds(1)[0]
    assert (sent.status, sent.answer) == (200, "OK")  # AsiaPay's acknowledgement, exactly
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id == sent.fields["PayRef"]
    assert (payment.card_brand, payment.card_last4) == ("VISA", "5005")
    [row] = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)
    assert row.signature_valid and row.event_id == f"{sent.fields['PayRef']}:0"
    assert "Payment received" in browser.get(back.headers["Location"]).text


def test_the_return_alone_proves_nothing_until_the_status_query_confirms(app, pesopay, pp_lab,
                                                                        build, db):
    with serving(app) as live:  # no datafeed URL set at PesoPay: only the return remains
        link = build.link(pp_lab)
        browser, form = press_pay(live, link.token)
        back = pay(browser, form)
        assert "Processing your payment" in browser.get(back.headers["Location"]).text
        db.refresh(link)
        assert link.status == LinkStatus.CREATED
        job = db.scalar(select(Job).where(Job.kind == "payment.fetch_status"))
        job.run_at = utcnow()
        db.commit()
        wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    payment = only_payment(db, link)
    [query] = pesopay.requests_to("POST", ORDER_API)
    assert query.form == {"merchantId": MERCHANT_ID, "loginId": API_LOGIN,
                          "password": API_PASSWORD, "actionType": "Query",
                          "orderRef": payment.reference}
    assert payment.gateway_transaction_id == next(iter(pesopay.transactions))
    assert ExchangeKind.STATUS_FETCHED in {r.kind for r in db.scalars(
        select(PaymentGatewayTransaction).where(PaymentGatewayTransaction.payment_id ==
                                                payment.id))}


def test_a_declined_card_fails_the_attempt_and_the_patient_can_pay_again(live, pesopay, pp_lab,
                                                                        build, db):
    link = build.link(pp_lab)
    browser, form = press_pay(live, link.token)
    back = pay(browser, form, DECLINED_CARD)
    assert back.headers["Location"].startswith(f"{live}/pay/{link.token}/return?ref=")
    pesopay.wait_datafeeds(1)
    page = browser.get(back.headers["Location"]).text
    assert "The payment did not go through" in page and "Your bank declined the payment." in page
    assert "Declined by the bank" not in page  # the gateway's own words stay with staff
    assert only_payment(db, link).status == PaymentStatus.FAILED
    db.refresh(link)
    assert link.status == LinkStatus.CREATED

    browser, form = press_pay(live, link.token)  # a new attempt: a new orderRef
    pay(browser, form)
    pesopay.wait_datafeeds(2)
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    assert [p.status for p in db.scalars(select(Payment).order_by(Payment.id))] == [
        PaymentStatus.FAILED, PaymentStatus.SUCCEEDED]


def test_a_second_press_gets_a_fresh_form_at_once(live, pesopay, pp_lab, build, db):
    link = build.link(pp_lab)
    press_pay(live, link.token)
    started = time.monotonic()
    browser, form = press_pay(live, link.token)  # back button, Pay again
    assert time.monotonic() - started < 5  # not held for the in-flight wait (15 s)
    first, second = db.scalars(select(Payment).order_by(Payment.id)).all()
    assert form.fields["orderRef"] == second.reference != first.reference
    pay(browser, form)
    pesopay.wait_datafeeds(1)
    db.refresh(link)
    assert link.status == LinkStatus.PAID


def test_cancel_on_the_hosted_page_returns_to_the_pay_page(live, pesopay, pp_lab, build, db):
    link = build.link(pp_lab)
    browser, form = press_pay(live, link.token)
    back = pay(browser, form, action="cancel")
    assert back.headers["Location"] == f"{live}/pay/{link.token}"
    assert pesopay.datafeeds == [] and only_payment(db, link).status == PaymentStatus.PENDING


def test_forged_and_tampered_datafeeds_are_refused_and_change_nothing(live, pesopay, pp_lab,
                                                                      build, db):
    link = build.link(pp_lab, amount=123450)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    fields = {"src": "0", "prc": "0", "successcode": "0", "Ref": payment.reference,
              "PayRef": "5999001", "Cur": "608", "Amt": "1234.50", "payerAuth": "Y"}
    good = sign_datafeed(fields, SECURE_HASH_SECRET, "SHA-256")
    for forged in ({**fields, "secureHash": sign_datafeed(fields, "guessed", "SHA-256")},
                   {**fields, "secureHash": sign_datafeed(fields, SECURE_HASH_SECRET)},  # SHA-1
                   {**fields, "Amt": "1.00", "secureHash": good},
                   {**fields, "successcode": "0", "PayRef": "5999002", "secureHash": good},
                   fields):
        answer = post_datafeed(live, forged)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_signature"
    doubled = requests.post(f"{live}/payments/webhook/pesopay",
                            data=f"Ref={payment.reference}&Amt=1.00&Amt=1234.50")
    assert doubled.status_code == 400
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and not link.needs_attention
    assert exchanges(db, ExchangeKind.WEBHOOK_RECEIVED) == []

    # during a rotation AsiaPay sends one hash per secret: any may match
    rotated = {**fields, "secureHash": f"{'0' * 64},{good}"}
    first = post_datafeed(live, rotated)
    assert (first.status_code, first.text) == (200, "OK")
    assert first.headers["Content-Type"].startswith("text/plain")
    replay = post_datafeed(live, rotated)
    assert (replay.status_code, replay.text) == (200, "OK")
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450
    rows = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)
    assert [r.event_id for r in rows] == ["5999001:0", None]
    assert rows[1].outcome == "duplicate of 5999001:0: ignored"


@pytest.mark.parametrize(("amt", "cur"), [("1.00", "608"), ("1234.50", "840"),
                                          ("1234.501", "608")])
def test_a_signed_datafeed_with_other_money_is_not_marked_paid(live, pesopay, pp_lab, build, db,
                                                               amt, cur):
    link = build.link(pp_lab, amount=123450)
    browser, form = press_pay(live, link.token)
    payment = only_payment(db, link)
    pesopay.send_datafeed({"src": "0", "prc": "0", "successcode": "0", "Ref": payment.reference,
                           "PayRef": "5999100", "Cur": cur, "Amt": amt, "payerAuth": "Y"})
    assert pesopay.wait_datafeeds(1)[0].answer == "OK"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and link.needs_attention
    assert "expected 123450 PHP" in link.attention_reason
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_unknown_status_values_raise_and_are_logged(app, live, pesopay, pp_lab, build, db,
                                                    caplog):
    link = build.link(pp_lab)
    press_pay(live, link.token)
    payment = only_payment(db, link)
    fields = {"src": "0", "prc": "0", "successcode": "5", "Ref": payment.reference,
              "PayRef": "5999200", "Cur": "608", "Amt": "1234.50", "payerAuth": "Y"}
    answer = post_datafeed(live, {**fields, "secureHash": sign_datafeed(
        fields, SECURE_HASH_SECRET, "SHA-256")})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unknown_status"
    assert "unknown gateway status '5'" in caplog.text

    pesopay.fail_next(200, "<records><record><orderStatus>Teleported</orderStatus>"
                           f"<ref>{payment.reference}</ref></record></records>",
                      content_type="text/xml")
    with pytest.raises(UnknownStatus):
        fetch_and_apply(db, app.config, payment.id)
    [row] = exchanges(db, ExchangeKind.STATUS_FETCHED)
    assert not row.success and row.error == "unknown gateway status 'Teleported'"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING


def paid_payment(live, pesopay, link, db) -> Payment:
    browser, form = press_pay(live, link.token)
    pay(browser, form)
    pesopay.wait_datafeeds(len(pesopay.datafeeds) + 1)
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    return payment


def test_partial_then_full_refund(app, live, pesopay, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000)
    payment = paid_payment(live, pesopay, link, db)

    refund = request_refund(db, app.config, payment.id, 50000, "Test not done")
    assert refund.status == RefundStatus.SUCCEEDED
    assert refund.gateway_refund_id == f"{payment.gateway_transaction_id}/{refund.reference}"
    [call] = pesopay.requests_to("POST", ORDER_API)
    assert call.form == {"merchantId": MERCHANT_ID, "loginId": API_LOGIN,
                         "password": API_PASSWORD, "actionType": "RequestRefund",
                         "payRef": payment.gateway_transaction_id, "amount": "500.00"}
    txn = pesopay.transactions[payment.gateway_transaction_id]
    assert (txn.status, txn.refunds) == ("RequestPartialRefund", [50000])
    db.refresh(payment)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    with pytest.raises(RefundNotAllowed):
        request_refund(db, app.config, payment.id, 100001)

    rest = request_refund(db, app.config, payment.id, 100000)
    assert rest.status == RefundStatus.SUCCEEDED and txn.status == "Request Refund"
    db.refresh(payment)
    assert payment.status == PaymentStatus.REFUNDED and payment.amount_refunded == 150000
    pesopay.settle_refunds()
    assert txn.status == "Refunded"


def test_a_refund_pesopay_refuses_fails_with_its_words(app, live, pesopay, pp_lab, build, db):
    link = build.link(pp_lab)
    payment = paid_payment(live, pesopay, link, db)
    pesopay.fail_next(200, "resultCode=-1&errMsg=Refund+period+has+expired")
    refund = request_refund(db, app.config, payment.id, 1000)
    assert refund.status == RefundStatus.FAILED
    assert refund.failure_reason == "PesoPay: Refund period has expired"
    [row] = exchanges(db, ExchangeKind.REFUND_REQUESTED)
    assert not row.success and row.error == "PesoPay: Refund period has expired"
    db.refresh(payment)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.amount_refunded == 0


def test_a_refund_whose_answer_is_lost_is_held_pending_never_sent_twice(app, live, pesopay,
                                                                        pp_lab, build, db):
    link = build.link(pp_lab)
    payment = paid_payment(live, pesopay, link, db)
    pesopay.fail_next(502, "<html>Bad gateway</html>", after=True)  # made, answer lost
    refund = request_refund(db, app.config, payment.id, 1000)
    assert refund.status == RefundStatus.PENDING and refund.gateway_refund_id
    assert pesopay.transactions[payment.gateway_transaction_id].refunds == [1000]
    [row] = exchanges(db, ExchangeKind.REFUND_REQUESTED)
    assert "check it in PesoPay's merchant admin" in row.payload["unconfirmed"]
    assert db.scalar(select(Job).where(Job.kind == "refund.submit")) is None
    wait_idle(app)
    assert len(pesopay.requests_to("POST", ORDER_API)) == 1
    db.refresh(payment)
    assert refundable(payment) == payment.amount - 1000  # held back while unconfirmed


def test_refund_timeouts_are_bounded_and_never_repeated_blindly(pesopay):
    gateway = PesoPayGateway(CREDENTIALS, api_base=pesopay.api_base, timeout=(2.0, 0.3))
    refund = RefundRequest(reference="pay_x", transaction_id="5000001", amount=1000,
                           currency="PHP", reason="", idempotency_key="refund-rfd_1")
    pesopay.delay_next(1.5)
    result = gateway.refund(refund)  # the request may have arrived: pending, not retried
    assert result.status == EventStatus.PENDING and "unconfirmed" in result.raw

    with pytest.raises(GatewayError) as caught:  # refused before any call
        gateway.refund(RefundRequest(**{**refund.__dict__, "currency": "BHD"}))
    assert caught.value.code == "unsupported_currency"

    closed = FakePesoPay().start()
    closed.stop()  # nothing listens there now: the request was never sent
    gateway = PesoPayGateway(CREDENTIALS, api_base=closed.api_base, timeout=(2.0, 0.3))
    with pytest.raises(GatewayError) as caught:
        gateway.refund(refund)
    assert caught.value.code == "unreachable" and caught.value.retryable


def test_read_timeout_is_bounded_and_retryable(pesopay):
    gateway = PesoPayGateway(CREDENTIALS, api_base=pesopay.api_base, timeout=(2.0, 0.3))
    pesopay.delay_next(1.5)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        gateway.fetch_status("pay_x")
    assert caught.value.code == "timeout" and caught.value.retryable
    assert time.monotonic() - started < 1.5


def test_status_errors_are_recorded_and_change_nothing(app, live, pesopay, pp_lab, build, db):
    link = build.link(pp_lab)
    browser, form = press_pay(live, link.token)
    payment = only_payment(db, link)
    for status, body, message in (
            (500, "<html>Internal error</html>", "PesoPay's merchant API answered HTTP 500."),
            (200, "resultCode=-1&errMsg=Authentication+Failed", "PesoPay: Authentication Failed"),
            (200, "<records><record>", "PesoPay answered the status query with unreadable XML.")):
        pesopay.fail_next(status, body)
        with pytest.raises(GatewayError):
            fetch_and_apply(db, app.config, payment.id)
        assert exchanges(db, ExchangeKind.STATUS_FETCHED)[-1].error == message
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_a_currency_pesopay_cannot_take_reaches_the_patient_clearly(app, live, pesopay, build,
                                                                   db):
    lab = build.lab("manama", name="Manama Labs", currency="BHD")
    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "pesopay", CREDENTIALS)
    db.commit()
    link = build.link(lab, amount=12345)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503 and "Please try again" in answer.text
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_reason == "PesoPay does not take payments in BHD."
    [row] = exchanges(db, ExchangeKind.CHECKOUT_CREATED)
    assert not row.success and row.payload["code"] == "unsupported_currency"


def test_admin_tests_the_connection_against_the_merchant_api(app, admin_client, pesopay, lab,
                                                             db):
    page = admin_client.get("/admin/gateways/pesopay").get_data(as_text=True)
    assert "/payments/webhook/pesopay" in page and "Return Value Link (Datafeed)" in page
    assert ('<select aria-describedby="hash_function-help" autocomplete="off" id="hash_function"'
            ' name="hash_function"><option value="SHA-1">') in page  # first: the default
    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "pesopay", CREDENTIALS)
    db.commit()
    page = admin_client.get("/admin/gateways/pesopay").get_data(as_text=True)
    assert '<option selected value="SHA-256">' in page
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/pesopay/test", data={"csrf_token": token},
                               follow_redirects=True).get_data(as_text=True)
    assert "Connected to PesoPay&#39;s merchant API." in answer
    assert pesopay.requests_to("POST", ORDER_API)[-1].form["actionType"] == "Query"
    pesopay.api_users[API_LOGIN] = "changed-at-pesopay"
    answer = admin_client.post("/admin/gateways/pesopay/test", data={"csrf_token": token},
                               follow_redirects=True).get_data(as_text=True)
    assert "Connection failed. PesoPay: Authentication Failed" in answer
    assert API_PASSWORD not in answer and SECURE_HASH_SECRET not in answer


def test_pesopay_secrets_stay_secret(app, pesopay, build, lab, db, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    lab.currency = "PHP"
    db.commit()
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    wrong = "pp-wrong-but-secret-0003"
    save_credentials(db, keys, lab, "pesopay", {**CREDENTIALS, "api_password": wrong})
    db.commit()
    pages = []
    with serving(app) as live:
        pesopay.datafeed_url = f"{live}/payments/webhook/pesopay"
        failed = build.link(lab)
        browser, form = press_pay(live, failed.token)
        pages.append(browser.get(f"{live}/pay/{failed.token}").text)
        with pytest.raises(GatewayError):  # the status query with the wrong API password
            fetch_and_apply(db, app.config, only_payment(db, failed).id)
        save_credentials(db, keys, lab, "pesopay", CREDENTIALS)
        db.commit()
        link = build.link(lab)
        browser, form = press_pay(live, link.token)
        pages.append(form.page)  # the redirect page: the form and its secureHash
        back = pay(browser, form)
        pesopay.wait_datafeeds(1)
        pages.append(browser.get(back.headers["Location"]).text)
        payment = only_payment(db, link)
        request_refund(db, app.config, payment.id, 1000, "Overcharged")
        wait_idle(app)
    pages += admin_pages(app, build, lab, "pesopay", link)
    assert "Connected to PesoPay" in pages[-3]
    assert_nowhere([SECURE_HASH_SECRET, API_PASSWORD, wrong], caplog, capsys, pages, db)
    assert json.dumps(pesopay.forms).count(SECURE_HASH_SECRET) == 0
