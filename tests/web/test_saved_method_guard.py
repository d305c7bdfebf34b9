"""A saved card is charged once: a second press while the first charge is pending is refused."""

from sqlalchemy import func, select

from portal.models import CustomerPaymentProfile, Payment, PaymentStatus
from portal.services.keys import save_credentials
from tests.conftest import csrf_from

STRIPE = {"secret_key": "sk_test_guard", "publishable_key": "pk_test_guard",
          "webhook_secret": "whsec_guard"}


def test_second_charge_from_the_link_page_waits_for_the_first(app, db, lab, build,
                                                               staff_client):
    app.config["PORTAL_STRIPE_API_BASE"] = "http://127.0.0.1:9"  # never a real gateway
    save_credentials(db, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "stripe", STRIPE,
                     make_default=False)
    link = build.link(lab)
    profile = CustomerPaymentProfile(lab_id=lab.id, customer_id=link.customer_id,
                                     gateway="stripe", gateway_customer_id="cus_1",
                                     token="pm_1", brand="visa", last4="4242")
    db.add(profile)
    db.add(Payment(lab_id=lab.id, online_payment_id=link.id, reference="pay_inflight1",
                   amount=link.amount, currency=link.currency, gateway="stripe",
                   status=PaymentStatus.PENDING, method="saved_card"))
    db.commit()
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    answer = staff_client.post(f"/links/{link.id}/saved-methods/{profile.id}/charge",
                               data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    assert "already in progress" in answer.get_data(as_text=True)
    assert db.scalar(select(func.count()).select_from(Payment)) == 1
