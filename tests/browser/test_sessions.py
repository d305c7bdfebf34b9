"""Signing out of every other device, as a person would: the other browser is sent to sign in
and told why; axe checks the account page and the admin's view of a user's sessions."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_axe import audit  # noqa: F401  (the fixture)


def test_sign_out_of_all_other_devices(audit, live_server, sign_in, staff, admin,  # noqa: F811
                                       new_context):
    desk = new_context().new_page()
    sign_in(desk, staff.email)
    phone = audit.context.new_page()
    sign_in(phone, staff.email)

    phone.get_by_role("link", name=staff.email).click()
    expect(phone.get_by_role("heading", name="Your account")).to_be_visible()
    table = phone.get_by_role("table", name="Where you are signed in")
    expect(table.get_by_role("row")).to_have_count(3)  # the header and two sessions
    expect(table.get_by_text("(this device)")).to_have_count(1)
    assert audit("", page=phone) == []

    phone.get_by_role("button", name="Sign out of all other devices").click()
    expect(phone.get_by_text("You are signed out on every other device. You stay signed in "
                             "here.")).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(2)

    desk.get_by_role("link", name="Links", exact=True).click()
    expect(desk.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(desk.get_by_text("You were signed out. Please sign in again.")).to_be_visible()
    phone.get_by_role("link", name="Links", exact=True).click()
    expect(phone.get_by_role("heading", name="Payment links")).to_be_visible()

    boss = new_context(bypass_csp=True).new_page()
    sign_in(boss, admin.email)
    boss.goto(live_server(f"/admin/users/{staff.id}"))
    expect(boss.get_by_role("table", name=f"Open sessions of {staff.email}")
           .get_by_role("row")).to_have_count(2)
    assert audit("", page=boss) == []
    boss.get_by_role("button", name=f"Sign {staff.email} out of all devices").click()
    expect(boss.get_by_text(f"{staff.email} is signed out on every device.")).to_be_visible()
    expect(boss.get_by_text("No open sessions.")).to_be_visible()
    phone.reload()
    expect(phone.get_by_text("You were signed out. Please sign in again.")).to_be_visible()
