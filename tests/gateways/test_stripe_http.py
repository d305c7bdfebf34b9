"""Stripe over real HTTP: Checkout Sessions on our fake, the rest on localstripe.

The fake serves Checkout Sessions and their hosted page and forwards every other `/v1/` call to
localstripe, so a paid session leaves a real PaymentIntent (and Customer, when saving) there;
saved-card charges, refunds and detaching go to localstripe directly, whose
`payment_intent.*` webhooks arrive at our endpoint genuinely signed.
"""

import json
import time
from datetime import timedelta

import pytest
import requests
import stripe
from sqlalchemy import select

from gateways.base import GatewayError
from gateways.stripe import StripeGateway
from gateways.stripe.wire import sign as stripe_sign
from portal.models import (
    CustomerPaymentProfile,
    ExchangeKind,
    Job,
    LinkStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    RefundStatus,
    Role,
    utcnow,
)
from portal.services.keys import save_credentials
from portal.services.links import cancel_link
from portal.services.profiles import charge_profile
from portal.services.refunds import RefundNotAllowed, request_refund
from portal.worker.runner import wait_idle
from tests.conftest import csrf_from, gateway_lab, serving, sign_in
from tests.fakes.localstripe import register_webhook, start_localstripe
from tests.fakes.stripe_fake import FakeStripe
from tests.polling import wait_until

SECRET_KEY = "sk_test_portalStripeKey4eC39HqLyjW"
WEBHOOK_SECRET = "whsec_portalStripeSigning9f8e7d"
CREDENTIALS = {"secret_key": SECRET_KEY, "publishable_key": "pk_test_portal123",
               "webhook_secret": WEBHOOK_SECRET}


@pytest.fixture(scope="module")
def localstripe():
    with start_localstripe() as url:
        yield url


@pytest.fixture
def fake(app, localstripe):
    with FakeStripe(api_keys={SECRET_KEY}, upstream=localstripe) as server:
        app.config["PORTAL_STRIPE_API_BASE"] = server.url
        yield server


@pytest.fixture
def live(app, fake, localstripe):
    with serving(app) as url:
        fake.add_webhook(f"{url}/payments/webhook/stripe", WEBHOOK_SECRET)
        register_webhook(localstripe, "portal", f"{url}/payments/webhook/stripe",
                         WEBHOOK_SECRET)
        yield url


st_lab = gateway_lab("stripe", CREDENTIALS)


def press_pay(base: str, token: str, **form) -> tuple[requests.Session, str]:
    browser = requests.Session()
    page = browser.get(f"{base}/pay/{token}").text
    answer = browser.post(f"{base}/pay/{token}", data={"csrf_token": csrf_from(page), **form},
                          allow_redirects=False)
    assert answer.status_code == 303, answer.text
    return browser, answer.headers["Location"]


def pay(browser: requests.Session, checkout_url: str, card: str = "4242424242424242"):
    assert browser.get(checkout_url).status_code == 200
    return browser.post(checkout_url, data={"outcome": "pay", "card_number": card},
                        allow_redirects=False)


def payments_of(db, link) -> list[Payment]:
    return list(db.scalars(select(Payment).where(Payment.online_payment_id == link.id)
                          .order_by(Payment.id)))


