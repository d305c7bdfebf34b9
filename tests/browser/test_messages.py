"""An admin edits a message and sees it previewed as typed; the pages pass axe."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import Lab, Role
from portal.worker import runner
from tests.browser.test_axe import audit  # noqa: F401  (the fixture)


def test_live_preview_while_typing_then_save(page, live_server, build, lab, db, sign_in):
    build.user(lab, "admin@acme.test", role=Role.ADMIN)
    sign_in(page, "admin@acme.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages").click()
    expect(page.get_by_role("heading", name="Messages to patients", level=1)).to_be_visible()
    preview = page.locator('[data-preview="link-sms"]')
    expect(preview).to_contain_text("Acme Diagnostics: please pay INR 1,234.50")

    page.get_by_label("New link: SMS").fill("{lab_name}: bill {bill_reference} is {amount}. {link}")
    # rendered by the server as typed, before anything is saved
    expect(preview).to_contain_text("Acme Diagnostics: bill B-1001 is INR 1,234.50. http")
    expect(page.locator('[data-preview="link-dlt"]')).to_have_text(
        "{#var#}: bill {#var#} is {#var#}. {#var#}")

    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Message settings saved.")).to_be_visible()
    saved = db.scalar(select(Lab).where(Lab.id == lab.id)).message_templates
    assert saved["texts"] == {"link.sms": "{lab_name}: bill {bill_reference} is {amount}. {link}"}


def test_messages_and_link_pages_have_no_violations(audit, live_server, build, lab, db):  # noqa: F811
    build.user(lab, "admin@acme.test", role=Role.ADMIN)
    link = build.link(lab)
    from portal.services.notifications import queue_link_message

    queue_link_message(db, link, ["sms", "email"])
    db.commit()
    live_server.app.config["PORTAL_SMTP_URL"] = "smtp://127.0.0.1:9"  # fails: shows an error
    runner.wait_idle(live_server.app)
    page = audit.context.new_page()
    page.goto(live_server("/login"))
    page.get_by_label("Email").fill("admin@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert audit(live_server("/admin/messages"), page=page) == []
    page.goto(live_server(f"/links/{link.id}"))
    page.get_by_text("Technical details").first.click()  # an admin opens the provider's words
    expect(page.get_by_text("Last error: SMTP")).to_be_visible()
    assert audit("", page=page) == []

    def bad_text(page):
        page.get_by_label("Reminder: SMS").fill("Pay {amount} for {test_name}")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Unknown placeholder {test_name}.")).to_be_visible()

    assert audit(live_server("/admin/messages"), page=page, prepare=bad_text) == []
