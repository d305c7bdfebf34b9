"""No Stripe or Razorpay key or secret reaches a log line, printed output, a page or the database.

Each flow goes through checkout, payment, signed webhooks, a refund, a failing call (whose error
text the gateway builds) and the admin's connection test, with every logger at DEBUG.
"""

import logging

import pytest
from sqlalchemy import select, text

from portal.models import Payment, PaymentStatus, Role
from portal.services.keys import save_credentials
from portal.services.refunds import request_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, serving, sign_in
from tests.fakes.localstripe import start_localstripe
from tests.fakes.razorpay_fake import FakeRazorpay
from tests.fakes.stripe_fake import FakeStripe
from tests.gateways import test_razorpay_http as rz
from tests.gateways import test_stripe_http as st
from tests.polling import wait_until


def dump_tables(db) -> str:
    return "\n".join(str(row) for table in (
        "payment_gateway_keys", "payment_gateway_transactions", "jobs", "audit_logs",
        "payments", "refunds", "customer_payment_profiles")
        for row in db.execute(text(f"SELECT * FROM {table}")))


def admin_pages(app, build, lab, gateway: str, link) -> list[str]:
    admin = build.user(lab, f"admin-{gateway}@acme.test", role=Role.ADMIN)
    client = app.test_client()
    sign_in(client, admin.email)
    detail = client.get(f"/admin/gateways/{gateway}").get_data(as_text=True)
    tested = client.post(f"/admin/gateways/{gateway}/test",
                         data={"csrf_token": csrf_from(detail)}, follow_redirects=True)
    return [detail, tested.get_data(as_text=True),
            client.get("/admin/gateways").get_data(as_text=True),
            client.get(f"/links/{link.id}").get_data(as_text=True)]


def assert_nowhere(secrets, caplog, capsys, pages, db):
    printed = capsys.readouterr()
    everything = "\n".join([caplog.text, printed.out, printed.err, *pages, dump_tables(db)])
    for secret in secrets:
        assert secret not in everything, f"{secret[:6]}... leaked"


@pytest.mark.parametrize("wrong_key", ["sk_test_wrongButSecret0001"])
def test_stripe_secrets_stay_secret(app, build, lab, db, caplog, capsys, wrong_key):
    caplog.set_level(logging.DEBUG)
    with start_localstripe() as upstream, FakeStripe(api_keys={st.SECRET_KEY},
                                                      upstream=upstream) as fake:
        app.config["PORTAL_STRIPE_API_BASE"] = fake.url
        keys = app.config["PORTAL_ENCRYPTION_KEYS"]
        save_credentials(db, keys, lab, "stripe", {**st.CREDENTIALS, "secret_key": wrong_key})
        db.commit()
        pages = []
        with serving(app) as live:
            fake.add_webhook(f"{live}/payments/webhook/stripe", st.WEBHOOK_SECRET)
            failed = build.link(lab)
            browser = st.requests.Session()
            page = browser.get(f"{live}/pay/{failed.token}").text
            pages.append(browser.post(f"{live}/pay/{failed.token}",
                                      data={"csrf_token": csrf_from(page)}).text)
            save_credentials(db, keys, lab, "stripe", st.CREDENTIALS)
            db.commit()
            link = build.link(lab)
            browser, checkout_url = st.press_pay(live, link.token)
            back = st.pay(browser, checkout_url)
            pages.append(browser.get(back.headers["Location"]).text)
            wait_until(lambda: fake.sent_events)
            wait_idle(app)
        payment = db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()
        assert payment.status == PaymentStatus.SUCCEEDED
        app.config["PORTAL_STRIPE_API_BASE"] = upstream
        request_refund(db, app.config, payment.id, 1000, "Overcharged")
        app.config["PORTAL_STRIPE_API_BASE"] = fake.url
        pages += admin_pages(app, build, lab, "stripe", link)
    assert "Connected to Stripe" in pages[-3]
    assert_nowhere([st.SECRET_KEY, st.WEBHOOK_SECRET, wrong_key], caplog, capsys, pages, db)


def test_razorpay_secrets_stay_secret(app, build, lab, db, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    wrong = "rzp-wrong-but-secret-0002"
    with FakeRazorpay(keys={rz.KEY_ID: rz.KEY_SECRET}, webhook_secret=rz.WEBHOOK_SECRET) as fake:
        fake.refunds_settle_immediately = True
        app.config["PORTAL_RAZORPAY_API_BASE"] = fake.url
        keys = app.config["PORTAL_ENCRYPTION_KEYS"]
        save_credentials(db, keys, lab, "razorpay", {**rz.CREDENTIALS, "key_secret": wrong})
        db.commit()
        pages = []
        with serving(app) as live:
            fake.add_webhook(f"{live}/payments/webhook/razorpay")
            failed = build.link(lab)
            browser = rz.requests.Session()
            page = browser.get(f"{live}/pay/{failed.token}").text
            pages.append(browser.post(f"{live}/pay/{failed.token}",
                                      data={"csrf_token": csrf_from(page)}).text)
            save_credentials(db, keys, lab, "razorpay", rz.CREDENTIALS)
            db.commit()
            link = build.link(lab)
            browser, checkout_url = rz.press_pay(live, link.token)
            back = rz.pay_on_hosted_page(browser, checkout_url)
            pages.append(browser.get(back.headers["Location"]).text)
            fake.wait_events(2)
            payment = db.scalars(select(Payment).where(
                Payment.online_payment_id == link.id)).one()
            request_refund(db, app.config, payment.id, 1000, "Overcharged")
            fake.wait_events(4)  # refund.created and refund.processed
            wait_idle(app)
        pages += admin_pages(app, build, lab, "razorpay", link)
    assert "Connected to Razorpay" in pages[-3]
    assert_nowhere([rz.KEY_SECRET, rz.WEBHOOK_SECRET, wrong], caplog, capsys, pages, db)
