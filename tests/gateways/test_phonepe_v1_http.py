"""PhonePe PG v1 over real HTTP: the portal against a fake speaking PhonePe's v1 wire format."""

import base64
import json
import logging
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from gateways.base import GatewayError
from gateways.phonepe_v1 import PhonePeV1Gateway
from gateways.phonepe_v1.wire import checksum
from portal.models import (
    ExchangeKind,
    Job,
    LinkStatus,
    OutboxStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    Refund,
    RefundStatus,
    utcnow,
)
from portal.services.keys import save_credentials
from portal.services.refunds import RefundNotAllowed, request_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, gateway_lab, serving
from tests.fakes.phonepe_v1_fake import FakePhonePeV1, callback_body, x_verify
from tests.gateways.test_gateway_secrets import admin_pages, assert_nowhere
from tests.gateways.test_sandbox_http import press_pay

MERCHANT_ID = "LABPORTALUAT"
SALT_KEY = "5a1t-k3y-0f-th3-lab-4c1d9e"
OTHER_SALT = "an0ther-5a1t-0f-the-merchant"  # index 2 at PhonePe, not configured for the lab
CREDENTIALS = {"merchant_id": MERCHANT_ID, "salt_key": SALT_KEY, "salt_index": "1"}
WEBHOOK = "/payments/webhook/phonepe_v1"


@pytest.fixture
def phonepe(app):
    with FakePhonePeV1(MERCHANT_ID, salts={"1": SALT_KEY, "2": OTHER_SALT}) as fake:
        app.config["PORTAL_PHONEPE_V1_API_BASE"] = fake.url
        yield fake


@pytest.fixture
def live(app, phonepe):
    with serving(app) as url:
        yield url


pp_lab = gateway_lab("phonepe_v1", CREDENTIALS)


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def pay(browser: requests.Session, checkout_url: str, outcome: str = "pay") -> requests.Response:
    assert browser.get(checkout_url).status_code == 200
    return browser.post(checkout_url, data={"outcome": outcome, "instrument": "UPI"},
                        allow_redirects=False)


def exchanges(db, kind) -> list[PaymentGatewayTransaction]:
    return db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == kind).order_by(PaymentGatewayTransaction.id)).all()


def run_due_jobs(app, db, kind: str) -> None:
    """Jobs of `kind` fall due now (the return books its status check a few seconds out)."""
    for job in db.scalars(select(Job).where(Job.kind == kind,
                                            Job.status == OutboxStatus.QUEUED)).all():
        job.run_at = utcnow() - timedelta(seconds=1)
    db.commit()
    wait_idle(app)


def post_callback(live: str, body: bytes, headers: dict) -> requests.Response:
    return requests.post(f"{live}{WEBHOOK}", data=body, headers=headers, timeout=10)


def status_calls(phonepe, reference: str) -> int:
    return len(phonepe.requests_to("GET", f"/pg/v1/status/{MERCHANT_ID}/{reference}"))


