"""The dashboard, the webhook inbox and the printable bill slip, in a real browser."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.test_axe import audit  # noqa: F401  the axe-core fixture


def test_dashboard_inbox_and_slip_have_no_violations(audit, live_server, build, lab,  # noqa: F811
                                                     admin, sign_in):
    link = build.link(lab, bill_reference="B-SLIP")
    page = audit.context.new_page()
    sign_in(page, admin.email)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Today, ")
    assert audit("", page=page) == []
    assert audit(live_server("/admin/webhooks"), page=page) == []
    assert audit(live_server(f"/links/{link.id}/print"), page=page) == []
    assert audit(live_server(f"/links/{link.id}/print?paper=80mm"), page=page) == []


def test_the_slip_prints_without_its_toolbar(page, live_server, build, lab, staff, sign_in):
    link = build.link(lab, bill_reference="B-SLIP")
    sign_in(page, staff.email)
    page.goto(live_server(f"/links/{link.id}"))
    page.get_by_role("link", name="Print bill slip").click()

    slip = page.get_by_role("article", name="Acme Diagnostics")
    expect(slip).to_contain_text("B-SLIP")
    expect(slip).to_contain_text("₹1,234.50")
    qr = slip.get_by_role("img", name="QR code to pay bill B-SLIP")
    expect(qr).to_be_visible()
    page.wait_for_function("() => document.querySelector('.slip__qr').complete")  # not yet if busy
    assert page.evaluate("() => document.querySelector('.slip__qr').naturalWidth") > 0
    expect(page.get_by_role("button", name="Print")).to_be_visible()  # shown by print.js

    page.emulate_media(media="print")
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(page.get_by_role("link", name="Back to the link")).to_be_hidden()
    expect(qr).to_be_visible()

    page.emulate_media(media="screen")
    page.get_by_role("link", name="80 mm receipt").click()
    expect(page).to_have_url(re.compile(r"paper=80mm"))
    # the click navigates: wait until the new page's own stylesheet has laid the sheet out
    page.wait_for_function(
        "() => document.querySelector('.sheet')?.getBoundingClientRect().width < 600")
    width = page.evaluate("() => document.querySelector('.sheet').getBoundingClientRect().width")
    assert 295 < width < 310  # 80 mm at 96 px to the inch is 302 px
