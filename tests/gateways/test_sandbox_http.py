"""The sandbox gateway over real HTTP: hosted page, signed webhook, status and refund APIs."""

import re

import pytest
import requests
from sqlalchemy import select

from gateways.base import EventStatus, GatewayError, RefundRequest
from gateways.sandbox import SandboxGateway
from portal.models import ExchangeKind, LinkStatus, Payment, PaymentGatewayTransaction
from portal.worker.runner import wait_idle
from tests.conftest import serving

SECRET = "whsec_test_sandbox"


@pytest.fixture
def live(app):
    with serving(app) as url:
        yield url


def press_pay(base: str, token: str) -> tuple[requests.Session, str]:
    """A patient presses Pay: returns their browser session and the sandbox checkout URL."""
    browser = requests.Session()
    page = browser.get(f"{base}/pay/{token}").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = browser.post(f"{base}/pay/{token}", data={"csrf_token": csrf},
                            allow_redirects=False)
    assert response.status_code == 303
    return browser, response.headers["Location"]


def choose(browser: requests.Session, checkout_url: str, outcome: str) -> requests.Response:
    page = browser.get(checkout_url)
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return browser.post(checkout_url, data={"csrf_token": csrf, "outcome": outcome},
                        allow_redirects=False)


def test_pay_on_the_hosted_page_and_the_worker_delivers_the_signed_webhook(app, live, build,
                                                                          lab, db):
    link = build.link(lab)
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{live}/sandbox/checkout/pay_")
    answer = choose(browser, checkout_url, "pay")
    assert answer.status_code == 303 and "/return?ref=pay_" in answer.headers["Location"]
    wait_idle(app)  # the worker POSTs the webhook to /payments/webhook/sandbox over HTTP
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    exchange = db.scalar(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED))
    assert exchange.signature_valid and exchange.event_type == "payment.succeeded"


def test_tampered_checkout_url_is_refused(live, build, lab):
    link = build.link(lab)
    browser, checkout_url = press_pay(live, link.token)
    assert browser.get(checkout_url.replace("amount=123450", "amount=1")).status_code == 400


def test_fetch_status_and_refund_through_the_api(app, live, build, lab, db):
    link = build.link(lab)
    browser, checkout_url = press_pay(live, link.token)
    reference = db.scalar(select(Payment.reference))
    gateway = SandboxGateway({"webhook_secret": SECRET}, api_base=f"{live}/sandbox")
    assert gateway.fetch_status(reference).status == EventStatus.PENDING
    choose(browser, checkout_url, "pay")
    event = gateway.fetch_status(reference)
    assert (event.status, event.amount, event.currency) == (EventStatus.SUCCEEDED, 123450, "INR")

    refund = gateway.refund(RefundRequest(reference=reference, transaction_id=None,
                                          amount=20000, currency="INR", reason="test",
                                          idempotency_key="refund-1"))
    assert refund.status == EventStatus.REFUND_SUCCEEDED and refund.amount == 20000
    again = gateway.refund(RefundRequest(reference=reference, transaction_id=None,
                                         amount=20000, currency="INR", reason="test",
                                         idempotency_key="refund-1"))
    assert again.refund_id == refund.refund_id  # a retry never refunds twice
    with pytest.raises(GatewayError, match="more than what remains refundable"):
        gateway.refund(RefundRequest(reference=reference, transaction_id=None, amount=200000,
                                     currency="INR", reason="", idempotency_key="refund-2"))


def test_api_refuses_a_wrong_secret(live, build, lab, db):
    link = build.link(lab)
    press_pay(live, link.token)
    reference = db.scalar(select(Payment.reference))
    gateway = SandboxGateway({"webhook_secret": "whsec_wrong"}, api_base=f"{live}/sandbox")
    with pytest.raises(GatewayError) as error:
        gateway.fetch_status(reference)
    assert error.value.http_status == 401


def test_unreachable_gateway_is_a_clear_error():
    gateway = SandboxGateway({"webhook_secret": SECRET}, api_base="http://127.0.0.1:9",
                             timeout=(1, 1))
    with pytest.raises(GatewayError) as error:
        gateway.fetch_status("pay_x")
    assert error.value.code == "unreachable" and error.value.retryable


def test_lost_webhook_is_recovered_by_the_status_check(app, live, build, lab, db):
    """The webhook never arrives; the return page's status check still closes the link."""
    from portal.models import Job, OutboxStatus

    link = build.link(lab)
    browser, checkout_url = press_pay(live, link.token)
    answer = choose(browser, checkout_url, "pay")
    for job in db.scalars(select(Job).where(Job.kind == "sandbox.deliver_webhook")):
        job.status = OutboxStatus.DEAD  # the webhook is lost
    db.commit()
    page = browser.get(answer.headers["Location"]).text
    assert "Processing your payment" in page
    fetch = db.scalar(select(Job).where(Job.kind == "payment.fetch_status"))
    from portal.models import utcnow
    fetch.run_at = utcnow()
    db.commit()
    wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    exchange = db.scalar(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.STATUS_FETCHED))
    assert exchange.outcome == "payment succeeded; link paid"
    assert "Payment received" in browser.get(answer.headers["Location"]).text
