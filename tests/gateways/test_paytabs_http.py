"""PayTabs over real HTTP: the portal against a fake speaking PayTabs' PT2 wire format.

The patient presses Pay, lands on the fake's Hosted Payment Page, and is POSTed back to the
portal with PayTabs' signed form; the portal verifies it and reads the sale back from
`/payment/query` (the form carries no amount). IPNs are signed over the raw body.
"""

import json
import logging
from decimal import Decimal

import pytest
import requests
from sqlalchemy import select

from gateways.base import EventStatus, GatewayError, UnknownStatus
from gateways.paytabs import PayTabsGateway
from portal.models import (
    CustomerPaymentProfile,
    ExchangeKind,
    LinkStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    Refund,
    RefundStatus,
    Role,
)
from portal.services.checkout import fetch_and_apply
from portal.services.keys import save_credentials
from portal.services.refunds import RefundNotAllowed, request_refund, submit_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, gateway_lab, serving, sign_in
from tests.fakes.paytabs_fake import FakePayTabs, parse_return_form, sign_ipn, sign_return
from tests.gateways.test_gateway_secrets import admin_pages, assert_nowhere

PROFILE_ID = 47170
SERVER_KEY = "SRJN9NWB2K-JBD9GRNRH2-PORTALTEST"
CREDENTIALS = {"profile_id": str(PROFILE_ID), "server_key": SERVER_KEY, "region": "KWT"}


@pytest.fixture
def paytabs(app):
    with FakePayTabs(profiles={PROFILE_ID: SERVER_KEY}) as fake:
        app.config["PORTAL_PAYTABS_API_BASE"] = fake.url
        yield fake


@pytest.fixture
def live(app, paytabs):
    with serving(app) as url:
        yield url


pt_lab = gateway_lab("paytabs", CREDENTIALS)


def press_pay(base: str, token: str, **form) -> tuple[requests.Session, str]:
    browser = requests.Session()
    page = browser.get(f"{base}/pay/{token}").text
    answer = browser.post(f"{base}/pay/{token}", data={"csrf_token": csrf_from(page), **form},
                          allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return browser, answer.headers["Location"]


def pay_on_hosted_page(browser: requests.Session, checkout_url: str, *, outcome: str = "pay",
                       card: str = "4111 1111 1111 1111") -> requests.Response:
    assert browser.get(checkout_url).status_code == 200
    return browser.post(checkout_url, data={"outcome": outcome, "card_number": card})


def post_back(browser: requests.Session, hosted_answer: requests.Response) -> requests.Response:
    """What the hosted page's script does: POST the signed form to our return URL."""
    action, fields = parse_return_form(hosted_answer.text)
    return browser.post(action, data=fields, allow_redirects=False)


def pay_and_return(base: str, token: str, **form) -> tuple[requests.Session, str]:
    """The whole patient journey; returns the browser and the return page's HTML."""
    browser, checkout_url = press_pay(base, token, **form)
    back = post_back(browser, pay_on_hosted_page(browser, checkout_url))
    assert back.status_code == 303
    return browser, browser.get(base + back.headers["Location"]).text


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def dump_rows(db) -> str:
    return "\n".join(str(r.payload) for r in db.scalars(select(PaymentGatewayTransaction)))


def webhook_rows(db) -> list[PaymentGatewayTransaction]:
    return list(db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED)))


