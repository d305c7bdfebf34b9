"""A patient pays a link through PesoPay's hosted form (our local fake), in Chromium.

PesoPay has no redirect URL: the pay page answers Pay with a form that the browser posts to
`payForm.jsp` itself (autosubmit.js), or that the patient sends with the visible button when
JavaScript is off. The patient pays on the fake's page, AsiaPay's signed datafeed reaches the
live server, and the return page (which proves nothing by itself) shows the bill paid.
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
from tests.fakes.pesopay_fake import PAY_FORM, TEST_VISA, FakePesoPay
from tests.web.helpers import static_name

DATAFEED_WAIT = 15_000  # ms: the datafeed, then the return page's polling (or its refresh)
CREDENTIALS = {"merchant_id": "18065555", "secure_hash_secret": "pp-browser-secret-2c41d9",
               "hash_function": "SHA-1", "api_login_id": "portal-browser",
               "api_password": "pp-browser-api-88f0c2"}


@pytest.fixture
def pesopay(app, live_server):
    with FakePesoPay(CREDENTIALS["merchant_id"], CREDENTIALS["secure_hash_secret"], "SHA-1",
                     {CREDENTIALS["api_login_id"]: CREDENTIALS["api_password"]}) as fake:
        app.config["PORTAL_PESOPAY_API_BASE"] = fake.api_base
        fake.datafeed_url = live_server("/payments/webhook/pesopay")
        yield fake


@pytest.fixture
def manila(build):
    return build.lab("manila", name="Manila Diagnostics", currency="PHP", gateway="pesopay",
                     credentials=CREDENTIALS)


def only_payment(db, link) -> Payment:
    return db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()


def open_link_and_press_pay(page, live_server, link) -> list[str]:
    """The patient opens the link and presses Pay; returns every URL requested from then on."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_text("Manila Diagnostics", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_contain_text("₱1,234.50")
    elsewhere = [url for url in seen if not url.startswith(live_server.url)]
    assert not elsewhere, f"requests to third parties before Pay was pressed: {elsewhere}"
    page.get_by_role("button", name="Pay ₱1,234.50").click()
    return seen


def pay_on_pesopays_page(page, pesopay, payment) -> None:
    expect(page).to_have_url(pesopay.url + PAY_FORM)
    expect(page.get_by_role("heading", level=1)).to_have_text("PesoPay")
    expect(page.locator("#amount")).to_have_text("PHP 1234.50")
    expect(page.locator("#reference")).to_have_text(payment.reference)
    page.get_by_label("Card number").fill(TEST_VISA)
    page.get_by_role("button", name="Pay", exact=True).click()


def assert_paid(page, live_server, pesopay, db, link) -> None:
    """Back on the portal: the signed datafeed closed the link; coming back shows it paid."""
    payment = only_payment(db, link)
    expect(page).to_have_url(re.compile(re.escape(
        live_server(f"/pay/{link.token}/return?ref={payment.reference}&Ref={payment.reference}"))
        + "$"))
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=DATAFEED_WAIT)
    expect(page.get_by_role("status")).to_contain_text(
        f"Manila Diagnostics has received your payment for bill {link.bill_reference}")

    [datafeed] = pesopay.wait_datafeeds(1)
    assert (datafeed.url, datafeed.status, datafeed.answer) == (
        live_server("/payments/webhook/pesopay"), 200, "OK")
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450
    payment = only_payment(db, link)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id == datafeed.fields["PayRef"]
    [exchange] = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED)).all()
    assert exchange.signature_valid and exchange.payment_id == payment.id

    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("heading", name="Paid", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(
        f"Manila Diagnostics has received ₱1,234.50 for bill {link.bill_reference}")
    expect(page.get_by_role("button", name=re.compile(r"^Pay\b"))).to_have_count(0)


def test_the_pay_page_posts_the_form_to_pesopay_by_itself(page, db, live_server, pesopay,
                                                          build, manila):
    link = build.link(manila, amount=123450)
    seen = open_link_and_press_pay(page, live_server, link)
    payment = only_payment(db, link)
    pay_on_pesopays_page(page, pesopay, payment)
    # The redirect page posted itself (autosubmit.js): nobody pressed its button.
    assert any(urlsplit(url).path == static_name("autosubmit.js") for url in seen)
    [posted] = pesopay.forms
    assert posted["orderRef"] == payment.reference and posted["amount"] == "1234.50"
    assert_paid(page, live_server, pesopay, db, link)


def test_without_javascript_the_patient_presses_the_visible_button(browser, db, live_server,
                                                                   pesopay, build, manila):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        link = build.link(manila, amount=123450)
        open_link_and_press_pay(page, live_server, link)
        expect(page).to_have_url(live_server(f"/pay/{link.token}"))
        expect(page.get_by_role("heading", name="Continue to payment")).to_be_visible()
        assert pesopay.forms == []  # nothing is posted until the patient presses the button
        page.get_by_role("button", name="Continue to secure payment").click()
        pay_on_pesopays_page(page, pesopay, only_payment(db, link))
        assert_paid(page, live_server, pesopay, db, link)  # the page refreshes itself
    finally:
        context.close()