def test_patient_pays_and_the_confirmed_callback_closes_the_link(app, live, phonepe, pp_lab,
                                                                  build, db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{phonepe.url}/transact/pg?token=")
    payment = only_payment(db, link)
    [sent] = phonepe.requests_to("POST", "/pg/v1/pay")
    encoded = sent.json["request"]
    assert sent.headers["X-Verify"] == checksum(encoded + "/pg/v1/pay", SALT_KEY, "1")
    assert json.loads(base64.b64decode(encoded)) == {
        "merchantId": MERCHANT_ID, "merchantTransactionId": payment.reference,
        "merchantUserId": payment.reference, "amount": 150000,
        "redirectUrl": f"{live}/pay/{link.token}/return?ref={payment.reference}",
        "redirectMode": "REDIRECT", "callbackUrl": f"{live}{WEBHOOK}",
        "mobileNumber": "9876543210", "paymentInstrument": {"type": "PAY_PAGE"}}

    back = pay(browser, checkout_url)
    assert back.status_code == 302
    assert back.headers["Location"] == f"{live}/pay/{link.token}/return?ref={payment.reference}"
    assert browser.get(back.headers["Location"]).status_code == 200
    [callback] = phonepe.wait_callbacks(1)
    assert callback.status == 200 and callback.decoded["code"] == "PAYMENT_SUCCESS"
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 150000
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED and payment.method == "upi"
    assert payment.gateway_transaction_id == phonepe.transactions[payment.reference][
        "transactionId"]
    [received] = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)
    assert received.signature_valid and received.event_type == "callback.PAYMENT_SUCCESS"
    assert received.event_id == f"{payment.reference}:PAYMENT_SUCCESS"
    # what PhonePe's status API said is recorded beside the callback it confirmed
    assert received.payload["callback"]["code"] == "PAYMENT_SUCCESS"
    assert received.payload["data"]["amount"] == 150000
    assert status_calls(phonepe, payment.reference) >= 1

    # PhonePe sends the callback again: a duplicate, counted once
    answer = post_callback(live, callback.body, callback.headers)
    assert answer.status_code == 200 and answer.json()["duplicate"] is True
    run_due_jobs(app, db, "payment.fetch_status")  # the return's check: already final
    db.refresh(link)
    assert link.amount_paid == 150000


def test_without_a_callback_the_return_confirms_through_the_status_api(app, live, phonepe,
                                                                        pp_lab, build, db):
    phonepe.send_callbacks = False
    link = build.link(pp_lab)
    browser, checkout_url = press_pay(live, link.token)
    back = pay(browser, checkout_url)
    page = browser.get(back.headers["Location"])
    assert "Processing your payment" in page.text  # the browser's word changes nothing
    db.refresh(link)
    assert link.status == LinkStatus.CREATED

    run_due_jobs(app, db, "payment.fetch_status")
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    [poll] = exchanges(db, ExchangeKind.STATUS_FETCHED)
    assert (poll.outcome, poll.signature_valid) == ("payment succeeded; link paid", None)
    assert "Payment received" in browser.get(back.headers["Location"]).text


def test_a_forged_return_is_checked_with_phonepe_and_changes_nothing(app, live, phonepe,
                                                                      pp_lab, build, db):
    link = build.link(pp_lab)
    browser, _ = press_pay(live, link.token)  # the patient never pays
    payment = only_payment(db, link)
    forged = {"ref": payment.reference, "code": "PAYMENT_SUCCESS", "merchantId": MERCHANT_ID,
              "transactionId": payment.reference, "amount": str(payment.amount)}
    page = browser.get(f"{live}/pay/{link.token}/return", params=forged)
    assert "Processing your payment" in page.text
    run_due_jobs(app, db, "payment.fetch_status")
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING
    [poll] = exchanges(db, ExchangeKind.STATUS_FETCHED)
    assert poll.outcome == "no change: still pending at the gateway"


def test_forged_and_tampered_callbacks_are_refused_and_change_nothing(live, phonepe, pp_lab,
                                                                      build, db):
    phonepe.send_callbacks = False
    link = build.link(pp_lab)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    reference = only_payment(db, link).reference
    genuine, headers = phonepe.callback(reference)
    response = json.loads(genuine)["response"]
    tampered = json.dumps({"response": base64.b64encode(base64.b64decode(response).replace(
        b'"amount": 123450', b'"amount": 100')).decode()}).encode()
    assert tampered != genuine
    before = status_calls(phonepe, reference)
    for body, sent_headers in (
            phonepe.callback(reference, salt_key="not-the-salt"),
            phonepe.callback(reference, salt_index="2"),  # PhonePe's, but not the lab's index
            (tampered, headers),
            (genuine, {"Content-Type": "application/json"}),
            (genuine, {**headers, "X-VERIFY": headers["X-VERIFY"].split("###")[0]})):
        answer = post_callback(live, body, sent_headers)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_signature"
    answer = post_callback(live, b"response=not-json", headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "malformed_payload")
    assert status_calls(phonepe, reference) == before  # refused before asking PhonePe anything
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert exchanges(db, ExchangeKind.WEBHOOK_RECEIVED) == []

    assert post_callback(live, genuine, headers).status_code == 200
    db.refresh(link)
    assert link.status == LinkStatus.PAID


