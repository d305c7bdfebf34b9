"""Staff create, send, cancel and view; refunds and the admin pages are an admin's alone.

The rules come from the app's url_map at run time, so a route added later is covered the day
it appears: everything under /admin/, and the refund, approve and reject actions under
/transactions and /refunds. An exception must be written into `STAFF_ALLOWED`, by endpoint.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select

from portal.models import AuditLog
from tests.conftest import csrf_from

MONEY_PREFIXES = ("/transactions", "/refunds")
MONEY_ACTION = re.compile(r"/(refunds?|approve|reject)(/|$)")
# Rules matched above that staff may use anyway (endpoint names). None today.
STAFF_ALLOWED: frozenset[str] = frozenset()
# Admin pages reached from another admin page instead of the menu (endpoint names).
NOT_IN_MENU: frozenset[str] = frozenset()
# Where staff work: nothing here may answer them 403 unless it is admin-only above.
STAFF_PREFIXES = ("/links", "/transactions", "/customers")
STAFF_MENU_PAGES = ("/", "/links", "/links/new", "/transactions", "/customers")

ARGUMENT = re.compile(r"<(?:(?P<conv>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
SAMPLE = {"int": "1", "float": "1.5", "uuid": "00000000-0000-4000-8000-000000000001"}
MENU = re.compile(r'<nav aria-label="Main"[^>]*>(.*?)</nav>', re.S)
HREF = re.compile(r'href="([^"]+)"')
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def sample_url(rule) -> str:
    """The rule's path with a made-up value for each argument (the guard runs before lookups)."""
    def value(match: re.Match) -> str:
        if match["conv"] == "any":
            return match["args"].split(",")[0].strip().strip("'\"")
        return SAMPLE.get(match["conv"], "x")
    return ARGUMENT.sub(value, rule.rule)


def is_admin_only(rule) -> bool:
    if rule.endpoint in STAFF_ALLOWED:
        return False
    path = rule.rule
    fixed = ARGUMENT.sub("", path)
    return path.startswith("/admin/") or (
        path.startswith(MONEY_PREFIXES) and MONEY_ACTION.search(fixed) is not None)


def admin_only_rules(app) -> list:
    return sorted((r for r in app.url_map.iter_rules() if is_admin_only(r)),
                  key=lambda r: (r.rule, r.endpoint))


def methods(rule) -> list[str]:
    return sorted(rule.methods - IGNORED_METHODS)


def hit(client, method: str, url: str, token: str) -> int:
    """The status of one request, its response read and closed (a stream holds its session)."""
    response = client.open(url, method=method, data={"csrf_token": token},
                           headers={"X-CSRFToken": token})
    response.get_data()
    response.close()
    return response.status_code


def menu_links(client, path: str) -> list[str]:
    page = client.get(path)
    assert page.status_code == 200, path
    menu = MENU.search(page.get_data(as_text=True))
    assert menu, f"{path} has no main menu"
    return HREF.findall(menu.group(1))


def test_the_rules_are_found(app):
    found = {r.rule for r in admin_only_rules(app)}
    for expected in ("/admin/users", "/admin/users/<int:user_id>/role", "/admin/api-keys",
                     "/admin/api-keys/<int:key_id>/revoke", "/admin/gateways"):
        assert expected in found
    assert "/links/new" not in found and "/transactions" not in found
    assert not is_admin_only(type("R", (), {"rule": "/transactions.csv", "endpoint": "x"}))
    assert is_admin_only(type("R", (), {"rule": "/transactions/<int:id>/refund",
                                        "endpoint": "x"}))
    assert is_admin_only(type("R", (), {"rule": "/refunds/<int:id>/approve", "endpoint": "x"}))


def test_staff_get_403_on_every_admin_only_url(staff_client, db):
    token = csrf_from(staff_client.get("/links").get_data(as_text=True))
    audited = db.scalar(select(func.count()).select_from(AuditLog))
    wrong = []
    for rule in admin_only_rules(staff_client.application):
        url = sample_url(rule)
        for method in sorted(set(methods(rule)) | {"GET", "POST"}):
            status = hit(staff_client, method, url, token)
            # GET or POST on a rule that does not take it: 405, or 403 from a sibling rule.
            if status not in ({403} if method in rule.methods else {403, 405}):
                wrong.append(f"{method} {url} ({rule.endpoint}): {status}")
    assert wrong == [], "staff were not refused:\n" + "\n".join(wrong)
    assert db.scalar(select(func.count()).select_from(AuditLog)) == audited  # nothing happened


def test_signed_out_visitors_are_sent_to_sign_in(client, app):
    for rule in admin_only_rules(app):
        if "GET" in rule.methods:
            response = client.get(sample_url(rule))
            assert response.status_code == 302, rule.rule
            assert response.headers["Location"].startswith("/login?next="), rule.rule


def test_admins_open_every_admin_page(admin_client):
    pages = [r for r in admin_only_rules(admin_client.application)
             if "GET" in r.methods and not r.arguments]
    assert len(pages) >= 4
    for rule in pages:
        assert admin_client.get(rule.rule).status_code == 200, rule.rule


def test_staff_are_not_refused_their_own_work(staff_client):
    """Creating, sending, cancelling and viewing: made-up ids may be 404, never 403."""
    token = csrf_from(staff_client.get("/links").get_data(as_text=True))
    checked = 0
    for rule in staff_client.application.url_map.iter_rules():
        if not rule.rule.startswith(STAFF_PREFIXES) or is_admin_only(rule):
            continue
        for method in methods(rule):
            assert hit(staff_client, method, sample_url(rule), token) != 403, \
                f"{method} {rule.rule}"
            checked += 1
    assert checked >= 5  # /links, /links/new (GET, POST), cancel, resend...


def test_staff_menu_shows_no_admin_link(staff_client):
    app = staff_client.application
    admin_endpoints = {r.endpoint for r in admin_only_rules(app)}
    adapter = app.url_map.bind("localhost")
    pages = [p for p in STAFF_MENU_PAGES if adapter.test(p, method="GET")]
    for page in pages:
        links = menu_links(staff_client, page)
        assert "/links" in links  # the menu is there, with the staff's links
        for href in links:
            endpoint, _ = adapter.match(href.split("?")[0], method="GET")
            assert endpoint not in admin_endpoints, f"{href} in the staff menu on {page}"
            assert not href.startswith("/admin"), f"{href} in the staff menu on {page}"


def test_admin_menu_shows_every_admin_page(admin_client):
    links = set(menu_links(admin_client, "/"))
    pages = {r.rule for r in admin_only_rules(admin_client.application)
             if r.rule.startswith("/admin/") and "GET" in r.methods and not r.arguments
             and r.endpoint not in NOT_IN_MENU}
    assert {"/admin/users", "/admin/api-keys", "/admin/gateways"} <= pages
    missing = sorted(pages - links)
    assert missing == [], f"admin pages missing from the menu (or add them to NOT_IN_MENU): " \
                          f"{missing}"