def test_patient_pays_and_the_signed_return_closes_the_link(live, paytabs, pt_lab, build, db):
    link = build.link(pt_lab, amount=123450)
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{paytabs.url}/payment/wr/")
    payment = only_payment(db, link)
    sent = paytabs.requests_to("POST", "/payment/request")[0]
    assert sent.headers["Authorization"] == SERVER_KEY
    assert b'"cart_amount":1234.50' in sent.body  # a JSON number, exactly two decimals
    body = json.loads(sent.body, parse_float=Decimal)
    assert (body["profile_id"], body["tran_type"], body["tran_class"]) == (PROFILE_ID, "sale",
                                                                          "ecom")
    assert (body["cart_id"], body["cart_currency"]) == (payment.reference, "INR")
    assert body["return"] == f"{live}/pay/{link.token}/return?ref={payment.reference}"
    assert body["callback"] == f"{live}/payments/webhook/paytabs"
    assert body["customer_details"]["email"] == "asha@example.com"
    assert payment.checkout_id == paytabs.pages[checkout_url.rsplit("/", 1)[1]]

    hosted = pay_on_hosted_page(browser, checkout_url)
    action, fields = parse_return_form(hosted.text)
    assert action == body["return"]
    assert fields["respStatus"] == "A" and fields["cartId"] == payment.reference
    back = post_back(browser, hosted)
    assert back.status_code == 303
    assert back.headers["Location"] == f"/pay/{link.token}/return?ref={payment.reference}"
    page = browser.get(live + back.headers["Location"])
    assert "Payment received" in page.text
    db.refresh(link)
    assert link.status == LinkStatus.PAID  # the verified return, before any IPN
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id == payment.checkout_id == fields["tranRef"]
    assert (payment.card_brand, payment.card_last4) == ("visa", "1111")
    query = paytabs.requests_to("POST", "/payment/query")[0].json
    assert query == {"profile_id": PROFILE_ID, "tran_ref": fields["tranRef"]}
    kinds = db.scalars(select(PaymentGatewayTransaction.kind).where(
        PaymentGatewayTransaction.payment_id == payment.id)).all()
    assert ExchangeKind.RETURN_VERIFIED in kinds

    ipn = paytabs.wait_ipns(1)[0]
    assert (ipn.url, ipn.status) == (f"{live}/payments/webhook/paytabs", 200)
    [row] = webhook_rows(db)
    assert row.signature_valid and row.payment_id == payment.id
    assert row.event_id == f"{fields['tranRef']}:sale:A"
    db.refresh(link)
    assert link.amount_paid == 123450  # counted once, whatever came first


def test_three_decimal_currency_end_to_end(app, live, paytabs, pt_lab, build, db):
    link = build.link(pt_lab, amount=12345, currency="KWD")
    browser, checkout_url = press_pay(live, link.token)
    sent = paytabs.requests_to("POST", "/payment/request")[0]
    assert b'"cart_amount":12.345' in sent.body and b'"cart_currency":"KWD"' in sent.body
    assert "KWD 12.345" in browser.get(checkout_url).text  # what PayTabs understood

    back = post_back(browser, pay_on_hosted_page(browser, checkout_url))
    assert "Payment received" in browser.get(live + back.headers["Location"]).text
    db.refresh(link)
    assert (link.status, link.amount_paid) == (LinkStatus.PAID, 12345)
    ipn = paytabs.wait_ipns(1)[0]
    assert ipn.json["cart_amount"] == "12.345" and ipn.status == 200

    payment = only_payment(db, link)
    refund = request_refund(db, app.config, payment.id, 2345, "overcharged")
    assert refund.status == RefundStatus.SUCCEEDED
    sent = paytabs.requests_to("POST", "/payment/request")[-1]
    assert b'"cart_amount":2.345' in sent.body
    assert sent.json["tran_ref"] == payment.gateway_transaction_id
    assert sent.json["cart_id"] == refund.reference
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 2345)


def test_patient_cancels_on_the_hosted_page(live, paytabs, pt_lab, build, db):
    link = build.link(pt_lab)
    browser, checkout_url = press_pay(live, link.token)
    back = post_back(browser, pay_on_hosted_page(browser, checkout_url, outcome="cancel"))
    page = browser.get(live + back.headers["Location"]).text
    assert "The payment did not go through" in page
    assert "The payment was stopped before it was finished." in page
    db.refresh(link)
    assert link.status == LinkStatus.CREATED  # still payable: "Try again"
    assert only_payment(db, link).status == PaymentStatus.FAILED


