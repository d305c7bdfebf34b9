"""No gateway secret reaches a log line, a page or the database in clear text."""

import logging

from sqlalchemy import text

from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, serving
from tests.gateways.test_sandbox_http import choose, press_pay

SECRET = "whsec_never_show_this_value"


def test_secret_stays_secret_through_a_whole_payment(app, build, caplog, db):
    caplog.set_level(logging.DEBUG)
    lab = build.lab("quiet", sandbox_secret=SECRET)
    admin = build.user(lab, "admin@quiet.test", role="admin")
    link = build.link(lab)
    pages = []
    with serving(app) as base:
        browser, checkout_url = press_pay(base, link.token)
        pages.append(browser.get(checkout_url).text)
        answer = choose(browser, checkout_url, "pay")
        wait_idle(app)
        pages.append(browser.get(answer.headers["Location"]).text)
        pages.append(browser.get(f"{base}/pay/{link.token}").text)
        pages.append(browser.get(f"{base}/pay/{link.token}/status.json").text)
    client = app.test_client()
    from tests.conftest import sign_in

    sign_in(client, admin.email)
    for url in ("/admin/gateways", "/admin/gateways/sandbox", f"/links/{link.id}"):
        pages.append(client.get(url).get_data(as_text=True))
    assert "Paid" in pages[2]
    for page in pages:
        assert SECRET not in page
    assert SECRET not in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("portal"))
    assert "GET /pay/" in ours and link.token not in ours  # tokens are logged cut short
    with app.app_context():
        dump = "\n".join(str(row) for table in (
            "payment_gateway_keys", "payment_gateway_transactions", "jobs", "audit_logs")
            for row in db.execute(text(f"SELECT * FROM {table}")))
    assert SECRET not in dump
    assert csrf_from(pages[0])  # the checkout page really rendered
