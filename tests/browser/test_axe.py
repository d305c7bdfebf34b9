"""axe-core (WCAG 2.2 A/AA rules) on every page a patient or the front desk meets in the loop."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal.models import LinkStatus, utcnow

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture
def audit(new_context):
    """`audit(url)`: opens the page and returns axe's violations (CSP bypassed to inject it)."""
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AXE} is missing: make test installs it with npm")
        pytest.skip("axe-core is not installed (make test installs it with npm)")
    context = new_context(bypass_csp=True)

    def audit(url: str, *, page=None, prepare=None) -> list[dict]:
        page = page or context.new_page()
        if url:
            page.goto(url)
        if prepare:
            prepare(page)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                               TAGS)
        return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
                 "nodes": [n["target"] for n in v["nodes"]]} for v in result["violations"]]

    audit.context = context
    return audit


def test_patient_pages_have_no_violations(audit, live_server, build, lab, db):
    open_link = build.link(lab, bill_reference="B-OPEN")
    expired = build.link(lab, bill_reference="B-OLD")
    expired.expires_at = utcnow() - timedelta(hours=1)
    cancelled = build.link(lab, bill_reference="B-GONE", status=LinkStatus.CANCELLED)
    db.commit()
    for token in (open_link.token, expired.token, cancelled.token):
        assert audit(live_server(f"/pay/{token}")) == []
    assert audit(live_server("/pay/not-a-token")) == []

    page = audit.context.new_page()
    page.goto(live_server(f"/pay/{open_link.token}"))
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("button", name="Decline payment")).to_be_visible()
    assert audit("", page=page) == []  # the sandbox's hosted page
    with live_server.worker_paused():
        page.get_by_role("button", name="Decline payment").click()
        expect(page.get_by_text("Processing your payment")).to_be_visible()
        assert audit("", page=page) == []
    expect(page.get_by_text("The payment did not go through")).to_be_visible(timeout=15_000)
    assert audit("", page=page) == []


def test_staff_pages_have_no_violations(audit, live_server, build, lab, staff):
    link = build.link(lab)
    page = audit.context.new_page()
    assert audit(live_server("/login"), page=page) == []
    page.get_by_label("Email").fill(staff.email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert audit(live_server("/links"), page=page) == []
    assert audit(live_server(f"/links/{link.id}"), page=page) == []

    def submit_bad_form(page):
        page.get_by_label("Amount").fill("12.345")
        page.get_by_role("button", name="Create link").click()
        # In the error summary at the top, and next to the field.
        expect(page.get_by_text("INR amounts have at most 2 decimals.")).to_have_count(2)

    assert audit(live_server("/links/new"), page=page, prepare=submit_bad_form) == []
