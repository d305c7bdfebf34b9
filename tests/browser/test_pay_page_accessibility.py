"""Accessibility basics of the patient's pay page, and its README screenshot."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import expect

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "pay-page.png"


def test_pay_page_accessibility_basics(page, new_context, live_server, build, lab):
    link = build.link(lab, amount=123450, bill_reference="B-2024-0042")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(live_server(f"/pay/{link.token}"))
    pay = page.get_by_role("button", name="Pay ₹1,234.50")
    expect(pay).to_be_visible()

    # The document has a language and exactly one top-level heading.
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^[a-z]{2}"))
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    expect(page.locator("h1")).to_have_count(1)

    # Every form control has an accessible name.
    controls = page.locator("button, select, textarea, input:not([type=hidden])")
    assert controls.count() >= 1
    for control in controls.all():
        expect(control).to_have_accessible_name(re.compile(r"\S"))

    # The Pay button is reachable with the keyboard from the top of the page.
    page.locator("body").focus()
    reached = False
    for _ in range(10):
        page.keyboard.press("Tab")
        if pay.evaluate("button => button === document.activeElement"):
            reached = True
            break
    assert reached, "Tab never reached the Pay button"
    expect(pay).to_be_focused()

    # Nothing is loaded from anywhere but the portal before the patient presses Pay.
    assert requested
    foreign = [url for url in requested if urlsplit(url).hostname != "127.0.0.1"]
    assert foreign == []

    # On a phone: no sideways scrolling, and the README's screenshot.
    phone = new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                        is_mobile=True, has_touch=True).new_page()
    phone.goto(live_server(f"/pay/{link.token}"))
    expect(phone.get_by_role("button", name="Pay ₹1,234.50")).to_be_in_viewport()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    if os.environ.get("PORTAL_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        phone.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")