def test_a_genuine_callback_still_waits_for_the_status_api(live, phonepe, pp_lab, build, db):
    link = build.link(pp_lab)
    press_pay(live, link.token)  # pending at PhonePe
    reference = only_payment(db, link).reference
    claim = {**phonepe.status_body(reference), "success": True, "code": "PAYMENT_SUCCESS"}
    body, response = callback_body(claim)  # signed with the real salt, yet not true
    answer = post_callback(live, body, {"Content-Type": "application/json",
                                        "X-VERIFY": x_verify(response, SALT_KEY, "1")})
    assert answer.status_code == 200
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    [received] = exchanges(db, ExchangeKind.WEBHOOK_RECEIVED)
    assert received.outcome == "no change: still pending at the gateway"
    assert received.payload["callback"]["code"] == "PAYMENT_SUCCESS"
    assert received.payload["code"] == "PAYMENT_PENDING"


def test_amount_mismatch_reported_by_phonepe_is_not_marked_paid(live, phonepe, pp_lab, build,
                                                                 db):
    phonepe.send_callbacks = False
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    reference = only_payment(db, link).reference
    phonepe.report(reference, amount=100)
    assert post_callback(live, *phonepe.callback(reference)).status_code == 200
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and link.needs_attention
    assert "expected 150000 INR" in link.attention_reason
    assert only_payment(db, link).status == PaymentStatus.PENDING


def test_declined_payment_fails_with_phonepes_reason(live, phonepe, pp_lab, build, db):
    link = build.link(pp_lab)
    browser, checkout_url = press_pay(live, link.token)
    back = pay(browser, checkout_url, "decline")
    assert phonepe.wait_callbacks(1)[0].status == 200
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_reason == "Payment Failed (REQUEST_DECLINE_BY_REQUESTEE)"
    assert "did not go through" in browser.get(back.headers["Location"]).text
    db.refresh(link)
    assert link.status == LinkStatus.CREATED  # the patient may try again


def test_unknown_status_or_an_unreachable_status_api_is_refused_and_logged(
        app, live, phonepe, pp_lab, build, db, caplog):
    phonepe.send_callbacks = False
    link = build.link(pp_lab)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    reference = only_payment(db, link).reference
    callback = phonepe.callback(reference)

    phonepe.fail_next(500, path="/pg/v1/status")  # cannot confirm: PhonePe will retry
    answer = post_callback(live, *callback)
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "gateway_error")

    phonepe.report(reference, code="PAYMENT_ON_HOLD")
    answer = post_callback(live, *phonepe.callback(reference))
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "unknown_status")
    assert "unknown gateway status 'PAYMENT_ON_HOLD'" in caplog.text
    browser.get(f"{live}/pay/{link.token}/return", params={"ref": reference})
    run_due_jobs(app, db, "payment.fetch_status")  # the return's check meets it too
    [poll] = exchanges(db, ExchangeKind.STATUS_FETCHED)
    assert not poll.success and poll.error == "unknown gateway status 'PAYMENT_ON_HOLD'"
    job = db.scalars(select(Job).where(Job.kind == "payment.fetch_status")).one()
    assert "UnknownStatus" in job.last_error
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert only_payment(db, link).status == PaymentStatus.PENDING
    assert exchanges(db, ExchangeKind.WEBHOOK_RECEIVED) == []

    phonepe.report(reference)  # PhonePe tells the truth again; its retry goes through
    assert post_callback(live, *callback).status_code == 200
    db.refresh(link)
    assert link.status == LinkStatus.PAID