def test_forged_return_changes_nothing(app, live, paytabs, pt_lab, build, db):
    link = build.link(pt_lab)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    claim = {"acquirerMessage": "", "acquirerRRN": "", "cartId": payment.reference,
             "customerEmail": "asha@example.com", "respCode": "G12345",
             "respMessage": "Authorised", "respStatus": "A", "token": "",
             "tranRef": payment.checkout_id}
    return_url = f"{live}/pay/{link.token}/return?ref={payment.reference}"
    for forged in ({**claim, "signature": sign_return("not-the-server-key", claim)},
                   {**claim, "signature": sign_return(SERVER_KEY, claim), "respCode": "G1"},
                   claim):
        back = browser.post(return_url, data=forged, allow_redirects=False)
        assert back.status_code == 303
        assert "Processing your payment" in browser.get(live + back.headers["Location"]).text
    assert paytabs.requests_to("POST", "/payment/query") == []  # refused unread

    # Genuinely signed, but PayTabs itself says nothing was paid: its word wins.
    genuine = {**claim, "signature": sign_return(SERVER_KEY, claim)}
    browser.post(return_url, data=genuine, allow_redirects=False)
    assert paytabs.requests_to("POST", "/payment/query")[0].json["tran_ref"] == \
        payment.checkout_id
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING
    gateway = PayTabsGateway(CREDENTIALS, api_base=paytabs.url)
    other_cart = {**claim, "cartId": "pay_someone_else"}
    with pytest.raises(GatewayError) as caught:
        gateway.verify_return({**other_cart, "signature": sign_return(SERVER_KEY, other_cart)})
    assert caught.value.code == "mismatch"
    assert gateway.verify_return({"ref": payment.reference}) is None  # nothing PayTabs signed


def test_ipn_with_a_bad_signature_is_refused_and_changes_nothing(live, paytabs, pt_lab, build,
                                                                  db):
    paytabs.deliver_callbacks = False
    link = build.link(pt_lab)
    browser, checkout_url = press_pay(live, link.token)
    pay_on_hosted_page(browser, checkout_url)  # the patient never comes back
    payment = only_payment(db, link)
    url = f"{live}/payments/webhook/paytabs"
    body = paytabs.ipn_body(payment.checkout_id)
    tampered = body.replace(b'"tran_total":"1234.50"', b'"tran_total":"9999.50"')
    assert tampered != body
    attempts = [(body, {"Signature": sign_ipn("not-the-server-key", body)}), (body, {}),
                (body, {"Signature": ""}), (tampered, {"Signature": sign_ipn(SERVER_KEY, body)})]
    for raw, headers in attempts:
        answer = requests.post(url, data=raw, headers={"Content-Type": "application/json",
                                                       **headers})
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_signature"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert webhook_rows(db) == []

    # The same body signed PayTabs' way is applied once; its replay is a duplicate.
    assert paytabs.post_ipn(url, body).json()["duplicate"] is False
    assert paytabs.post_ipn(url, body).json()["duplicate"] is True
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450


def test_amount_or_currency_mismatch_is_not_marked_paid(live, paytabs, pt_lab, build, db):
    paytabs.deliver_callbacks = False
    url = f"{live}/payments/webhook/paytabs"
    for changes, reported in (({"tran_total": "1.00"}, "100 INR"),
                              ({"tran_currency": "AED"}, "123450 AED")):
        link = build.link(pt_lab, amount=123450)
        browser, checkout_url = press_pay(live, link.token)
        pay_on_hosted_page(browser, checkout_url)
        payment = only_payment(db, link)
        answer = paytabs.post_ipn(url, paytabs.ipn_body(payment.checkout_id, **changes))
        assert answer.status_code == 200 and answer.json()["duplicate"] is False
        db.refresh(link)
        assert link.status == LinkStatus.CREATED and link.needs_attention
        assert f"reported {reported} for payment" in link.attention_reason
        assert "expected 123450 INR" in link.attention_reason
        assert only_payment(db, link).status == PaymentStatus.PENDING


