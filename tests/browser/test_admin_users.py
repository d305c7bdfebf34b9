"""An admin adds a colleague with a one-time password and makes an API key, as a person would;
axe checks each page on the way."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.test_axe import audit  # noqa: F401  (the fixture)


def test_one_time_password_from_admin_to_first_sign_in(audit, live_server, sign_in, admin,  # noqa: F811
                                                       browser):
    page = audit.context.new_page()
    sign_in(page, admin.email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    assert audit("", page=page) == []

    page.get_by_label("Email").fill("new.desk@acme.test")
    page.get_by_label("Name (optional)").fill("New Desk")
    page.get_by_label("How they get in").select_option("password")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("heading", name="One-time password for new.desk@acme.test")
           ).to_be_visible()
    otp = page.get_by_role("textbox", name="One-time password").input_value()
    assert len(otp) == 19
    assert audit("", page=page) == []

    page.get_by_role("link", name="Manage new.desk@acme.test").click()
    expect(page.get_by_text("Must change the one-time password")).to_be_visible()
    assert audit("", page=page) == []
    page.get_by_label("New way in").select_option("invite")
    page.get_by_role("button", name="Issue").click()
    invite = page.get_by_role("textbox", name="Invite link").input_value()
    invite_page = page.context.new_page()
    assert audit(invite, page=invite_page) == []
    expect(invite_page.get_by_text("You are invited to sign in to Acme Diagnostics")
           ).to_be_visible()
    page.get_by_label("New way in").select_option("password")
    page.get_by_role("button", name="Issue").click()
    otp = page.get_by_role("textbox", name="One-time password").input_value()

    colleague = browser.new_context(bypass_csp=True).new_page()
    sign_in(colleague, "new.desk@acme.test", otp)
    expect(colleague.get_by_role("heading", name="Choose your password")).to_be_visible()
    assert audit("", page=colleague) == []
    colleague.get_by_label("New password", exact=True).fill("my own long passphrase")
    colleague.get_by_label("New password again").fill("my own long passphrase")
    colleague.get_by_role("button", name="Save password").click()
    expect(colleague.get_by_text("Your password is changed.")).to_be_visible()


def test_api_key_is_shown_once_then_revoked(audit, live_server, sign_in, admin):  # noqa: F811
    page = audit.context.new_page()
    sign_in(page, admin.email)
    page.goto(live_server("/admin/api-keys"))
    page.get_by_label("Name").fill("LIS billing")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("API key").input_value()
    assert key.startswith("lpk_")
    assert audit("", page=page) == []

    page.goto(live_server("/admin/api-keys"))
    expect(page.get_by_text(key)).to_have_count(0)
    page.get_by_role("button", name="Revoke LIS billing").click()
    expect(page.get_by_text("is revoked")).to_be_visible()
    expect(page.get_by_role("cell", name="Revoked")).to_be_visible()
    assert audit("", page=page) == []