def test_checkout_session_carries_our_reference_and_the_webhook_closes_the_link(
        app, live, fake, st_lab, build, db):
    link = build.link(st_lab, amount=150000, expires_at=utcnow() + timedelta(hours=2))
    browser, checkout_url = press_pay(live, link.token)
    assert checkout_url.startswith(f"{fake.url}/c/pay/cs_test_")
    payment = payments_of(db, link)[0]
    created = fake.requests_to("POST", "/v1/checkout/sessions")[0]
    assert created.headers["Idempotency-Key"] == f"checkout-{payment.reference}"
    form = created.form
    assert form["mode"] == "payment" and form["client_reference_id"] == payment.reference
    assert form["line_items[0][price_data][currency]"] == "inr"
    assert form["line_items[0][price_data][unit_amount]"] == "150000"
    assert form["metadata[reference]"] == payment.reference
    assert form["payment_intent_data[metadata][reference]"] == payment.reference
    assert form["customer_email"] == "asha@example.com"
    assert int(form["expires_at"]) <= link.expires_at.timestamp()
    assert form["success_url"] == (f"{live}/pay/{link.token}/return?ref={payment.reference}"
                                   "&session_id={CHECKOUT_SESSION_ID}")

    back = pay(browser, checkout_url)
    assert back.status_code == 303
    assert back.headers["Location"].endswith(f"&session_id={payment.checkout_id}")
    wait_until(lambda: fake.sent_events)
    assert fake.sent_events[0][2] == 200
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    payment = payments_of(db, link)[0]
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.gateway_transaction_id.startswith("pi_")
    exchange = db.scalar(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED))
    assert exchange.event_type == "checkout.session.completed" and exchange.signature_valid


def test_return_without_a_webhook_is_confirmed_by_retrieving_the_session(
        app, fake, st_lab, build, db):
    with serving(app) as live:  # no webhook endpoint registered: only the return remains
        link = build.link(st_lab)
        browser, checkout_url = press_pay(live, link.token)
        back = pay(browser, checkout_url)
        assert browser.get(back.headers["Location"]).status_code == 200
        db.refresh(link)
        assert link.status == LinkStatus.CREATED  # the URL alone proves nothing
        job = db.scalar(select(Job).where(Job.kind == "payment.fetch_status"))
        job.run_at = utcnow()
        db.commit()
        wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    retrieved = fake.requests_to("GET", "/v1/checkout/sessions/cs_")
    assert retrieved and retrieved[0].query.get("expand[0]") == "payment_intent.payment_method"


def test_webhook_signature_is_checked_on_the_raw_body(live, fake, st_lab, build, db):
    link = build.link(st_lab)
    press_pay(live, link.token)
    payment = payments_of(db, link)[0]
    session = {**fake.session(payment.checkout_id), "status": "complete",
               "payment_status": "paid", "payment_intent": "pi_forged"}
    body = json.dumps({"id": "evt_forged", "object": "event", "type":
                       "checkout.session.completed", "created": int(time.time()),
                       "data": {"object": session}}).encode()
    url = f"{live}/payments/webhook/stripe"
    now = int(time.time())
    for header in (stripe_sign("whsec_wrong", body, now), stripe_sign(WEBHOOK_SECRET, body,
                                                                         now - 400), ""):
        answer = requests.post(url, data=body, headers={"Stripe-Signature": header})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_signature"
    tampered = body.replace(b'"paid"', b'"paid" ')
    answer = requests.post(url, data=tampered,
                           headers={"Stripe-Signature": stripe_sign(WEBHOOK_SECRET, body, now)})
    assert answer.status_code == 400
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    genuine = {"Stripe-Signature": stripe_sign(WEBHOOK_SECRET, body, now)}
    assert requests.post(url, data=body, headers=genuine).json()["duplicate"] is False
    assert requests.post(url, data=body, headers=genuine).json()["duplicate"] is True
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == link.amount
    unrelated = json.dumps({"id": "evt_c", "object": "event", "type": "customer.created",
                            "data": {"object": {"id": "cus_1", "object": "customer"}}}).encode()
    answer = requests.post(url, data=unrelated, headers={"Stripe-Signature": "t=1,v1=00"})
    assert answer.status_code == 200 and answer.json()["ignored"]


