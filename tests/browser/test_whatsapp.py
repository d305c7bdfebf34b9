"""WhatsApp in Chromium: an admin names the approved templates, staff send a link by WhatsApp
and share it from the link page; the changed pages pass axe."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import Channel, Notification, Role
from tests.browser.test_axe import audit  # noqa: F401  (the fixture)


def test_admin_sets_templates_then_staff_send_and_share_by_whatsapp(
        audit, live_server, build, lab, db, sign_in):  # noqa: F811
    build.user(lab, "admin@acme.test", role=Role.ADMIN)
    page = audit.context.new_page()
    sign_in(page, "admin@acme.test")
    page.goto(live_server("/admin/messages"))
    section = page.get_by_role("region", name="WhatsApp templates")
    expect(section.locator('[data-preview="link-whatsapp"] li')).to_have_count(6)
    expect(section.locator('[data-preview="link-whatsapp"] li').nth(2)).to_contain_text(
        "{amount} ₹1,234.50")
    section.get_by_label("WhatsApp template of the new link").fill("Pay Link")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Lowercase letters, digits and _ only")).to_be_visible()
    assert audit("", page=page) == []

    section.get_by_label("WhatsApp template of the new link").fill("pay_link")
    section.get_by_label("Hindi · हिन्दी").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Message settings saved.")).to_be_visible()

    page.goto(live_server("/links/new"))
    page.get_by_label("Patient name").fill("Ravi Kumar")
    page.get_by_label("Mobile number").fill("98765 43210")
    page.get_by_label("Amount").fill("750")
    page.get_by_label("Bill reference").fill("WA-1")
    page.get_by_label("Send by SMS").uncheck()
    page.get_by_label("Send by email").uncheck()
    page.get_by_label("Send by WhatsApp").check()
    page.get_by_role("button", name="Create link").click()
    expect(page.get_by_text("Sending it by WhatsApp")).to_be_visible()
    expect(page.get_by_text("Payment link by WhatsApp")).to_be_visible()
    share = page.get_by_role("link", name="Share on WhatsApp")
    url = urlsplit(share.get_attribute("href"))
    assert (url.scheme, url.netloc, url.path) == ("https", "wa.me", "/919876543210")
    assert "please pay ₹750.00 for bill WA-1" in parse_qs(url.query)["text"][0]
    assert audit("", page=page) == []
    rows = db.scalars(select(Notification)).all()
    assert [(n.channel, n.recipient) for n in rows] == [(Channel.WHATSAPP, "+919876543210")]