def test_partial_then_full_refund_settled_by_callbacks(app, live, phonepe, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    phonepe.wait_callbacks(1)
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED

    refund = request_refund(db, app.config, payment.id, 50000, "Test not done")
    assert refund.status == RefundStatus.PENDING
    assert refund.gateway_refund_id.startswith(f"{payment.reference}-")
    [sent] = phonepe.requests_to("POST", "/pg/v1/refund")
    encoded = sent.json["request"]
    assert sent.headers["X-Verify"] == checksum(encoded + "/pg/v1/refund", SALT_KEY, "1")
    assert json.loads(base64.b64decode(encoded)) == {
        "merchantId": MERCHANT_ID, "originalTransactionId": payment.reference,
        "merchantTransactionId": refund.gateway_refund_id, "amount": 50000,
        "callbackUrl": f"{live}{WEBHOOK}"}
    with pytest.raises(RefundNotAllowed):  # 50,000 is in flight: at most 100,000 remains
        request_refund(db, app.config, payment.id, 100001)

    phonepe.process_refund(refund.gateway_refund_id)
    assert phonepe.wait_callbacks(2)[1].status == 200
    db.refresh(refund)
    assert refund.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 50000)

    phonepe.refunds_settle_immediately = True
    rest = request_refund(db, app.config, payment.id, 100000)
    assert rest.status == RefundStatus.SUCCEEDED  # PhonePe's answer said PAYMENT_SUCCESS
    assert phonepe.wait_callbacks(3)[2].status == 200  # its callback then changes nothing
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.REFUNDED, 150000)


def test_a_refund_phonepe_turns_down_fails_and_a_lost_answer_is_not_refunded_twice(
        app, live, phonepe, pp_lab, build, db):
    link = build.link(pp_lab, amount=150000)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    phonepe.wait_callbacks(1)
    payment = only_payment(db, link)

    refund = request_refund(db, app.config, payment.id, 40000)
    phonepe.process_refund(refund.gateway_refund_id, ok=False)
    phonepe.wait_callbacks(2)
    db.refresh(refund)
    assert refund.status == RefundStatus.FAILED
    assert refund.failure_reason == "Payment Failed (REQUEST_DECLINE_BY_REQUESTEE)"

    phonepe.fail_next(500, path="/pg/v1/refund", after=True)  # done at PhonePe, answer lost
    lost = request_refund(db, app.config, payment.id, 60000)
    assert lost.status == RefundStatus.PENDING and lost.gateway_refund_id is None
    assert lost.failure_reason.startswith("Will retry")
    run_due_jobs(app, db, "refund.submit")
    db.refresh(lost)
    assert lost.gateway_refund_id.startswith(payment.reference + "-")
    assert len(phonepe.requests_to("POST", "/pg/v1/refund")) == 2  # the failed one, then once
    assert [r["amount"] for r in phonepe.transactions.values() if r["kind"] == "refund"] == [
        40000, 60000]
    assert db.scalars(select(Refund.status).where(Refund.payment_id == payment.id)).all() == [
        RefundStatus.FAILED, RefundStatus.PENDING]


def test_bad_keys_and_outages_reach_the_patient_as_a_clear_message(app, live, phonepe, lab,
                                                                    build, db):
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    wrong = "a-wrong-but-secret-salt-value"
    build.connect(lab, "phonepe_v1", {**CREDENTIALS, "salt_key": wrong})
    link = build.link(lab)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503
    assert "We could not reach the payment service" in answer.text
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.FAILED
    [exchange] = exchanges(db, ExchangeKind.CHECKOUT_CREATED)
    assert not exchange.success
    assert exchange.error == "PhonePe: X-VERIFY header is incorrect (AUTHORIZATION_FAILED)"
    assert exchange.payload["code"] == "bad_credentials"
    assert wrong not in json.dumps(exchange.payload) + exchange.error

    save_credentials(db, keys, lab, "phonepe_v1", {**CREDENTIALS, "salt_index": "3"})
    db.commit()
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    assert exchanges(db, ExchangeKind.CHECKOUT_CREATED)[-1].error == (
        "PhonePe: Key not found for the merchant (KEY_NOT_CONFIGURED)")

    save_credentials(db, keys, lab, "phonepe_v1", CREDENTIALS)
    db.commit()
    phonepe.fail_next(500)
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    phonepe.fail_next(502, raw=b"<html>Bad gateway</html>")
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    assert exchanges(db, ExchangeKind.CHECKOUT_CREATED)[-1].error == (
        "PhonePe answered with an unreadable page (HTTP 502).")
    # PhonePe is back: the patient just presses Pay again
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(phonepe.url)


