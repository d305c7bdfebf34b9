"""A patient pays a link through a real gateway's hosted page (our local fakes), in Chromium.

Stripe: the portal makes a Checkout Session at FakeStripe (localstripe behind it for the
Customer/PaymentMethod/PaymentIntent), the patient pays on the hosted page /c/pay/<id>, comes
back to the return page, and the signed `checkout.session.completed` webhook (or the worker
retrieving the session) settles the payment while the return page polls status.json.

Razorpay: the portal makes a Payment Link at FakeRazorpay, the patient pays on /pl/<id>, and
the signed callback to the return page is verified at once.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import (
    ExchangeKind,
    LinkStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
)
from tests.fakes.localstripe import start_localstripe
from tests.fakes.razorpay_fake import FakeRazorpay
from tests.fakes.stripe_fake import FakeStripe

WEBHOOK_WAIT = 15_000  # ms: webhook (or the worker's status fetch) + the return page's polling
PAY_BUTTON = re.compile(r"^Pay\b")

STRIPE_CREDENTIALS = {"secret_key": "sk_test_PortalBrowser4eC39HqLyjWD",
                      "publishable_key": "pk_test_PortalBrowserTYooMQauvdEDq",
                      "webhook_secret": "whsec_portal_browser_5d1e8c"}
RAZORPAY_CREDENTIALS = {"key_id": "rzp_test_BrowserKey0001",
                        "key_secret": "rzp-browser-secret-7c2d91",
                        "webhook_secret": "rzp-browser-webhook-4a0f3e"}


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def record_requests(page) -> list[str]:
    """Every URL the page requests from now on, in order."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    return seen


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def open_link_and_press_pay(page, live_server, link, gateway_url: str) -> None:
    """The patient opens the link and presses Pay; nothing leaves the portal before that."""
    requests_made = record_requests(page)
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_text("Acme Diagnostics", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_contain_text("₹1,234.50")
    pay = page.get_by_role("button", name="Pay ₹1,234.50")
    expect(pay).to_be_enabled()
    before_pay = list(requests_made)
    assert before_pay, "the pay page made no requests at all"
    elsewhere = [url for url in before_pay if origin(url) != live_server.url]
    assert not elsewhere, f"requests to third parties before Pay was pressed: {elsewhere}"

    pay.click()
    expect(page).to_have_url(re.compile("^" + re.escape(gateway_url) + "/"))


def assert_paid_for_the_patient(page, live_server, link) -> None:
    """Coming back to the link later: it is paid, with a receipt, and cannot be paid again."""
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("heading", name="Paid", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(
        f"Acme Diagnostics has received ₹1,234.50 for bill {link.bill_reference}")
    receipt = page.get_by_role("region", name="Receipt")
    expect(receipt).to_contain_text(link.bill_reference)
    expect(receipt).to_contain_text("₹1,234.50")
    expect(page.get_by_role("button", name=PAY_BUTTON)).to_have_count(0)


@pytest.fixture(scope="module")
def localstripe_url():
    with start_localstripe() as url:
        yield url


@pytest.fixture
def stripe(app, live_server, localstripe_url):
    with FakeStripe(api_keys={STRIPE_CREDENTIALS["secret_key"]},
                    upstream=localstripe_url) as fake:
        app.config["PORTAL_STRIPE_API_BASE"] = fake.url
        fake.add_webhook(live_server("/payments/webhook/stripe"),
                         STRIPE_CREDENTIALS["webhook_secret"])
        yield fake


@pytest.fixture
def razorpay(app, live_server):
    keys = {RAZORPAY_CREDENTIALS["key_id"]: RAZORPAY_CREDENTIALS["key_secret"]}
    with FakeRazorpay(keys=keys, webhook_secret=RAZORPAY_CREDENTIALS["webhook_secret"]) as fake:
        app.config["PORTAL_RAZORPAY_API_BASE"] = fake.url
        fake.add_webhook(live_server("/payments/webhook/razorpay"))
        yield fake


def test_patient_pays_on_stripe_checkout(page, app, db, live_server, stripe, build, lab):
    build.connect(lab, "stripe", STRIPE_CREDENTIALS)
    link = build.link(lab, amount=123450)
    assert link.gateway == "stripe"

    open_link_and_press_pay(page, live_server, link, stripe.url)

    # Stripe's hosted Checkout page (FakeStripe), for the session the portal made.
    payment = only_payment(db, link)
    assert page.url == f"{stripe.url}/c/pay/{payment.checkout_id}"
    expect(page.get_by_role("heading", level=1)).to_have_text("Pay 1234.50 INR")
    expect(page.locator("#reference")).to_have_text(payment.reference)
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_role("button", name="Pay", exact=True).click()

    # Back on the portal: the return page polls until the webhook has settled the payment.
    expect(page).to_have_url(re.compile(
        re.escape(live_server(f"/pay/{link.token}/return?ref={payment.reference}"))
        + r"&session_id=cs_test_"))
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=WEBHOOK_WAIT)
    expect(page.get_by_role("status")).to_contain_text(
        f"Acme Diagnostics has received your payment for bill {link.bill_reference}")
    expect(page.get_by_role("link", name="View your receipt")).to_be_visible()

    db.refresh(link)
    assert link.status == LinkStatus.PAID
    assert link.amount_paid == 123450
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway == "stripe"
    assert payment.gateway_transaction_id.startswith("pi_")
    # The signed checkout.session.completed reached the live server and was accepted.
    events = stripe.wait_for_events(1)
    assert [(url, status) for url, _, status in events] == [
        (live_server("/payments/webhook/stripe"), 200)]

    assert_paid_for_the_patient(page, live_server, link)


def test_patient_pays_on_razorpay_payment_link(page, app, db, live_server, razorpay, build,
                                               lab):
    build.connect(lab, "razorpay", RAZORPAY_CREDENTIALS)
    link = build.link(lab, amount=123450)
    assert link.gateway == "razorpay"

    open_link_and_press_pay(page, live_server, link, razorpay.url)

    # Razorpay's hosted payment-link page (FakeRazorpay).
    payment = only_payment(db, link)
    assert page.url == f"{razorpay.url}/pl/{payment.checkout_id}"
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Acme Diagnostics: bill {link.bill_reference}")
    expect(page.locator("#amount")).to_have_text("INR 1234.50")
    expect(page.locator("#reference")).to_have_text(payment.reference)
    page.get_by_role("button", name="Pay", exact=True).click()

    # Back on the portal with a signed callback: verified at once, no webhook needed.
    expect(page).to_have_url(re.compile(
        re.escape(live_server(f"/pay/{link.token}/return?ref={payment.reference}"))
        + r"&razorpay_payment_id=pay_.*&razorpay_signature=[0-9a-f]{64}$"))
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=WEBHOOK_WAIT)
    expect(page.get_by_role("status")).to_contain_text(
        f"Acme Diagnostics has received your payment for bill {link.bill_reference}")
    expect(page.get_by_role("link", name="View your receipt")).to_be_visible()

    db.refresh(link)
    assert link.status == LinkStatus.PAID
    assert link.amount_paid == 123450
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway == "razorpay"
    assert payment.gateway_transaction_id.startswith("pay_")
    kinds = db.scalars(select(PaymentGatewayTransaction.kind).where(
        PaymentGatewayTransaction.payment_id == payment.id)).all()
    assert ExchangeKind.RETURN_VERIFIED in kinds

    assert_paid_for_the_patient(page, live_server, link)
