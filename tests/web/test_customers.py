"""/customers: a lab's patients, their links and payments, and their saved payment methods."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import stripe
from sqlalchemy import func, select

import gateways
from gateways.base import Capability, EventStatus, GatewayError, GatewayEvent
from gateways.sandbox import SandboxGateway
from portal.models import (
    AuditLog,
    Customer,
    CustomerPaymentProfile,
    ExchangeKind,
    LinkStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    utcnow,
)
from tests.conftest import csrf_from
from tests.fakes.localstripe import start_localstripe

STRIPE_KEY = "sk_test_portalCustomersKey77a1"


class CardVault(SandboxGateway):
    """The sandbox, able to keep cards: records what it is asked to do."""

    display_name = "CardVault"
    capabilities = SandboxGateway.capabilities | {Capability.SAVED_METHODS}
    charges: list = []
    deleted: list = []
    answer = EventStatus.SUCCEEDED
    refuse_delete = False

    def charge_saved_method(self, charge):
        type(self).charges.append(charge)
        return GatewayEvent(dedupe_id=f"vault_{charge.reference}", type="charge",
                            reference=charge.reference, status=type(self).answer,
                            amount=charge.amount, currency=charge.currency,
                            transaction_id=f"vault_txn_{len(type(self).charges)}")

    def delete_saved_method(self, method):
        if type(self).refuse_delete:
            raise GatewayError("CardVault is down for maintenance.", retryable=True)
        type(self).deleted.append(method.token)


@pytest.fixture
def vault(monkeypatch):
    monkeypatch.setattr(CardVault, "charges", [])
    monkeypatch.setattr(CardVault, "deleted", [])
    monkeypatch.setitem(gateways.GATEWAYS, "sandbox", CardVault)
    return CardVault


def add_profile(db, link, *, gateway="sandbox", token="card_tok_1", last4="4242", **fields):
    profile = CustomerPaymentProfile(lab_id=link.lab_id, customer_id=link.customer_id,
                                     gateway=gateway, token=token,
                                     gateway_customer_id=fields.pop("gateway_customer_id",
                                                                    "cust_1"),
                                     brand=fields.pop("brand", "visa"), last4=last4,
                                     exp_month=fields.pop("exp_month", 12),
                                     exp_year=fields.pop("exp_year", 2034), **fields)
    db.add(profile)
    db.commit()
    return profile


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def names_in(html: str) -> list[str]:
    return re.findall(r'<a href="/customers/\d+">([^<]+)</a>', html)


# --- the list ----------------------------------------------------------------------------------

def test_list_is_the_labs_own_newest_first(staff_client, build, lab):
    build.link(lab, patient_name="Asha Rao", phone="+919876543210", email="asha@example.com")
    build.link(lab, patient_name="Ravi Kumar", phone="+919812345678", email="ravi@example.com")
    other = build.lab("other", name="Other Labs")
    build.link(other, patient_name="Zoya Other", phone="+919800000000", email="z@example.com")
    html = page(staff_client, "/customers")
    assert names_in(html) == ["Ravi Kumar", "Asha Rao"]
    assert "+919812345678" in html and "ravi@example.com" in html
    assert 'aria-current="page">Customers</a>' in html


@pytest.mark.parametrize("query, expected", [
    ("asha", ["Asha Rao"]),                 # any case, part of the name
    ("KUMAR", ["Ravi Kumar"]),
    ("98123 45678", ["Ravi Kumar"]),        # a mobile number as typed at the desk
    ("098123-45678", ["Ravi Kumar"]),       # with the trunk 0
    ("+919876543210", ["Asha Rao"]),
    ("ravi@EXAMPLE.com", ["Ravi Kumar"]),
    ("ASHA@", ["Asha Rao"]),                # an email from its start
    ("43210", ["Asha Rao"]),                # the last digits of a mobile number
    ("rao", ["Asha Rao"]),
    ("P-0042", ["Asha Rao"]),               # the lab's own patient id
    ("%", []),                              # wildcards are only characters
    ("a_h", []),
    ("nobody", []),
])
def test_search(staff_client, build, lab, db, query, expected):
    asha = build.link(lab, patient_name="Asha Rao", phone="+919876543210",
                      email="asha@example.com")
    asha.customer.external_id = "P-0042"
    db.commit()
    build.link(lab, patient_name="Ravi Kumar", phone="+919812345678", email="ravi@example.com")
    build.link(build.lab("other"), patient_name="Asha Other", phone="+919876543210",
               email="asha@example.com")
    html = staff_client.get("/customers", query_string={"q": query}).get_data(as_text=True)
    assert names_in(html) == expected
    if not expected:
        assert "No patient matches" in html


def test_keyset_pages_keep_the_search(staff_client, build, lab, db):
    for i in range(30):
        db.add(Customer(lab_id=lab.id, name=f"Patient {i:02d}", phone=f"+9198000000{i:02d}"))
    db.add(Customer(lab_id=lab.id, name="Somebody Else"))
    db.commit()
    first = page(staff_client, "/customers?q=patient")
    assert names_in(first) == [f"Patient {i:02d}" for i in range(29, 4, -1)]
    older = re.search(r'href="(/customers\?[^"]+)">Older customers', first).group(1)
    assert "q=patient" in older and "before=" in older
    second = page(staff_client, older.replace("&amp;", "&"))
    assert names_in(second) == [f"Patient {i:02d}" for i in range(4, -1, -1)]
    assert "Older customers" not in second and ">Newest</a>" in second


# --- one customer ------------------------------------------------------------------------------

def test_detail_shows_links_payments_and_saved_methods(staff_client, build, lab, db):
    first = build.link(lab, bill_reference="B-100", amount=50000)
    second = build.link(lab, bill_reference="B-200", amount=70000)
    db.add(Payment(lab_id=lab.id, online_payment_id=first.id, reference="pay_a1", amount=50000,
                   currency="INR", gateway="sandbox", status=PaymentStatus.SUCCEEDED,
                   gateway_transaction_id="txn_981", card_brand="visa", card_last4="4242"))
    db.commit()
    add_profile(db, first)
    html = page(staff_client, f"/customers/{first.customer_id}")
    assert "<h1>Asha Rao</h1>" in html and "+919876543210" in html
    assert html.index("B-200") < html.index("B-100")  # newest link first
    assert f'href="/links/{second.id}">B-200</a>' in html
    assert "₹500.00" in html and "₹700.00" in html
    assert "txn_981" not in html  # the gateway's id is for admins
    assert "Visa ending 4242" in html and "12/2034" in html
    assert "Delete<span class=\"visually-hidden\"> Visa ending 4242" in html


def test_another_labs_customer_is_not_found(staff_client, build, lab, db):
    other_link = build.link(build.lab("other"))
    profile = add_profile(db, other_link)
    own = build.link(lab)
    token = csrf_from(page(staff_client, f"/customers/{own.customer_id}"))
    assert staff_client.get(f"/customers/{other_link.customer_id}").status_code == 404
    assert staff_client.post(f"/customers/{other_link.customer_id}/profiles/{profile.id}"
                             "/delete", data={"csrf_token": token}).status_code == 404
    # the other lab's profile through our own customer's URL
    assert staff_client.post(f"/customers/{own.customer_id}/profiles/{profile.id}/delete",
                             data={"csrf_token": token}).status_code == 404
    assert staff_client.post(f"/customers/{other_link.customer_id}/charge",
                             data={"csrf_token": token, "profile_id": profile.id,
                                   "link_id": other_link.id}).status_code == 404
    db.refresh(profile)
    assert profile.deleted_at is None


def test_pages_need_a_sign_in(client, build, lab):
    link = build.link(lab)
    assert client.get("/customers").status_code == 302
    assert client.get(f"/customers/{link.customer_id}").status_code == 302


# --- saved methods: charge and delete ----------------------------------------------------------

def test_staff_charge_a_saved_method_for_an_open_link(staff_client, vault, build, lab, db,
                                                      staff):
    paid = build.link(lab, bill_reference="B-OLD")
    paid.status = LinkStatus.PAID
    db.commit()
    link = build.link(lab, bill_reference="B-OPEN", amount=70000)
    late = build.link(lab, bill_reference="B-LATE")
    late.expires_at = utcnow() - timedelta(minutes=1)  # open, but past its expiry
    db.commit()
    profile = add_profile(db, link)
    html = page(staff_client, f"/customers/{link.customer_id}")
    options = re.findall(r'<option value="(\d+)">([^<]+)</option>', html)
    assert options == [(str(profile.id), "Visa ending 4242, expires 12/2034 (CardVault)"),
                       (str(link.id), "Bill B-OPEN: ₹700.00 due")]  # only open bills
    answer = staff_client.post(f"/customers/{link.customer_id}/charge", data={
        "csrf_token": csrf_from(html), "profile_id": profile.id, "link_id": link.id})
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/customers/{link.customer_id}"
    assert "Visa ending 4242, expires 12/2034 (CardVault) was charged for bill B-OPEN." \
        in page(staff_client, f"/customers/{link.customer_id}")
    [charge] = vault.charges
    assert (charge.amount, charge.currency, charge.method.token) == (70000, "INR", "card_tok_1")
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 70000
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "payment_profile.charge"))
    assert entry.user_id == staff.id and entry.ip_address == "127.0.0.1"
    [exchange] = db.scalars(select(PaymentGatewayTransaction))
    assert (exchange.kind, exchange.success, exchange.signature_valid) == \
        (ExchangeKind.CHARGE_REQUESTED, True, None)


def test_a_refused_charge_fails_the_payment_and_is_recorded_masked(staff_client, vault, build,
                                                                   lab, db, monkeypatch):
    secret = "whsec_" + "x" * 24

    def refuse(self, charge):
        raise GatewayError(f"card declined for key {secret}", code="card_declined",
                           raw={"echo": secret})

    monkeypatch.setattr(CardVault, "charge_saved_method", refuse)
    monkeypatch.setattr(CardVault, "secret_values",
                        classmethod(lambda cls, credentials: [secret]))
    link = build.link(lab)
    profile = add_profile(db, link)
    html = charge_from_patient_page(staff_client, link, profile)
    assert "card declined" in html and secret not in html
    payment = db.scalar(select(Payment))
    assert payment.status == PaymentStatus.FAILED and secret not in payment.failure_reason
    [exchange] = db.scalars(select(PaymentGatewayTransaction))
    assert (exchange.kind, exchange.success, exchange.payload["code"]) == \
        (ExchangeKind.CHARGE_REQUESTED, False, "card_declined")
    assert secret not in exchange.error + str(exchange.payload)
    db.refresh(link)
    assert link.status == LinkStatus.CREATED


def test_a_second_charge_waits_for_the_first(staff_client, vault, build, lab, db, monkeypatch):
    """A double-click (or a second desk) while the gateway is still processing: one charge."""
    monkeypatch.setattr(CardVault, "answer", EventStatus.PENDING)
    link = build.link(lab)
    profile = add_profile(db, link)
    data = {"csrf_token": csrf_from(page(staff_client, f"/customers/{link.customer_id}")),
            "profile_id": profile.id, "link_id": link.id}
    staff_client.post(f"/customers/{link.customer_id}/charge", data=data)
    again = staff_client.post(f"/customers/{link.customer_id}/charge", data=data,
                              follow_redirects=True).get_data(as_text=True)
    assert "already in progress" in again
    assert len(vault.charges) == 1
    assert db.scalar(select(func.count(Payment.id))) == 1


def charge_from_patient_page(staff_client, link, profile) -> str:
    """Staff's Charge on the patient's page; the page it lands on."""
    html = page(staff_client, f"/customers/{link.customer_id}")
    return staff_client.post(f"/customers/{link.customer_id}/charge", follow_redirects=True,
                             data={"csrf_token": csrf_from(html), "profile_id": profile.id,
                                   "link_id": link.id}).get_data(as_text=True)


def test_declined_charge_leaves_the_link_open(staff_client, vault, build, lab, db,
                                              monkeypatch):
    monkeypatch.setattr(CardVault, "answer", EventStatus.FAILED)
    link = build.link(lab, bill_reference="B-9")
    profile = add_profile(db, link)
    html = charge_from_patient_page(staff_client, link, profile)
    assert "The saved method was declined for bill B-9" in html
    db.refresh(link)
    assert link.status == LinkStatus.CREATED


@pytest.mark.parametrize("field, value, message", [
    ("link_id", "bad", "Choose one of the patient&#39;s open bills."),
    ("link_id", "paid", "Choose one of the patient&#39;s open bills."),
    ("link_id", "someone_else", "Choose one of the patient&#39;s open bills."),
    ("profile_id", "999999", "Choose one of the patient&#39;s saved methods."),
])
def test_charge_form_refuses_what_is_not_offered(staff_client, vault, build, lab, db, field,
                                                 value, message):
    link = build.link(lab)
    paid = build.link(lab)
    paid.status = LinkStatus.PAID
    someone_else = build.link(lab, patient_name="Ravi", phone="+919812345678",
                              email="ravi@example.com")
    db.commit()
    profile = add_profile(db, link)
    data = {"csrf_token": csrf_from(page(staff_client, f"/customers/{link.customer_id}")),
            "profile_id": profile.id, "link_id": link.id}
    data[field] = {"paid": paid.id, "someone_else": someone_else.id}.get(value, value)
    answer = staff_client.post(f"/customers/{link.customer_id}/charge", data=data)
    assert answer.status_code == 422
    assert message in answer.get_data(as_text=True)
    assert vault.charges == []


def test_charge_needs_csrf(staff_client, vault, build, lab, db):
    link = build.link(lab)
    profile = add_profile(db, link)
    answer = staff_client.post(f"/customers/{link.customer_id}/charge",
                               data={"profile_id": profile.id, "link_id": link.id})
    assert answer.status_code == 400 and vault.charges == []


def test_no_charge_where_the_gateway_keeps_no_saved_methods(staff_client, build, lab, db):
    """The plain sandbox cannot charge a saved method: no form, and a forged post is refused."""
    link = build.link(lab)
    profile = add_profile(db, link)
    html = page(staff_client, f"/customers/{link.customer_id}")
    assert "Charge saved method</button>" not in html
    assert "None of these methods is on a gateway that can charge saved methods." in html
    answer = staff_client.post(f"/customers/{link.customer_id}/charge", data={
        "csrf_token": csrf_from(html), "profile_id": profile.id, "link_id": link.id})
    assert answer.status_code == 422
    assert db.scalar(select(func.count(Payment.id))) == 0


def test_delete_removes_the_method_at_the_gateway_and_here(staff_client, vault, build, lab,
                                                           db, staff):
    link = build.link(lab)
    profile = add_profile(db, link, token="card_tok_9")
    html = page(staff_client, f"/customers/{link.customer_id}")
    answer = staff_client.post(f"/customers/{link.customer_id}/profiles/{profile.id}/delete",
                               data={"csrf_token": csrf_from(html)}, follow_redirects=True)
    assert "Visa ending 4242, expires 12/2034 (CardVault) was removed here and at CardVault." \
        in answer.get_data(as_text=True)
    assert vault.deleted == ["card_tok_9"]
    db.refresh(profile)
    assert profile.deleted_at is not None
    assert "has no saved payment method" in page(staff_client, f"/customers/{link.customer_id}")
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "payment_profile.delete"))
    assert entry.user_id == staff.id and entry.detail["profile_id"] == profile.id


def test_delete_refused_by_the_gateway_keeps_the_method(staff_client, vault, build, lab, db,
                                                        monkeypatch):
    monkeypatch.setattr(CardVault, "refuse_delete", True)
    link = build.link(lab)
    profile = add_profile(db, link)
    html = staff_client.post(f"/customers/{link.customer_id}/profiles/{profile.id}/delete",
                             data={"csrf_token": csrf_from(page(
                                 staff_client, f"/customers/{link.customer_id}"))},
                             follow_redirects=True).get_data(as_text=True)
    assert "was not removed: CardVault is down for maintenance." in html
    db.refresh(profile)
    assert profile.deleted_at is None


def test_gateway_no_longer_set_up_is_said_plainly(staff_client, build, lab, db):
    """A card saved through Stripe, whose keys the lab has since removed: a message, not a 500."""
    link = build.link(lab)
    profile = add_profile(db, link, gateway="stripe")
    html = staff_client.post(f"/customers/{link.customer_id}/profiles/{profile.id}/delete",
                             data={"csrf_token": csrf_from(page(
                                 staff_client, f"/customers/{link.customer_id}"))},
                             follow_redirects=True).get_data(as_text=True)
    assert "was not removed: The lab has not set up Stripe yet." in html
    db.refresh(profile)
    assert profile.deleted_at is None


# --- the patient's consent on the pay page -----------------------------------------------------

def test_pay_page_asks_consent_naming_the_lab_and_the_gateway(client, vault, build, lab):
    link = build.link(lab)
    html = page(client, f"/pay/{link.token}")
    assert ('<label for="save_method">Save my card with CardVault (the payment provider of '
            'Acme Diagnostics) so that Acme Diagnostics can charge my future bills to it '
            'without asking me again.') in html
    assert '<input type="checkbox" id="save_method" name="save_method" value="yes">' in html


def test_pay_page_offers_no_saving_where_the_gateway_cannot(client, build, lab):
    html = page(client, f"/pay/{build.link(lab).token}")
    assert "save_method" not in html and "Save my card" not in html


# --- real HTTP: Stripe's saved cards at localstripe ---------------------------------------------

@pytest.fixture(scope="module")
def localstripe():
    with start_localstripe() as url:
        yield url


def test_charge_and_delete_at_localstripe(app, staff_client, localstripe, build, lab, db):
    app.config["PORTAL_STRIPE_API_BASE"] = localstripe
    build.connect(lab, "stripe", {"secret_key": STRIPE_KEY, "publishable_key": "pk_test_x",
                                  "webhook_secret": "whsec_customers_test"})
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": localstripe})
    customer = client.v1.customers.create(params={"name": "Asha Rao"})
    method = client.v1.payment_methods.create(params={"type": "card", "card": {
        "number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    link = build.link(lab, bill_reference="B-STRIPE", amount=65000)
    profile = add_profile(db, link, gateway="stripe", token=method.id,
                          gateway_customer_id=customer.id)

    html = page(staff_client, f"/customers/{link.customer_id}")
    assert "Visa ending 4242, expires 12/2034 (Stripe)" in html
    answer = staff_client.post(f"/customers/{link.customer_id}/charge", follow_redirects=True,
                               data={"csrf_token": csrf_from(html), "profile_id": profile.id,
                                     "link_id": link.id})
    assert "(Stripe) was charged for bill B-STRIPE." in answer.get_data(as_text=True)
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 65000
    payment = db.scalars(select(Payment).where(Payment.online_payment_id == link.id)).one()
    intent = client.v1.payment_intents.retrieve(payment.gateway_transaction_id)
    assert intent.status == "succeeded" and intent.amount == 65000
    assert intent.metadata["reference"] == payment.reference

    answer = staff_client.post(f"/customers/{link.customer_id}/profiles/{profile.id}/delete",
                               data={"csrf_token": csrf_from(html)}, follow_redirects=True)
    assert "was removed here and at Stripe." in answer.get_data(as_text=True)
    left = client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert [m.id for m in left.data] == []
