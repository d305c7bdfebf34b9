"""A staff member makes a link, a patient pays it through the sandbox gateway's hosted page.

The outcome reaches the portal the way it does in production: the sandbox queues a signed
webhook, the job worker POSTs it to the live server, and the patient's return page (which
polls status.json, or refreshes itself without JavaScript) shows the result.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

WEBHOOK_WAIT = 15_000  # ms: worker poll + signed HTTP delivery + the return page's polling
PAY_BUTTON = re.compile(r"^Pay\b")


def test_staff_creates_link_and_patient_pays(page, new_context, live_server, staff, sign_in):
    # Staff: sign in and make a link for ₹1,234.50.
    sign_in(page, "staff@acme.test")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New link").click()
    expect(page.get_by_role("heading", name="New payment link", level=1)).to_be_visible()
    page.get_by_label("Patient name").fill("Asha Rao")
    page.get_by_label("Mobile number").fill("98765 43210")
    page.get_by_label("Amount", exact=True).fill("1,234.50")
    page.get_by_label("Bill reference").fill("B-2024-0042")
    page.get_by_role("button", name="Create link").click()

    expect(page.get_by_role("heading", name="Bill B-2024-0042", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Payment link created.")).to_be_visible()
    patient_url_box = page.get_by_label("Patient URL")
    expect(patient_url_box).to_have_attribute("readonly", "")
    patient_url = patient_url_box.input_value()
    assert patient_url.startswith(live_server("/pay/")), patient_url

    # Patient: a fresh browser with no cookies opens the link.
    patient = new_context().new_page()
    patient.goto(patient_url)
    expect(patient.get_by_text("Acme Diagnostics", exact=True)).to_be_visible()
    expect(patient.get_by_role("heading", level=1)).to_contain_text("₹1,234.50")
    patient.get_by_role("button", name="Pay ₹1,234.50").click()

    # The sandbox gateway's hosted page.
    expect(patient.get_by_role("heading", level=1)).to_contain_text("₹1,234.50")
    expect(patient.get_by_role("button", name="Decline payment")).to_be_visible()
    # Hold the webhook back until the "processing" page has been seen (no race with it).
    live_server.stop_worker()
    patient.get_by_role("button", name="Pay ₹1,234.50").click()

    expect(patient.get_by_role("heading", name="Processing your payment…")).to_be_visible()
    assert "/return" in patient.url
    live_server.start_worker()
    expect(patient.get_by_role("heading", name="Payment received")).to_be_visible(
        timeout=WEBHOOK_WAIT)
    expect(patient.get_by_role("link", name="View your receipt")).to_be_visible()

    # Coming back to the link later: it is paid, with a receipt, and cannot be paid again.
    patient.goto(patient_url)
    expect(patient.get_by_role("heading", name="Paid", exact=True)).to_be_visible()
    receipt = patient.get_by_role("region", name="Receipt")
    expect(receipt).to_contain_text("Acme Diagnostics")
    expect(receipt).to_contain_text("B-2024-0042")
    expect(receipt).to_contain_text("₹1,234.50")
    expect(patient.get_by_role("button", name=PAY_BUTTON)).to_have_count(0)

    # Staff: the link shows as paid, and the history says in plain words that the payment
    # service told us (the webhook, its event and signature are an admin's technical details).
    page.reload()
    expect(page.locator(".page-head")).to_contain_text("Paid")
    webhook = page.get_by_role("listitem").filter(
        has_text="The payment service told us the result")
    expect(webhook).to_have_count(1)
    expect(webhook).not_to_contain_text("signature verified")
    expect(webhook).not_to_contain_text("webhook")


def test_decline_path(page, live_server, build, lab):
    link = build.link(lab, amount=50000)

    page.goto(live_server(f"/pay/{link.token}"))
    page.get_by_role("button", name="Pay ₹500.00").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("₹500.00")
    page.get_by_role("button", name="Decline payment").click()

    expect(page.get_by_role("heading", name="The payment did not go through")).to_be_visible(
        timeout=WEBHOOK_WAIT)
    expect(page.get_by_role("alert")).to_contain_text("No money was taken.")
    page.get_by_role("link", name="Try again").click()

    expect(page).to_have_url(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("button", name="Pay ₹500.00")).to_be_enabled()


def test_pay_page_works_without_javascript(new_context, live_server, build, lab):
    link = build.link(lab, amount=123450)
    page = new_context(java_script_enabled=False).new_page()

    page.goto(live_server(f"/pay/{link.token}"))
    page.get_by_role("button", name="Pay ₹1,234.50").click()
    live_server.stop_worker()
    page.get_by_role("button", name="Pay ₹1,234.50").click()

    expect(page.get_by_role("heading", name="Processing your payment…")).to_be_visible()
    live_server.start_worker()
    # Only the <noscript> meta refresh (every 4 s) can bring the outcome in.
    expect(page.get_by_role("heading", name="Payment received")).to_be_visible(timeout=20_000)
