"""An admin registers the lab's webhook endpoint, copies its secret (shown once), watches the
delivery log fill as a link is created, and redelivers an event; axe checks every page."""

from __future__ import annotations

import json

from playwright.sync_api import expect

from tests.browser.test_axe import audit  # noqa: F401  (the fixture)
from tests.fakes.lab_receiver import LabReceiver, verify
from tests.fakes.server import Fault


def test_register_see_the_secret_once_follow_the_log_and_redeliver(
        audit, live_server, sign_in, admin, app, build, lab):  # noqa: F811
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    page = audit.context.new_page()
    sign_in(page, admin.email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Integrations").click()
    expect(page.get_by_role("heading", name="Integrations", exact=True)).to_be_visible()
    assert audit("", page=page) == []

    with LabReceiver() as receiver:
        # Bad input first: re-rendered with the message, nothing registered.
        page.get_by_label("Endpoint URL").fill("ftp://example.com/x")
        page.get_by_role("button", name="Register endpoint").click()
        expect(page.get_by_text("The URL must start with https://")).to_be_visible()
        assert audit("", page=page) == []

        page.get_by_label("Endpoint URL").fill(f"{receiver.url}/hook")
        page.get_by_label("Description (optional)").fill("LIS")
        expect(page.get_by_role("checkbox", name="link.paid")).to_be_checked()  # all by default
        page.get_by_role("button", name="Register endpoint").click()
        secret = page.get_by_label(f"Signing secret for {receiver.url}/hook").input_value()
        assert secret.startswith("whsec_")
        assert audit("", page=page) == []

        receiver.add_fault(Fault("/hook", status=500, body=b"not ready"))
        link = build.link(lab, bill_reference="B-HOOK")
        page.goto(live_server("/admin/integrations"))
        assert secret not in page.content()  # shown once only
        page.get_by_role("link", name=f"{receiver.url}/hook").click()
        expect(page.get_by_role("heading", name="Delivery log")).to_be_visible()
        for _ in range(50):  # the worker's first attempt gets the 500
            page.reload()
            if "HTTP 500" in page.content():
                break
            page.wait_for_timeout(100)
        expect(page.get_by_role("cell", name="HTTP 500").first).to_be_visible()
        page.get_by_text("History").first.click()
        assert audit("", page=page) == []

        page.get_by_role("button", name="Redeliver").first.click()
        expect(page.get_by_text("is queued to be sent again")).to_be_visible()
        for _ in range(50):
            if len(receiver.requests_to("POST", "/hook")) >= 2:
                break
            page.wait_for_timeout(100)
        page.reload()
        expect(page.get_by_text("Delivered").first).to_be_visible()
        last = receiver.requests_to("POST", "/hook")[-1]
        assert verify(last.headers["Portal-Signature"], last.body, secret)
        assert json.loads(last.body)["data"]["bill_reference"] == link.bill_reference
        assert audit("", page=page) == []
