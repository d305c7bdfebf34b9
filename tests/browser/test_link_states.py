"""What a patient sees on a link that can no longer be paid."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import expect

from portal.models import utcnow

PAY_BUTTON = re.compile(r"^Pay\b")


def test_expired_link_page(page, live_server, build, db, lab):
    link = build.link(lab, bill_reference="B-OLD-1")
    # create_link refuses a past expiry, so the link is made first and then aged (with the
    # worker paused and in a transaction of its own: see WorkerPausingBuilder).
    with live_server.worker_paused():
        db.commit()
        link.expires_at = utcnow() - timedelta(hours=1)
        db.commit()

    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("heading", name="This payment link has expired")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("B-OLD-1")
    expect(page.get_by_role("button", name=PAY_BUTTON)).to_have_count(0)
    expect(page.get_by_role("button")).to_have_count(0)


def test_cancelled_link_page(page, new_context, live_server, build, lab, staff, sign_in):
    link = build.link(lab, bill_reference="B-CXL-1")

    sign_in(page, staff.email)
    page.goto(live_server(f"/links/{link.id}"))
    expect(page.get_by_role("heading", name="Bill B-CXL-1", level=1)).to_be_visible()
    confirm = page.get_by_role("button", name="Yes, cancel the link")
    expect(confirm).to_be_hidden()
    page.get_by_text("Cancel this link…").click()
    confirm.click()

    expect(page.get_by_role("status").filter(
        has_text="The link is cancelled. The patient can no longer pay it.")).to_be_visible()
    expect(page.locator(".page-head")).to_contain_text("Cancelled")
    expect(page.get_by_text("Cancel this link…")).to_have_count(0)

    patient = new_context().new_page()
    patient.goto(live_server(f"/pay/{link.token}"))
    expect(patient.get_by_role("heading", name="This payment link was cancelled")).to_be_visible()
    expect(patient.get_by_role("button", name=PAY_BUTTON)).to_have_count(0)
