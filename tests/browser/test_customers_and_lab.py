"""Customers, lab settings and the audit log as a person uses them; axe on each page."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

import gateways
from gateways.base import Capability, EventStatus, GatewayEvent
from gateways.sandbox import SandboxGateway
from portal.models import CustomerPaymentProfile
from tests.web.test_admin_lab import png

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


class CardVault(SandboxGateway):
    display_name = "CardVault"
    capabilities = SandboxGateway.capabilities | {Capability.SAVED_METHODS}

    def charge_saved_method(self, charge):
        return GatewayEvent(dedupe_id=f"vault_{charge.reference}", type="charge",
                            reference=charge.reference, status=EventStatus.SUCCEEDED,
                            amount=charge.amount, currency=charge.currency,
                            transaction_id=f"vault_txn_{charge.reference}")

    def delete_saved_method(self, method):
        pass


@pytest.fixture
def axe_page(new_context):
    """A page axe can be injected into (the CSP would refuse its script)."""
    return new_context(bypass_csp=True).new_page()


def violations(page) -> list[dict]:
    """axe's WCAG 2.2 A/AA violations on the page as it is now."""
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AXE} is missing: make test installs it with npm")
        pytest.skip("axe-core is not installed (make test installs it with npm)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                           TAGS)
    return [{"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"]]


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_the_pay_page_wears_the_labs_colour_and_logo_under_the_real_csp(page, live_server,
                                                                        build, lab, db):
    lab.brand_color = "#7a1f5c"
    lab.logo_url = "https://logo.invalid/acme.png"  # from before 0004: must never be asked for
    lab.logo_image, lab.logo_content_type = png(96, 32), "image/png"
    lab.logo_sha256 = hashlib.sha256(lab.logo_image).hexdigest()
    db.commit()
    link = build.link(lab)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("button", name="Pay ₹1,234.50")).to_have_css(
        "background-color", "rgb(122, 31, 92)")
    logo = page.get_by_role("img", name="Acme Diagnostics")
    expect(logo).to_be_visible()
    page.wait_for_load_state("load")
    assert logo.evaluate("img => img.complete && img.naturalWidth") == 96  # it loaded
    assert live_server(f"/brand/logo/{lab.id}/{lab.logo_sha256}.png") in requested
    others = [url for url in requested if origin(url) != origin(live_server("/"))]
    assert not others, f"requests to third parties before Pay was pressed: {others}"


def test_staff_find_a_patient_and_charge_their_saved_card(axe_page, live_server, sign_in,
                                                         build, lab, db, staff, monkeypatch):
    page = axe_page
    monkeypatch.setitem(gateways.GATEWAYS, "sandbox", CardVault)
    link = build.link(lab, bill_reference="B-DESK", amount=70000)
    db.add(CustomerPaymentProfile(lab_id=lab.id, customer_id=link.customer_id,
                                  gateway="sandbox", gateway_customer_id="cust_1",
                                  token="card_tok_1", brand="visa", last4="4242",
                                  exp_month=12, exp_year=2034))
    db.commit()
    sign_in(page, staff.email)
    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Find a patient").fill("98765 43210")
    page.get_by_role("button", name="Search").click()
    assert violations(page) == []
    page.get_by_role("link", name="Asha Rao").click()
    expect(page.get_by_role("heading", name="Asha Rao")).to_be_visible()
    assert violations(page) == []
    page.get_by_label("Saved method", exact=True).select_option(
        label="Visa ending 4242, expires 12/2034 (CardVault)")
    page.get_by_label("Bill to charge").select_option(label="Bill B-DESK: ₹700.00 due")
    page.get_by_role("button", name="Charge saved method").click()
    expect(page.get_by_role("status")).to_contain_text("was charged for bill B-DESK.")
    expect(page.get_by_text("Asha Rao has no open bill to charge.")).to_be_visible()
    page.get_by_role("button", name="Delete Visa ending 4242").click()
    expect(page.get_by_role("status")).to_contain_text("was removed here and at CardVault.")


def test_admin_changes_the_lab_and_reads_it_in_the_audit_log(axe_page, live_server, sign_in,
                                                             admin):
    page = axe_page
    sign_in(page, admin.email)
    page.get_by_role("link", name="Lab settings").click()
    page.get_by_label("Brand colour").fill("#ffcc00")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("White text on #ffcc00 has a contrast of 1.5:1")).to_be_visible()
    expect(page.get_by_label("Brand colour")).to_have_attribute("aria-invalid", "true")
    assert violations(page) == []
    page.get_by_label("Brand colour").fill("#7a1f5c")
    page.get_by_label("Time zone").select_option("Asia/Dubai")
    page.get_by_label("Logo", exact=True).set_input_files(
        files=[{"name": "logo.png", "mimeType": "image/png", "buffer": png(96, 32)}])
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text(
        "Lab settings saved: time zone, brand colour, logo.")
    expect(page.get_by_role("img", name="Acme Diagnostics")).to_be_visible()
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_text("brand colour: none → #7a1f5c")).to_be_visible()
    expect(page.get_by_text("time zone: Asia/Kolkata → Asia/Dubai")).to_be_visible()
    assert violations(page) == []
    page.get_by_label("Action").select_option(label="Lab settings changed")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("row")).to_have_count(2)  # the header and the one change