def test_on_hold_then_authorised(live, paytabs, pt_lab, build, db):
    paytabs.next_status = "H"
    link = build.link(pt_lab)
    browser, page = pay_and_return(live, link.token)
    assert "Processing your payment" in page
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    payment = only_payment(db, link)
    assert paytabs.wait_ipns(1)[0].status == 200  # the hold: nothing to change

    paytabs.resolve(payment.checkout_id, "A")  # PayTabs' review releases the hold
    assert [i.status for i in paytabs.wait_ipns(2)] == [200, 200]
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    assert [r.event_id for r in webhook_rows(db)] == [
        f"{payment.checkout_id}:sale:H", f"{payment.checkout_id}:sale:A"]


def test_unknown_status_raises_and_is_logged(app, live, paytabs, pt_lab, build, db, caplog):
    paytabs.deliver_callbacks = False
    paytabs.next_status = "Z"
    link = build.link(pt_lab)
    browser, checkout_url = press_pay(live, link.token)
    pay_on_hosted_page(browser, checkout_url)
    payment = only_payment(db, link)

    answer = paytabs.post_ipn(f"{live}/payments/webhook/paytabs",
                              paytabs.ipn_body(payment.checkout_id))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unknown_status"
    assert "unknown gateway status 'Z'" in caplog.text
    with pytest.raises(UnknownStatus):
        fetch_and_apply(db, app.config, payment.id)
    fetched = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.STATUS_FETCHED)).one()
    assert not fetched.success and "unknown gateway status 'Z'" in fetched.error
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_lost_return_and_ipn_are_reconciled_by_querying_the_cart(app, live, paytabs, pt_lab,
                                                                  build, db):
    paytabs.deliver_callbacks = False
    link = build.link(pt_lab)
    browser, checkout_url = press_pay(live, link.token)
    payment = only_payment(db, link)
    assert fetch_and_apply(db, app.config, payment.id).outcome == \
        "no change: still pending at the gateway"
    pay_on_hosted_page(browser, checkout_url)  # paid, but the browser closes
    fetch_and_apply(db, app.config, payment.id)
    assert paytabs.requests_to("POST", "/payment/query")[-1].json == {
        "profile_id": PROFILE_ID, "cart_id": payment.reference}
    db.refresh(link)
    assert link.status == LinkStatus.PAID


def test_partial_then_full_refund(app, live, paytabs, pt_lab, build, db):
    link = build.link(pt_lab, amount=150000)
    pay_and_return(live, link.token)
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED

    refund = request_refund(db, app.config, payment.id, 50000, "requested by patient")
    assert refund.status == RefundStatus.SUCCEEDED and refund.gateway_refund_id.startswith("TST")
    sent = paytabs.requests_to("POST", "/payment/request")[-1]
    assert sent.json == {"profile_id": PROFILE_ID, "tran_type": "refund", "tran_class": "ecom",
                         "tran_ref": payment.gateway_transaction_id, "cart_id": refund.reference,
                         "cart_currency": "INR", "cart_amount": 500,
                         "cart_description": "requested by patient"}
    assert b'"cart_amount":500.00' in sent.body
    with pytest.raises(RefundNotAllowed):
        request_refund(db, app.config, payment.id, 100001)
    db.refresh(payment)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED

    # PayTabs may leave a refund pending; the Dashboard's IPN settles it later.
    paytabs.ipn_urls.append(f"{live}/payments/webhook/paytabs")
    paytabs.refund_status = "P"
    rest = request_refund(db, app.config, payment.id, 100000)
    assert rest.status == RefundStatus.PENDING
    before = len(paytabs.wait_ipns(2))
    paytabs.resolve(rest.gateway_refund_id, "A")
    assert paytabs.wait_ipns(before + 1)[-1].status == 200
    db.refresh(rest)
    assert rest.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.REFUNDED, 150000)


def test_a_refund_whose_answer_was_lost_is_not_made_twice(app, live, paytabs, pt_lab, build,
                                                          db):
    link = build.link(pt_lab)
    pay_and_return(live, link.token)
    payment = only_payment(db, link)
    paytabs.fail_next(502, raw=b"<html>Bad gateway</html>", path="/payment/request",
                      after=True)
    refund = request_refund(db, app.config, payment.id, 10000)
    assert refund.status == RefundStatus.PENDING and "Will retry" in refund.failure_reason
    refund = submit_refund(db, app.config, refund.id)  # the retry job
    assert refund.status == RefundStatus.SUCCEEDED
    made = [t for t in paytabs.transactions.values() if t["tran_type"] == "Refund"]
    assert len(made) == 1 and refund.gateway_refund_id == made[0]["tran_ref"]
    db.refresh(payment)
    assert payment.amount_refunded == 10000


