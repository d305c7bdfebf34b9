"""Payments taken at the desk: the link closes and its online checkout is cancelled."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from portal.models import (
    AuditLog,
    Job,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentStatus,
    utcnow,
)
from portal.tokens import new_reference
from portal.worker import runner
from tests.conftest import csrf_from
from tests.web.helpers import post_event, start_payment
from tests.web.test_expiry import cancellable_sandbox  # noqa: F401  the fixture


def counter_form(client, link_id: int) -> dict[str, str]:
    page = client.get(f"/links/{link_id}").get_data(as_text=True)
    fields = dict(re.findall(r'<input[^>]*name="(counter_\w+)"[^>]*value="([^"]*)"', page))
    assert {"counter_key", "counter_amount"} <= fields.keys(), "no counter form on the page"
    return {**fields, "csrf_token": csrf_from(page), "counter_method": "cash"}


def record(client, link_id: int, **changes):
    return client.post(f"/links/{link_id}/counter-payment",
                       data={**counter_form(client, link_id), **changes})


def payments_of(db, link_id: int) -> list[Payment]:
    return list(db.scalars(select(Payment).where(Payment.online_payment_id == link_id)
                           .order_by(Payment.id)))


def test_a_cash_payment_closes_the_link(staff_client, staff, build, lab, db):
    link = build.link(lab, amount=123450)
    form = counter_form(staff_client, link.id)
    assert form["counter_amount"] == "1234.50"  # defaults to what is owed
    response = record(staff_client, link.id, counter_note="Receipt 881")
    assert response.status_code == 303 and response.headers["Location"].endswith(
        f"/links/{link.id}")

    db.refresh(link)
    assert (link.status, link.amount_paid) == (LinkStatus.PAID, 123450)
    assert link.paid_at is not None and not link.needs_attention
    (payment,) = payments_of(db, link.id)
    assert (payment.gateway, payment.method, payment.status, payment.amount) == (
        "counter", "cash", PaymentStatus.SUCCEEDED, 123450)
    assert payment.succeeded_at is not None
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "payment.counter"))
    assert (entry.user_id, entry.object_id) == (staff.id, str(link.id))
    assert (entry.detail["method"], entry.detail["note"], entry.detail["amount"]) == (
        "cash", "Receipt 881", 123450)

    page = staff_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "₹1,234.50 received by cash. The bill is paid" in page
    assert "Receipt 881" in page and staff.email in page
    assert "cannot be refunded through a gateway" in page
    assert 'name="counter_amount"' not in page  # nothing left to pay


def test_the_patients_link_cannot_be_paid_again(app, client, staff_client, build, lab, db,
                                                cancellable_sandbox):  # noqa: F811
    link = build.link(lab, amount=123450)
    reference = start_payment(client, link)  # the patient opened the SMS link and pressed Pay
    assert record(staff_client, link.id, counter_method="upi").status_code == 303

    job = db.scalar(select(Job).where(Job.kind == "payment.cancel_checkout"))
    online = db.scalar(select(Payment).where(Payment.reference == reference))
    assert job.payload["payment_id"] == online.id  # queued with the payment, in its transaction
    runner.wait_idle(app)
    assert cancellable_sandbox == [(reference, f"sbx_cs_{reference}")]

    page = client.get(f"/pay/{link.token}")
    assert "Pay" not in re.findall(r"<button[^>]*>([^<]*)</button>", page.get_data(as_text=True))
    response = client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(
        client.get("/").get_data(as_text=True))})
    assert "/sandbox/checkout/" not in response.headers.get("Location", "")
    assert db.scalar(select(func.count(Payment.id)).where(
        Payment.online_payment_id == link.id)) == 2

    # Money that still arrives for the old checkout is recorded and flagged, never dropped.
    assert post_event(client, reference).status_code == 200
    db.refresh(link)
    assert link.amount_paid == 246900 and link.needs_attention
    assert link.attention_reason == "Paid twice: this link was already paid."


def test_a_part_payment_at_the_desk_leaves_the_rest_owed(staff_client, build, lab, db):
    link = build.link(lab, amount=123450)
    assert record(staff_client, link.id, counter_amount="1000",
                  counter_method="card").status_code == 303
    db.refresh(link)
    assert (link.status, link.amount_paid, link.outstanding) == (LinkStatus.PARTIALLY_PAID,
                                                                100000, 23450)
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    assert "₹1,000.00 received by card at the desk. ₹234.50 is still owed." in page
    assert 'value="234.50"' in page  # the form now offers what is still owed
    assert record(staff_client, link.id).status_code == 303
    db.refresh(link)
    assert (link.status, link.amount_paid) == (LinkStatus.PAID, 123450)
    assert [p.method for p in payments_of(db, link.id)] == ["card", "cash"]


@pytest.mark.parametrize(("amount", "message"), [
    ("1234.51", "The amount is more than what is still owed."),
    ("0", "The amount must be more than zero."),
    ("1.001", "INR amounts have at most 2 decimals."),
])
def test_bad_amounts_are_refused_with_a_message(staff_client, build, lab, db, amount, message):
    link = build.link(lab, amount=123450)
    response = record(staff_client, link.id, counter_amount=amount)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page and f'value="{amount}"' in page
    assert "<details class=\"counter-form\" open>" in page
    assert payments_of(db, link.id) == []
    db.refresh(link)
    assert link.status == LinkStatus.CREATED


def test_a_closed_link_takes_no_counter_payment(staff_client, build, lab, db):
    link = build.link(lab)
    form = counter_form(staff_client, link.id)
    link.status = LinkStatus.CANCELLED
    db.commit()
    response = staff_client.post(f"/links/{link.id}/counter-payment", data=form)
    assert response.status_code == 422
    assert "This link is cancelled and can no longer be paid." in response.get_data(as_text=True)
    assert payments_of(db, link.id) == []

    expired = build.link(lab)
    form = counter_form(staff_client, expired.id)
    expired.expires_at = utcnow()
    db.commit()
    response = staff_client.post(f"/links/{expired.id}/counter-payment", data=form)
    assert response.status_code == 422 and "This link is expired" in response.get_data(
        as_text=True)


def test_a_double_click_records_one_payment(staff_client, build, lab, db):
    link = build.link(lab, amount=123450, allow_partial=True)
    form = {**counter_form(staff_client, link.id), "counter_amount": "100"}
    for _ in range(2):
        response = staff_client.post(f"/links/{link.id}/counter-payment", data=form)
        assert response.status_code == 303
    (payment,) = payments_of(db, link.id)
    assert payment.reference == form["counter_key"]
    db.refresh(link)
    assert link.amount_paid == 10000
    assert db.scalar(select(func.count(AuditLog.id)).where(
        AuditLog.action == "payment.counter")) == 1


def test_a_form_token_of_another_link_is_refused(staff_client, build, lab, db):
    one, other = build.link(lab), build.link(lab)
    form = {**counter_form(staff_client, one.id), "counter_amount": "10"}
    assert staff_client.post(f"/links/{one.id}/counter-payment", data=form).status_code == 303
    response = staff_client.post(f"/links/{other.id}/counter-payment", data=form)
    assert response.status_code == 422
    assert "This form belongs to another link." in response.get_data(as_text=True)
    assert payments_of(db, other.id) == []


def test_another_labs_link_is_not_found(staff_client, build, db):
    other = build.lab("other")
    link = build.link(other)
    token = csrf_from(staff_client.get("/").get_data(as_text=True))
    response = staff_client.post(f"/links/{link.id}/counter-payment", data={
        "csrf_token": token, "counter_amount": "10", "counter_method": "cash",
        "counter_key": new_reference("ctr")})
    assert response.status_code == 404
    assert db.get(OnlinePayment, link.id).amount_paid == 0


def test_needs_a_signed_in_user_and_csrf(client, staff_client, build, lab, db):
    link = build.link(lab)
    form = counter_form(staff_client, link.id)
    assert staff_client.post(f"/links/{link.id}/counter-payment",
                             data={**form, "csrf_token": "x"}).status_code == 400
    anonymous = staff_client.application.test_client()
    token = csrf_from(anonymous.get("/login").get_data(as_text=True))
    response = anonymous.post(f"/links/{link.id}/counter-payment",
                              data={**form, "csrf_token": token})
    assert response.status_code == 303 and "/login" in response.headers["Location"]
    assert payments_of(db, link.id) == []
