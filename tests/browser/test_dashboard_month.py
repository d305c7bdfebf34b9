"""The dashboard's last 30 days as a person meets it: each chart is one image with a name and a
description, the numbers behind it open in a table, and axe finds nothing at desktop width or
at 320 px with the table open."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.web.test_dashboard_month import NOW, seed_month

from .test_axe import audit  # noqa: F401  (the fixture)


@pytest.mark.parametrize("width", [1280, 320])
def test_charts_have_their_numbers_in_a_table(audit, live_server, build, db, lab, staff,  # noqa: F811
                                              monkeypatch, sign_in, width):
    monkeypatch.setattr("portal.services.dashboard.utcnow", lambda: NOW)
    seed_month(build, db, lab)
    page = audit.context.new_page()
    page.set_viewport_size({"width": width, "height": 800})
    sign_in(page, staff.email)
    page.goto(live_server("/"))

    expect(page.get_by_role("img", name="Links paid per day")).to_be_visible()
    expect(page.get_by_role("img", name="Collected per day (INR)")).to_have_accessible_description(
        "From Thu, 5 Nov to Fri, 4 Dec. Best day: Tue, 1 Dec, ₹400.00. Every day's amount is "
        "in the table “Each day” below.")
    expect(page.get_by_role("img", name="Collected per day (USD)")).to_be_visible()

    page.get_by_text("Each day", exact=True).click()
    table = page.get_by_role("table", name="Links paid and money collected each day")
    # 00:01 in Kolkata on 4 December, 23:59 on 3 December: each on the lab's own day.
    expect(table.get_by_role("row", name="Fri, 4 Dec")).to_contain_text("₹200.00")
    expect(table.get_by_role("row", name="Thu, 3 Dec")).to_contain_text("₹100.00")
    expect(table.get_by_role("row")).to_have_count(31)
    gateways = page.get_by_role("table", name="Payments per gateway")
    expect(gateways.get_by_role("row", name="Razorpay")).to_contain_text("50%")
    expect(page.get_by_text("45 minutes")).to_be_visible()

    assert page.evaluate("document.scrollingElement.scrollWidth "
                         "<= document.scrollingElement.clientWidth")
    assert audit("", page=page) == []
