"""A patient pays a KWD link through PayTabs' Hosted Payment Page (our fake), in Chromium.

The portal opens a payment page at FakePayTabs; the patient pays there, and the page's script
POSTs PayTabs' signed form back to the portal's return URL, which verifies it, reads the sale
back from `/payment/query`, and shows the payment received. Three decimals all the way.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import ExchangeKind, LinkStatus, Payment, PaymentGatewayTransaction
from tests.fakes.paytabs_fake import FakePayTabs

PROFILE_ID = 47170
CREDENTIALS = {"profile_id": str(PROFILE_ID), "server_key": "SRBROWSER1-JBD9GRNRH2-PAYTABS001",
               "region": "KWT"}
AMOUNT = "KWD\u00a012.345"
WAIT = 15_000  # ms: the return's verification, or the worker's status fetch and page polling


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def paytabs(app, live_server):
    with FakePayTabs(profiles={PROFILE_ID: CREDENTIALS["server_key"]}) as fake:
        app.config["PORTAL_PAYTABS_API_BASE"] = fake.url
        fake.ipn_delay = 2.0  # the browser's signed return comes first, even on a busy machine
        yield fake


def test_patient_pays_a_kwd_link_on_the_paytabs_page(page, app, db, live_server, paytabs, build,
                                                     lab):
    build.connect(lab, "paytabs", CREDENTIALS)
    link = build.link(lab, amount=12345, currency="KWD")
    assert link.gateway == "paytabs"

    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(AMOUNT)
    pay = page.get_by_role("button", name=f"Pay {AMOUNT}")
    expect(pay).to_be_enabled()
    assert all(origin(url) == live_server.url for url in seen), "third parties before Pay"
    pay.click()

    # PayTabs' hosted page (FakePayTabs), for the cart the portal opened.
    expect(page).to_have_url(re.compile("^" + re.escape(paytabs.url) + "/payment/wr/"))
    payment = db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()
    expect(page.locator("#amount")).to_have_text("KWD 12.345")
    expect(page.locator("#cart")).to_have_text(payment.reference)
    page.get_by_label("Card number").fill("4111 1111 1111 1111")
    page.get_by_role("button", name="Pay now").click()

    # The signed form is POSTed back and verified at once; the page is then shown by GET.
    expect(page).to_have_url(live_server(f"/pay/{link.token}/return?ref={payment.reference}"))
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=WAIT)
    expect(page.get_by_role("status")).to_contain_text(
        f"Acme Diagnostics has received your payment for bill {link.bill_reference}")

    db.refresh(link)
    assert (link.status, link.amount_paid) == (LinkStatus.PAID, 12345)
    kinds = db.scalars(select(PaymentGatewayTransaction.kind).where(
        PaymentGatewayTransaction.payment_id == payment.id)).all()
    assert ExchangeKind.RETURN_VERIFIED in kinds

    # Later, the link shows as paid, with a receipt, and cannot be paid again.
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("heading", name="Paid", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(
        f"Acme Diagnostics has received {AMOUNT} for bill {link.bill_reference}")
    expect(page.get_by_role("region", name="Receipt")).to_contain_text(AMOUNT)
    expect(page.get_by_role("button", name=re.compile(r"^Pay\b"))).to_have_count(0)