def test_gateway_errors_reach_the_patient_as_a_clear_message(app, live, paytabs, lab, build,
                                                              db):
    wrong = "SRWRONGKEY-0000000000-NOTTHEKEY"
    build.connect(lab, "paytabs", {**CREDENTIALS, "server_key": wrong})
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
    assert not exchange.success
    assert "PayTabs: Authentication failed. Check authentication header. (code 1)" in \
        exchange.error
    assert exchange.payload["code"] == "bad_credentials"
    assert wrong not in json.dumps(exchange.payload) + exchange.error

    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "paytabs", CREDENTIALS)
    db.commit()
    paytabs.fail_next(500, "Internal error")
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    paytabs.fail_next(502, raw=b"<html>Bad gateway</html>")
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    errors = db.scalars(select(PaymentGatewayTransaction.error).where(
        PaymentGatewayTransaction.success.is_(False))).all()
    assert "PayTabs: Internal error (code 500)" in errors
    assert "PayTabs answered with an unreadable response (HTTP 502)." in errors
    # PayTabs is back: the patient just presses Pay again
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(paytabs.url)


def test_read_timeout_is_bounded_and_retryable(paytabs):
    gateway = PayTabsGateway(CREDENTIALS, api_base=paytabs.url, timeout=(2.0, 0.3))
    paytabs.delay_next(1.5)
    with pytest.raises(GatewayError) as caught:
        gateway.fetch_status("pay_x")
    assert caught.value.code == "timeout" and caught.value.retryable


def test_admin_tests_the_connection_and_sees_paytabs_own_error(admin_client, paytabs, pt_lab):
    page = admin_client.get("/admin/gateways/paytabs").get_data(as_text=True)
    assert "/payments/webhook/paytabs" in page
    assert '<option selected value="KWT">KWT</option>' in page  # the region, from its choices
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/paytabs/test", data={"csrf_token": token},
                               follow_redirects=True)
    assert "Connected to PayTabs (Kuwait)." in answer.get_data(as_text=True)
    assert paytabs.requests_to("POST", "/payment/query")[0].headers["Authorization"] == \
        SERVER_KEY
    paytabs.fail_next(401, "Authentication failed. Check authentication header.", code=1)
    text = admin_client.post("/admin/gateways/paytabs/test", data={"csrf_token": token},
                             follow_redirects=True).get_data(as_text=True)
    assert "Connection failed. PayTabs: Authentication failed. Check authentication header." \
        in text
    assert SERVER_KEY not in text


