"""Every patient language in a real browser: axe-core at 0 violations and no sideways scroll on
a 320 px phone, one page per language per state; Arabic mirrored; README screenshots."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal import i18n
from portal.models import LinkStatus, Payment, PaymentStatus, utcnow

from .test_axe import audit  # noqa: F401  (the fixture)

DOCS = Path(__file__).resolve().parents[2] / "docs"
PHONE = {"width": 320, "height": 640}


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.fixture
def states(build, lab, db):
    """One link in each state a patient can find it in, with long values to stress the layout."""
    lab.name = "Sunrise Diagnostics and Research Centre"
    open_link = build.link(lab, bill_reference="B-2026-000123", amount=12345678,
                           description="Blood tests", allow_partial=True, amount_paid=10000)
    expired = build.link(lab, bill_reference="B-OLD-1")
    expired.expires_at = utcnow() - timedelta(hours=1)
    cancelled = build.link(lab, bill_reference="B-GONE-1", status=LinkStatus.CANCELLED)
    paid = build.link(lab, bill_reference="B-PAID-1", status=LinkStatus.PAID, amount_paid=123450,
                      paid_at=utcnow())
    db.add(Payment(lab_id=lab.id, online_payment_id=paid.id,
                   reference="pay_0123456789abcdef01234567",
                   amount=123450, currency="INR", gateway="sandbox",
                   status=PaymentStatus.SUCCEEDED, gateway_transaction_id="ch_4f8a1c2b9d",
                   card_brand="visa", card_last4="4242", succeeded_at=utcnow()))
    db.commit()
    return {"pay": f"/pay/{open_link.token}", "expired": f"/pay/{expired.token}",
            "cancelled": f"/pay/{cancelled.token}", "paid": f"/pay/{paid.token}",
            "receipt": f"/pay/{paid.token}/receipt", "not found": "/pay/no-such-link"}


@pytest.mark.parametrize("code", list(i18n.LANGUAGES))
def test_every_state_in_every_language_is_accessible_and_fits_320px(
        audit, live_server, states, code):  # noqa: F811
    page = audit.context.new_page()
    page.set_viewport_size(PHONE)
    page.goto(live_server(f"{states['pay']}?lang={code}"))  # the cookie carries it on
    for state, path in states.items():
        page.goto(live_server(path))
        html = page.locator("html")
        expect(html).to_have_attribute("lang", code)
        if code == "ar":
            expect(html).to_have_attribute("dir", "rtl")
        assert audit("", page=page) == [], (code, state)
        assert no_sideways_scroll(page), (code, state)


def test_arabic_is_mirrored_and_values_stay_left_to_right(new_context, live_server, states):
    page = new_context(viewport=PHONE).new_page()
    page.goto(live_server(f"{states['expired']}?lang=ar"))
    edge = page.locator(".result").evaluate(
        "e => [getComputedStyle(e).borderRightWidth, getComputedStyle(e).borderLeftWidth]")
    assert edge[0] != "0px" and edge[1] == "0px"  # the coloured edge is on the start: the right
    page.goto(live_server(f"{states['pay']}?lang=ar"))
    title = page.locator(".pay__title").bounding_box()
    label = page.get_by_text("المبلغ المستحق").bounding_box()
    assert label["x"] + label["width"] == pytest.approx(title["x"] + title["width"], abs=2)
    reference = page.locator(".summary bdi", has_text="B-2026-000123")
    expect(reference).to_have_text("B-2026-000123")  # in order, not reversed around the dashes
    assert reference.evaluate("e => getComputedStyle(e).direction") == "ltr"


def test_a_full_payment_in_arabic(new_context, live_server, states):
    """The sandbox's hosted page and the outcome page follow the patient's language."""
    page = new_context(viewport=PHONE).new_page()
    page.goto(live_server(f"{states['pay']}?lang=ar"))
    page.get_by_role("button", name="ادفع").click()
    expect(page.get_by_role("button", name="رفض الدفع")).to_be_visible()
    assert page.locator("html").get_attribute("dir") == "rtl" and no_sideways_scroll(page)
    page.get_by_role("button", name="رفض الدفع").click()
    expect(page.get_by_text("لم تتم عملية الدفع")).to_be_visible(timeout=15_000)
    assert no_sideways_scroll(page)


@pytest.mark.parametrize("code, market", [
    ("hi", {"currency": "INR", "locale": "en_IN", "timezone": "Asia/Kolkata"}),
    ("ar", {"currency": "BHD", "locale": "ar_BH", "timezone": "Asia/Bahrain"}),
    ("zh-Hant", {"currency": "HKD", "locale": "zh_Hant_HK", "timezone": "Asia/Hong_Kong"})])
def test_readme_screenshots(new_context, live_server, build, tmp_path, code, market):
    """PORTAL_SCREENSHOTS=1 (make screenshots) writes docs/pay-page-<code>.png for the README."""
    lab = build.lab(name="Sunrise Diagnostics", **market)
    link = build.link(lab, bill_reference="B-2026-0042", language=code,
                      amount=12500 if market["currency"] == "BHD" else 123450)
    page = new_context(viewport={"width": 360, "height": 720}, device_scale_factor=1,
                       locale=code).new_page()
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.locator("html")).to_have_attribute("lang", code)
    target = (DOCS if os.environ.get("PORTAL_SCREENSHOTS") else tmp_path) / \
        f"pay-page-{code}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