def test_saved_card_consent_charge_and_delete(app, live, fake, localstripe, st_lab, build, db):
    link = build.link(st_lab, amount=50000)
    browser, checkout_url = press_pay(live, link.token, save_method="yes")
    form = fake.requests_to("POST", "/v1/checkout/sessions")[0].form
    assert form["customer_creation"] == "always"
    assert form["payment_intent_data[setup_future_usage]"] == "off_session"
    pay(browser, checkout_url)
    wait_until(lambda: fake.sent_events)
    wait_idle(app)  # the worker reads the saved card from the PaymentIntent
    profile = db.scalars(select(CustomerPaymentProfile)).one()
    assert (profile.brand, profile.last4, profile.exp_month) == ("visa", "4242", 12)
    assert profile.gateway_customer_id.startswith("cus_") and profile.token.startswith("pm_")
    assert profile.customer_id == link.customer_id

    # Staff charge the saved card off-session for the patient's next bill, at localstripe.
    app.config["PORTAL_STRIPE_API_BASE"] = localstripe
    second = build.link(st_lab, amount=70000, patient_name="Asha Rao")
    second.customer_id = link.customer_id
    db.commit()
    staff = app.test_client()
    build.user(st_lab, "frontdesk@acme.test", role=Role.STAFF)
    sign_in(staff, "frontdesk@acme.test")
    page = staff.get(f"/links/{second.id}").get_data(as_text=True)
    assert "Visa ending 4242" in page
    answer = staff.post(f"/links/{second.id}/saved-methods/{profile.id}/charge",
                        data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "The saved card was charged." in answer.get_data(as_text=True)
    db.refresh(second)
    assert second.status == LinkStatus.PAID
    charged = payments_of(db, second)[0]
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe})
    intent = client.v1.payment_intents.retrieve(charged.gateway_transaction_id)
    assert intent.status == "succeeded" and intent.metadata["reference"] == charged.reference
    # localstripe's own signed payment_intent.succeeded reaches us and changes nothing more
    wait_until(lambda: db.scalar(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.event_type == "payment_intent.succeeded",
        PaymentGatewayTransaction.payment_id == charged.id)))
    db.refresh(second)
    assert second.amount_paid == 70000

    page = staff.get(f"/links/{second.id}").get_data(as_text=True)
    answer = staff.post(f"/links/{second.id}/saved-methods/{profile.id}/delete",
                        data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "removed here and at the gateway" in answer.get_data(as_text=True)
    db.refresh(profile)
    assert profile.deleted_at is not None
    left = client.v1.payment_methods.list(params={"customer": profile.gateway_customer_id,
                                                  "type": "card"})
    assert [m.id for m in left.data] == []


def test_declined_saved_card_leaves_the_link_open(app, localstripe, st_lab, build, db):
    app.config["PORTAL_STRIPE_API_BASE"] = localstripe
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe})
    customer = client.v1.customers.create(params={"name": "Asha Rao"})
    method = client.v1.payment_methods.create(params={"type": "card", "card": {
        "number": "4000000000000341", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    link = build.link(st_lab)
    profile = CustomerPaymentProfile(lab_id=st_lab.id, customer_id=link.customer_id,
                                     gateway="stripe", gateway_customer_id=customer.id,
                                     token=method.id, brand="visa", last4="0341")
    db.add(profile)
    db.commit()
    payment, _ = charge_profile(db, app.config, link, profile, user_id=None)
    assert payment.status == PaymentStatus.FAILED and "declined" in payment.failure_reason
    db.refresh(link)
    assert link.status == LinkStatus.CREATED


def test_partial_and_full_refunds_at_localstripe(app, live, fake, localstripe, st_lab, build,
                                                 db):
    link = build.link(st_lab, amount=90000)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    wait_until(lambda: fake.sent_events)
    payment = payments_of(db, link)[0]
    app.config["PORTAL_STRIPE_API_BASE"] = localstripe
    first = request_refund(db, app.config, payment.id, 30000, "Patient asked")
    assert first.status == RefundStatus.SUCCEEDED and first.gateway_refund_id.startswith("re_")
    with pytest.raises(RefundNotAllowed):
        request_refund(db, app.config, payment.id, 60001)
    rest = request_refund(db, app.config, payment.id, 60000, "Overcharged")
    assert rest.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert payment.status == PaymentStatus.REFUNDED and payment.amount_refunded == 90000
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe})
    refunds = client.v1.refunds.list(params={"payment_intent": payment.gateway_transaction_id})
    assert sorted(r.amount for r in refunds.data) == [30000, 60000]
    assert {r.metadata["reference"] for r in refunds.data} == {payment.reference}


def test_refund_events_settle_a_pending_refund(app, live, fake, st_lab, build, db):
    link = build.link(st_lab, amount=90000)
    browser, checkout_url = press_pay(live, link.token)
    pay(browser, checkout_url)
    wait_until(lambda: fake.sent_events)
    payment = payments_of(db, link)[0]
    refund_obj = {"id": "re_pending1", "object": "refund", "amount": 20000, "currency": "inr",
                  "payment_intent": payment.gateway_transaction_id, "status": "pending",
                  "metadata": {"reference": payment.reference}}
    fake.refunds["re_pending1"] = refund_obj  # the fake answers the refund as pending
    refund = build.refund(payment, 20000, reference="rfd_pending1",
                          gateway_refund_id="re_pending1")
    fake.send_event("refund.updated", {**refund_obj, "status": "succeeded"})
    db.refresh(refund)
    assert refund.status == RefundStatus.SUCCEEDED
    db.refresh(payment)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED


def test_cancelling_the_link_expires_the_open_session(app, live, fake, st_lab, build, db):
    link = build.link(st_lab)
    press_pay(live, link.token)
    payment = payments_of(db, link)[0]
    cancel_link(db, link, user_id=None)
    db.commit()
    wait_idle(app)
    assert fake.session(payment.checkout_id)["status"] == "expired"


def test_gateway_errors_reach_patients_and_staff_clearly(app, live, fake, lab, build, db):
    build.connect(lab, "stripe", {**CREDENTIALS, "secret_key": "sk_test_wrongKeyForPortal777"})
    link = build.link(lab)
    browser = requests.Session()
    page = browser.get(f"{live}/pay/{link.token}").text
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert answer.status_code == 503 and "Please try again" in answer.text
    payment = payments_of(db, link)[0]
    assert payment.status == PaymentStatus.FAILED
    exchange = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.payment_id == payment.id)).one()
    assert exchange.error.startswith("Stripe: Invalid API Key provided")
    assert "sk_test_wrongKeyForPortal777" not in exchange.error + json.dumps(exchange.payload)

    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "stripe", CREDENTIALS)
    db.commit()
    fake.fail_next(500, {"type": "api_error", "message": "Something went wrong on Stripe's end."})
    assert browser.post(f"{live}/pay/{link.token}",
                        data={"csrf_token": csrf_from(page)}).status_code == 503
    answer = browser.post(f"{live}/pay/{link.token}", data={"csrf_token": csrf_from(page)},
                          allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith(fake.url)


def test_read_timeout_is_bounded(fake):
    gateway = StripeGateway(CREDENTIALS, api_base=fake.url, timeout=(2.0, 0.3))
    fake.delay_next(1.5)
    with pytest.raises(GatewayError) as caught:
        gateway.test_connection()
    assert caught.value.code == "unreachable" and caught.value.retryable


def test_admin_tests_the_connection(app, admin_client, fake, st_lab):
    page = admin_client.get("/admin/gateways/stripe").get_data(as_text=True)
    assert "/payments/webhook/stripe" in page and "checkout.session.completed" in page
    token = csrf_from(page)
    answer = admin_client.post("/admin/gateways/stripe/test", data={"csrf_token": token},
                               follow_redirects=True)
    assert "Connected to Stripe (test mode)." in answer.get_data(as_text=True)
    fake.api_keys.clear()
    answer = admin_client.post("/admin/gateways/stripe/test", data={"csrf_token": token},
                               follow_redirects=True)
    text = answer.get_data(as_text=True)
    assert "Connection failed. Stripe: Invalid API Key provided" in text
    assert SECRET_KEY not in text and WEBHOOK_SECRET not in text