def test_read_timeout_is_bounded_and_retryable(phonepe):
    gateway = PhonePeV1Gateway(CREDENTIALS, api_base=phonepe.url, timeout=(2.0, 0.3))
    phonepe.delay_next(1.5)
    with pytest.raises(GatewayError) as caught:
        gateway.test_connection()
    assert caught.value.code == "timeout" and caught.value.retryable


def test_admin_tests_the_connection_and_sees_phonepes_own_error(admin_client, phonepe, pp_lab):
    page = admin_client.get("/admin/gateways/phonepe_v1").get_data(as_text=True)
    assert WEBHOOK in page and "Salt index" in page
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/phonepe_v1/test", data={"csrf_token": token},
                               follow_redirects=True)
    assert f"Connected to PhonePe as merchant {MERCHANT_ID}." in answer.get_data(as_text=True)
    [probe] = phonepe.requests_to("GET", "/pg/v1/status/")
    assert probe.headers["X-Merchant-Id"] == MERCHANT_ID
    assert probe.headers["X-Verify"] == checksum(probe.path, SALT_KEY, "1")
    phonepe.fail_next(401, "AUTHORIZATION_FAILED", "X-VERIFY header is incorrect")
    answer = admin_client.post("/admin/gateways/phonepe_v1/test", data={"csrf_token": token},
                               follow_redirects=True)
    text = answer.get_data(as_text=True)
    assert "Connection failed. PhonePe: X-VERIFY header is incorrect" in text
    assert SALT_KEY not in text


def test_phonepe_v1_secrets_stay_secret(app, build, lab, db, phonepe, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    keys = app.config["PORTAL_ENCRYPTION_KEYS"]
    wrong = "pp-wrong-but-secret-salt-0003"
    phonepe.refunds_settle_immediately = True
    save_credentials(db, keys, lab, "phonepe_v1", {**CREDENTIALS, "salt_key": wrong})
    db.commit()
    pages = []
    with serving(app) as live:
        failed = build.link(lab)
        browser = requests.Session()
        page = browser.get(f"{live}/pay/{failed.token}").text
        pages.append(browser.post(f"{live}/pay/{failed.token}",
                                  data={"csrf_token": csrf_from(page)}).text)
        save_credentials(db, keys, lab, "phonepe_v1", CREDENTIALS)
        db.commit()
        link = build.link(lab)
        browser, checkout_url = press_pay(live, link.token)
        back = pay(browser, checkout_url)
        phonepe.wait_callbacks(1)
        pages.append(browser.get(back.headers["Location"]).text)
        request_refund(db, app.config, only_payment(db, link).id, 1000, "Overcharged")
        phonepe.wait_callbacks(2)
        forged = phonepe.callback(only_payment(db, link).reference, salt_key=wrong)
        assert post_callback(live, *forged).status_code == 400
        wait_idle(app)
    pages += admin_pages(app, build, lab, "phonepe_v1", link)
    assert only_payment(db, link).status == PaymentStatus.PARTIALLY_REFUNDED
    assert "Connected to PhonePe" in pages[-3]
    assert_nowhere([SALT_KEY, wrong], caplog, capsys, pages, db)
