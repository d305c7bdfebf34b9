"""WCAG 2.2 1.4.10 Reflow on every staff and admin page: no sideways scrolling of the page at
320 CSS px, nor at 200% zoom of a 1280 px window (640 CSS px); a wide table may scroll inside
its own region, the page may not. The pay page stays whole with the text at 200%."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from portal.models import (
    AuditLog,
    Channel,
    LinkStatus,
    Notification,
    OutboxStatus,
    PaymentStatus,
    Role,
    utcnow,
)
from portal.services import bulk, outhooks
from portal.services.api_keys import create_api_key
from portal.services.users import invite_token

from .test_axe import AXE, TAGS

# 320 CSS px; and a 1280 px window at 200% zoom, which lays pages out at 640 CSS px.
VIEWPORTS = {"320px": ({"width": 320, "height": 640}, 1),
             "200% zoom": ({"width": 640, "height": 400}, 2)}
LONG = "Sunrise Diagnostics and Research Centre, Koramangala 5th Block"
NOT_PAGES = {"main.healthz", "main.favicon", "admin.brand_css", "admin.brand_logo",
             "transactions.export", "links.bulk_template", "links.bulk_problems",
             "links.bulk_result"}
STAFF_BLUEPRINTS = {"main", "auth", "admin", "customers", "links", "transactions"}


def staff_endpoints(app) -> set[str]:
    """Every GET page of the staff and admin blueprints (a new one must join PAGES below)."""
    return {rule.endpoint for rule in app.url_map.iter_rules()
            if "GET" in rule.methods and rule.endpoint.split(".")[0] in STAFF_BLUEPRINTS
            and rule.endpoint not in NOT_PAGES}


@pytest.fixture
def busy_lab(app, build, db, lab, admin):
    """A lab with long names, every link state, refunds, messages, keys and audit entries."""
    lab.name = LONG
    staff = build.user(lab, "front.desk.with.a.long.address@sunrise-diagnostics.test")
    link = build.link(lab, bill_reference="B-2026-000000123456", amount=123456789,
                      patient_name="Lakshmi Venkataraman Subramaniam",
                      email="lakshmi.venkataraman.subramaniam@example.com",
                      description="Thyroid profile, lipid panel, HbA1c, vitamin D and B12")
    paid = build.link(lab, bill_reference="B-PAID-000987654", status=LinkStatus.PAID,
                      amount_paid=250000, amount=250000, paid_at=utcnow())
    payment = build.payment(paid, gateway_transaction_id="pay_Nq8x2LkT4bZz91QwErTy",
                            card_brand="mastercard", card_last4="4444",
                            status=PaymentStatus.PARTIALLY_REFUNDED, amount_refunded=50000)
    build.refund(payment, 50000, reason="Test not done: sample haemolysed")
    build.payment(link, status=PaymentStatus.FAILED, gateway="razorpay",
                  failure_reason="The bank declined the card (insufficient funds)")
    expired = build.link(lab, bill_reference="B-OLD-1")
    expired.expires_at = utcnow() - timedelta(hours=1)
    build.link(lab, bill_reference="B-GONE-1", status=LinkStatus.CANCELLED, cancelled_at=utcnow())
    db.add(Notification(lab_id=lab.id, online_payment_id=link.id, channel=Channel.EMAIL,
                        recipient="lakshmi.venkataraman.subramaniam@example.com",
                        template="link", status=OutboxStatus.DEAD, attempts=8,
                        last_error="550 5.1.1 The email account that you tried to reach does "
                                   "not exist; please try double-checking the address"))
    link.needs_attention, link.attention_reason = True, "Paid 1,234.56 after the link expired"
    db.add(AuditLog(lab_id=lab.id, user_id=admin.id, action="lab.settings",
                    object_type="lab", object_id=str(lab.id), ip_address="203.0.113.200",
                    detail={"changed": ["name", "timezone", "reminder_hours_before"]}))
    create_api_key(db, lab.id, "Laboratory information system (LIS) integration",
                   actor_id=admin.id, ip=None)
    table = bulk.read_table("home-collection-round-december.csv", (
        b"name,phone,amount,bill_reference\n"
        b"Lakshmi Venkataraman Subramaniam,+919876543210,1234.50,B-HOME-000000000001\n"
        b"Ravi,12,twelve hundred,B-HOME-2\n"))
    upload = bulk.save_upload(db, lab, admin.id, "home-collection-round-december.csv",
                              bulk.check_table(db, lab, table))
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"  # 127.0.0.1 allowed
    endpoint = outhooks.create_endpoint(
        db, app.config, lab, "http://127.0.0.1:9/laboratory-information-system/webhooks/portal"
    ).endpoint
    db.commit()
    invited = build.user(lab, "new.person@sunrise-diagnostics.test", role=Role.STAFF)
    return {"link": link, "payment": payment, "staff": staff,
            "invite": invite_token(app.config["SECRET_KEY"], invited),
            "upload": upload.public_id, "endpoint": endpoint.id}


def page_paths(busy) -> dict[str, str]:
    link = busy["link"]
    return {
        "main.dashboard": "/",
        "auth.account": "/account",
        "auth.change_password": "/account/password",
        "auth.login": "/login",
        "auth.accept_invite": f"/invite?token={busy['invite']}",
        "admin.api_keys_index": "/admin/api-keys",
        "admin.audit_page": "/admin/audit",
        "admin.gateways": "/admin/gateways",
        "admin.gateway": "/admin/gateways/razorpay",
        "admin.lab_settings_page": "/admin/lab",
        "admin.messages_settings": "/admin/messages",
        "admin.users_index": "/admin/users",
        "admin.user_detail": f"/admin/users/{busy['staff'].id}",
        "admin.webhooks": "/admin/webhooks",
        "customers.index": "/customers",
        "customers.detail": f"/customers/{link.customer_id}",
        "links.index": "/links",
        "links.new": "/links/new",
        "links.detail": f"/links/{link.id}",
        "links.print_slip": f"/links/{link.id}/print",
        "transactions.index": "/transactions",
        "transactions.detail": f"/transactions/{busy['payment'].id}",
        "admin.integrations": "/admin/integrations",
        "admin.integration": f"/admin/integrations/{busy['endpoint']}",
        "links.bulk_upload": "/links/bulk",
        "links.bulk_review": f"/links/bulk/{busy['upload']}",
    }


SIGNED_OUT = {"auth.login", "auth.accept_invite"}

OVERFLOW = """() => {
  const root = document.scrollingElement;
  if (root.scrollWidth <= root.clientWidth) return null;
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    return r.right > root.clientWidth + 1 && !e.closest('.scroll-region, .table');
  }).slice(0, 5)
    .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide};
}"""


def test_every_staff_page_is_listed(app, busy_lab):
    missing = staff_endpoints(app) - set(page_paths(busy_lab))
    assert not missing, f"new staff pages {missing}: add them to page_paths to measure them"


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=list(VIEWPORTS))
def test_staff_pages_reflow_without_sideways_scrolling(app, new_context, live_server, sign_in,
                                                       busy_lab, admin, viewport):
    size, scale = VIEWPORTS[viewport]
    signed_in = new_context(viewport=size, device_scale_factor=scale, bypass_csp=True).new_page()
    sign_in(signed_in, admin.email)
    signed_out = new_context(viewport=size, device_scale_factor=scale, bypass_csp=True).new_page()
    overflowing, violations = {}, {}
    endpoints = staff_endpoints(app)
    for endpoint, path in page_paths(busy_lab).items():
        if endpoint not in endpoints:
            continue  # not on this branch yet
        page = signed_out if endpoint in SIGNED_OUT else signed_in
        response = page.goto(live_server(path))
        assert response.status == 200, (endpoint, response.status)
        if (problem := page.evaluate(OVERFLOW)) is not None:
            overflowing[endpoint] = problem
        if found := axe(page):
            violations[endpoint] = found
    assert not overflowing, json.dumps(overflowing, indent=1)
    # Narrow layouts change what axe sees (tables that scroll in place, the folded menu).
    assert not violations, json.dumps(violations, indent=1)


def axe(page) -> list[dict]:
    if not AXE.exists():
        pytest.skip("axe-core is not installed (make test installs it with npm)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                           TAGS)
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"]]


CLIPPED = """() => [...document.querySelectorAll('main *')].filter(e => {
  const style = getComputedStyle(e);
  const clips = ['hidden', 'clip'].includes(style.overflowX) || style.textOverflow === 'ellipsis';
  return clips && e.scrollWidth > e.clientWidth + 1 && !e.classList.contains('visually-hidden');
}).map(e => e.tagName + '.' + e.className)"""


@pytest.mark.parametrize("width", [360, 1280])
def test_pay_page_with_text_at_200_percent(new_context, live_server, build, lab, width):
    """The browser's font size set to 32 px (Chrome's "Very large" is 24; 200% of 16 is 32):
    the page grows with it, nothing is cut off and nothing scrolls sideways."""
    lab.name = LONG
    link = build.link(lab, bill_reference="B-2026-000123", amount=12345678, allow_partial=True,
                      description="Thyroid profile, lipid panel, HbA1c, vitamin D and B12")
    page = new_context(viewport={"width": width, "height": 800}).new_page()
    cdp = page.context.new_cdp_session(page)
    cdp.send("Page.enable")
    cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 32, "fixed": 26}})
    page.goto(live_server(f"/pay/{link.token}"))
    assert page.evaluate("getComputedStyle(document.documentElement).fontSize") == "32px"
    pay = page.get_by_role("button", name="Pay")
    expect(pay).to_be_visible()
    box = pay.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width
    assert page.evaluate(OVERFLOW) is None
    assert page.evaluate(CLIPPED) == []


def test_menu_folds_on_narrow_screens_only(new_context, live_server, sign_in, staff):
    """No script: a <details> Menu below 48rem; wider, every link shows and takes the focus."""
    wide = new_context(viewport={"width": 1280, "height": 720}).new_page()
    sign_in(wide, staff.email)
    nav = wide.get_by_role("navigation", name="Main")
    expect(nav.get_by_text("Menu")).to_be_hidden()
    nav.get_by_role("link", name="Transactions").focus()
    expect(nav.get_by_role("link", name="Transactions")).to_be_focused()

    narrow = new_context(viewport={"width": 320, "height": 640},
                         java_script_enabled=False).new_page()
    sign_in(narrow, staff.email)
    nav = narrow.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Transactions")).to_be_hidden()
    nav.get_by_text("Menu").click()
    nav.get_by_role("link", name="Transactions").click()
    expect(narrow.get_by_role("heading", name="Transactions", exact=True)).to_be_visible()