def test_saved_card_consent_charge_decline_and_delete(app, live, paytabs, pt_lab, build, db):
    link = build.link(pt_lab, amount=50000)
    assert link.customer_id is not None
    browser, checkout_url = press_pay(live, link.token, save_method="yes")
    sent = paytabs.requests_to("POST", "/payment/request")[0].json
    assert (sent["tokenise"], sent["show_save_card"]) == (2, False)
    post_back(browser, pay_on_hosted_page(browser, checkout_url, card="4111 1111 1111 4242"))
    wait_idle(app)  # the worker reads the token from the sale
    sale = only_payment(db, link)
    profile = db.scalars(select(CustomerPaymentProfile)).one()
    assert profile.token in paytabs.tokens and len(profile.token) == 32
    assert profile.gateway_customer_id == sale.gateway_transaction_id
    assert (profile.brand, profile.last4, profile.exp_month, profile.exp_year) == (
        "visa", "4242", 12, 2030)
    assert profile.customer_id == link.customer_id

    # Staff charge the saved card for the patient's next bill.
    second = build.link(pt_lab, amount=70000)
    assert second.customer_id == link.customer_id
    build.user(pt_lab, "frontdesk@acme.test", role=Role.STAFF)
    staff = app.test_client()
    sign_in(staff, "frontdesk@acme.test")
    page = staff.get(f"/links/{second.id}").get_data(as_text=True)
    assert "Visa ending 4242" in page
    answer = staff.post(f"/links/{second.id}/saved-methods/{profile.id}/charge",
                        data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "The saved card was charged." in answer.get_data(as_text=True)
    charged = only_payment(db, second)
    recurring = paytabs.requests_to("POST", "/payment/request")[-1].json
    assert recurring == {"profile_id": PROFILE_ID, "tran_type": "sale",
                         "tran_class": "recurring", "cart_id": charged.reference,
                         "cart_currency": "INR", "cart_amount": 700,
                         "cart_description": f"Acme Diagnostics: bill {second.bill_reference}",
                         "token": profile.token, "tran_ref": sale.gateway_transaction_id}
    db.refresh(second)
    assert (second.status, second.amount_paid) == (LinkStatus.PAID, 70000)
    assert charged.gateway_transaction_id != sale.gateway_transaction_id

    paytabs.declined_tokens.add(profile.token)
    third = build.link(pt_lab, amount=30000)
    page = staff.get(f"/links/{third.id}").get_data(as_text=True)
    answer = staff.post(f"/links/{third.id}/saved-methods/{profile.id}/charge",
                        data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "The saved card was declined: Declined" in answer.get_data(as_text=True)
    db.refresh(third)
    assert third.status == LinkStatus.CREATED

    answer = staff.post(f"/links/{third.id}/saved-methods/{profile.id}/delete",
                        data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "removed here and at the gateway" in answer.get_data(as_text=True)
    db.refresh(profile)
    assert profile.deleted_at is not None and profile.token not in paytabs.tokens


def test_paytabs_secrets_stay_secret(app, build, lab, db, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    wrong = "SRWRONGKEY-BUTSECRET-000000002"
    with FakePayTabs(profiles={PROFILE_ID: SERVER_KEY}) as fake:
        app.config["PORTAL_PAYTABS_API_BASE"] = fake.url
        keys = app.config["PORTAL_ENCRYPTION_KEYS"]
        save_credentials(db, keys, lab, "paytabs", {**CREDENTIALS, "server_key": wrong})
        db.commit()
        pages = []
        with serving(app) as live:
            fake.ipn_urls.append(f"{live}/payments/webhook/paytabs")
            failed = build.link(lab)
            browser = requests.Session()
            page = browser.get(f"{live}/pay/{failed.token}").text
            pages.append(browser.post(f"{live}/pay/{failed.token}",
                                      data={"csrf_token": csrf_from(page)}).text)
            save_credentials(db, keys, lab, "paytabs", CREDENTIALS)
            db.commit()
            link = build.link(lab)
            browser, page = pay_and_return(live, link.token, save_method="yes")
            pages.append(page)
            payment = only_payment(db, link)
            request_refund(db, app.config, payment.id, 1000, "Overcharged")
            fake.wait_ipns(3)  # the sale to its callback and the Dashboard URL, the refund
            wait_idle(app)
        pages += admin_pages(app, build, lab, "paytabs", link)
    assert payment.reference in dump_rows(db)
    assert "Connected to PayTabs" in pages[-3]
    assert_nowhere([SERVER_KEY, wrong], caplog, capsys, pages, db)


def test_refund_exchange_names_the_sale_and_status_reads_the_cart(app, live, paytabs, pt_lab,
                                                                  build, db):
    link = build.link(pt_lab)
    pay_and_return(live, link.token)
    payment = only_payment(db, link)
    request_refund(db, app.config, payment.id, 23450)
    refund = db.scalars(select(Refund)).one()
    exchange = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.REFUND_REQUESTED)).one()
    assert exchange.payload["previous_tran_ref"] == payment.gateway_transaction_id
    assert exchange.payload["cart_id"] == refund.reference
    assert refund.status == RefundStatus.SUCCEEDED
    gateway = PayTabsGateway(CREDENTIALS, api_base=paytabs.url)
    assert gateway.fetch_status(payment.reference).status == EventStatus.SUCCEEDED
