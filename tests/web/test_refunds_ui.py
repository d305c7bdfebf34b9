"""Refunds from /transactions/<id>: limits, double submits, approval by a second admin, access."""

from __future__ import annotations

import re
import secrets

import pytest
from sqlalchemy import func, select

from portal.models import (
    AuditLog,
    LinkStatus,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    Role,
    SandboxCharge,
)
from portal.services.refunds import DEFAULT_REFUND_REASONS
from portal.tokens import new_reference
from tests.conftest import csrf_from, serving, sign_in


def paid_payment(build, db, lab, *, amount: int = 123450, gateway: str = "sandbox",
                 method: str | None = None) -> Payment:
    """A link paid in full by one payment; for the sandbox, its charge on the gateway's side."""
    link = build.link(lab, amount=amount)
    payment = build.payment(link, gateway=gateway, method=method,
                            gateway_transaction_id=f"sbx_evt_{secrets.token_hex(6)}")
    link.amount_paid, link.status = amount, LinkStatus.PAID
    if gateway == "sandbox":
        db.add(SandboxCharge(reference=payment.reference, status="succeeded", amount=amount,
                             currency=link.currency, event_id=f"evt_{secrets.token_hex(6)}"))
    db.commit()
    return payment


def refunded_at_gateway(db, payment: Payment) -> int:
    """What the sandbox itself has refunded on this payment's charge."""
    return db.scalar(select(SandboxCharge.amount_refunded).where(
        SandboxCharge.reference == payment.reference).execution_options(populate_existing=True))


@pytest.fixture
def live(app):
    """The app over HTTP too: the sandbox gateway's refund API is served by the app itself."""
    with serving(app) as url:
        yield url


def refund_form(client, payment_id: int) -> dict[str, str]:
    """The refund form's fields as the page renders them (CSRF, token, default amount)."""
    page = client.get(f"/transactions/{payment_id}").get_data(as_text=True)
    fields = dict(re.findall(r'<input[^>]*name="(refund_\w+|csrf_token)"[^>]*value="([^"]*)"',
                             page))
    assert {"refund_key", "refund_amount"} <= fields.keys(), "no refund form on the page"
    fields["csrf_token"] = csrf_from(page)
    fields["refund_reason"] = DEFAULT_REFUND_REASONS[0]
    return fields


def post_refund(client, payment_id: int, **changes):
    data = {**refund_form(client, payment_id), **changes}
    return client.post(f"/transactions/{payment_id}/refund", data=data)


def refunds_of(db, payment_id: int) -> list[Refund]:
    return list(db.scalars(select(Refund).where(Refund.payment_id == payment_id)
                           .order_by(Refund.id)))


def audit_actions(db, lab_id: int) -> list[str]:
    return list(db.scalars(select(AuditLog.action).where(AuditLog.lab_id == lab_id,
                                                         AuditLog.action.like("refund.%"))
                           .order_by(AuditLog.id)))


def test_admin_refunds_part_of_a_payment_paid_over_http(app, live, build, lab, admin,
                                                        admin_client, db):
    from portal.worker.runner import wait_idle
    from tests.gateways.test_sandbox_http import choose, press_pay

    link = build.link(lab, amount=123450)
    browser, checkout_url = press_pay(live, link.token)
    choose(browser, checkout_url, "pay")
    wait_idle(app)  # the signed webhook marks the payment succeeded
    payment = db.scalar(select(Payment).where(Payment.online_payment_id == link.id))
    assert payment.status == PaymentStatus.SUCCEEDED

    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert 'value="1234.50"' in page  # the whole remaining amount, in major units
    for reason in DEFAULT_REFUND_REASONS:
        assert f">{reason}</option>" in page

    response = post_refund(admin_client, payment.id, refund_amount="200.00",
                           refund_reason="Billing error")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/transactions/{payment.id}#refunds")
    (refund,) = refunds_of(db, payment.id)
    assert (refund.status, refund.amount, refund.reason) == (RefundStatus.SUCCEEDED, 20000,
                                                             "Billing error")
    assert refund.gateway_refund_id.startswith("rf_") and refund.requested_by_id == admin.id
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 20000)
    assert refunded_at_gateway(db, payment) == 20000  # at the gateway

    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "₹200.00 refunded." in page
    assert re.search(r'data-testid="refundable">₹1,034.50<', page)
    assert 'value="1034.50"' in page and "Billing error" in page and admin.email in page
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "refund.request"))
    assert (entry.user_id, entry.object_id, entry.detail["amount"]) == (admin.id,
                                                                        str(refund.id), 20000)


def test_more_than_remains_is_refused_with_a_message(live, build, lab, admin_client, db):
    payment = paid_payment(build, db, lab)
    assert post_refund(admin_client, payment.id, refund_amount="300").status_code == 303

    response = post_refund(admin_client, payment.id, refund_amount="934.51")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "The refund is more than what remains refundable." in page
    assert 'value="934.51"' in page and 'aria-invalid="true"' in page  # the form as sent
    for text, message in (("0", "The amount must be more than zero."),
                          ("12.345", "INR amounts have at most 2 decimals."),
                          ("ten", "Enter the amount as a number")):
        response = post_refund(admin_client, payment.id, refund_amount=text)
        assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert [r.amount for r in refunds_of(db, payment.id)] == [30000]

    # Exactly what remains is allowed, and then nothing is left to refund: no form.
    assert post_refund(admin_client, payment.id, refund_amount="934.50").status_code == 303
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.REFUNDED, 123450)
    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert "Refund this payment" not in page and 'name="refund_amount"' not in page


def test_a_double_submit_makes_one_refund(live, build, lab, admin_client, db):
    payment = paid_payment(build, db, lab)
    form = {**refund_form(admin_client, payment.id), "refund_amount": "100"}
    first = admin_client.post(f"/transactions/{payment.id}/refund", data=form)
    second = admin_client.post(f"/transactions/{payment.id}/refund", data=form)
    assert first.status_code == second.status_code == 303
    (refund,) = refunds_of(db, payment.id)
    assert refund.reference == form["refund_key"]  # the form's token names the refund
    assert refunded_at_gateway(db, payment) == 10000  # sent once
    assert audit_actions(db, payment.lab_id) == ["refund.request"]

    # A new form (a new token) is a new refund.
    assert post_refund(admin_client, payment.id, refund_amount="100").status_code == 303
    assert len(refunds_of(db, payment.id)) == 2


def test_a_second_press_while_the_first_is_still_sending_says_so(live, build, lab,
                                                                  admin_client, db):
    payment = paid_payment(build, db, lab)
    form = {**refund_form(admin_client, payment.id), "refund_amount": "100"}
    # The first press's refund, written and not yet answered by the gateway.
    build.refund(payment, 10000, status=RefundStatus.PENDING, reference=form["refund_key"])
    second = admin_client.post(f"/transactions/{payment.id}/refund", data=form,
                               follow_redirects=True)
    page = second.get_data(as_text=True)
    assert "The refund of ₹100.00 is being sent to the gateway." in page
    assert "did not answer" not in page
    assert len(refunds_of(db, payment.id)) == 1


def test_a_form_token_cannot_be_reused_on_another_payment(live, build, lab, admin_client, db):
    one, other = paid_payment(build, db, lab), paid_payment(build, db, lab)
    form = {**refund_form(admin_client, one.id), "refund_amount": "100"}
    assert admin_client.post(f"/transactions/{one.id}/refund", data=form).status_code == 303
    response = admin_client.post(f"/transactions/{other.id}/refund",
                                 data={**form, "csrf_token": refund_form(admin_client,
                                                                         other.id)["csrf_token"]})
    assert response.status_code == 422
    assert "This refund form belongs to another payment." in response.get_data(as_text=True)
    assert refunds_of(db, other.id) == []

    response = post_refund(admin_client, other.id, refund_key="not-a-token")
    assert response.status_code == 422 and "This form is not valid" in response.get_data(
        as_text=True)


def test_reasons_come_from_the_lab_list(live, build, lab, admin_client, db):
    lab.refund_reasons = ["Sample haemolysed", "Test not done"]
    db.commit()
    payment = paid_payment(build, db, lab)
    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert ">Sample haemolysed</option>" in page and ">Test not done</option>" in page
    assert "Billing error" not in page

    response = post_refund(admin_client, payment.id, refund_reason="Billing error")
    assert response.status_code == 422 and refunds_of(db, payment.id) == []
    assert post_refund(admin_client, payment.id, refund_reason="Test not done",
                       refund_amount="10").status_code == 303
    assert refunds_of(db, payment.id)[0].reason == "Test not done"


@pytest.fixture
def second_admin(build, lab):
    return build.user(lab, "second@acme.test", role=Role.ADMIN)


@pytest.fixture
def second_client(app, second_admin):
    client = app.test_client()
    assert sign_in(client, second_admin.email).status_code == 302
    return client


def approve(client, refund_id: int, action: str = "approve"):
    page = client.get("/").get_data(as_text=True)
    return client.post(f"/refunds/{refund_id}/{action}", data={"csrf_token": csrf_from(page)})


def test_a_refund_above_the_threshold_waits_for_a_second_admin(live, build, lab, admin,
                                                               admin_client, second_admin,
                                                               second_client, db):
    lab.refund_approval_threshold = 50000  # ₹500
    db.commit()
    payment = paid_payment(build, db, lab)
    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert "Refunds over ₹500.00 wait for a second admin" in page

    # At the threshold: sent at once.
    assert post_refund(admin_client, payment.id, refund_amount="500").status_code == 303
    # Above it: held, not sent, but already counted against what remains.
    response = post_refund(admin_client, payment.id, refund_amount="600")
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The refund of ₹600.00 waits for another admin to approve it." in page
    small, held = refunds_of(db, payment.id)
    assert small.status == RefundStatus.SUCCEEDED and small.approved_by_id is None
    assert held.status == RefundStatus.AWAITING_APPROVAL and held.gateway_refund_id is None
    assert refunded_at_gateway(db, payment) == 50000
    assert re.search(r'data-testid="refundable">₹134.50<', page)
    assert "Another admin must approve your request." in page
    assert f'action="/refunds/{held.id}/approve"' not in page  # not for the requester
    assert post_refund(admin_client, payment.id, refund_amount="134.51").status_code == 422

    # The requester cannot approve it, even by posting the URL.
    response = approve(admin_client, held.id)
    assert response.status_code == 303
    assert "another admin must approve it" in admin_client.get(
        response.headers["Location"]).get_data(as_text=True)
    db.refresh(held)
    assert held.status == RefundStatus.AWAITING_APPROVAL

    # A second admin sees it and approves: only now is it sent.
    page = second_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert f'action="/refunds/{held.id}/approve"' in page
    assert approve(second_client, held.id).status_code == 303
    db.refresh(held)
    assert (held.status, held.approved_by_id, held.requested_by_id) == (
        RefundStatus.SUCCEEDED, second_admin.id, admin.id)
    assert refunded_at_gateway(db, payment) == 110000
    assert approve(second_client, held.id).status_code == 303  # twice: nothing more happens
    assert refunded_at_gateway(db, payment) == 110000
    assert audit_actions(db, lab.id) == ["refund.request", "refund.request", "refund.approve"]
    entry = db.scalar(select(AuditLog).where(AuditLog.action == "refund.approve"))
    assert (entry.user_id, entry.detail["requested_by"]) == (second_admin.id, admin.id)


def test_a_held_refund_can_be_rejected_or_withdrawn(live, build, lab, admin, admin_client,
                                                    second_admin, second_client, db):
    lab.refund_approval_threshold = 0  # every refund needs a second admin
    db.commit()
    payment = paid_payment(build, db, lab)
    post_refund(admin_client, payment.id, refund_amount="1000")
    (held,) = refunds_of(db, payment.id)
    assert approve(second_client, held.id, "reject").status_code == 303
    db.refresh(held)
    assert (held.status, held.approved_by_id) == (RefundStatus.REJECTED, second_admin.id)
    assert approve(second_client, held.id).status_code == 303  # a rejected refund stays so
    db.refresh(held)
    assert held.status == RefundStatus.REJECTED
    assert refunded_at_gateway(db, payment) == 0
    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert re.search(r'data-testid="refundable">₹1,234.50<', page)  # released
    assert "Rejected" in page and f"{second_admin.email} (rejected)" in page

    post_refund(admin_client, payment.id, refund_amount="10")
    mine = refunds_of(db, payment.id)[-1]
    assert approve(admin_client, mine.id, "reject").status_code == 303  # the requester withdraws
    db.refresh(mine)
    assert mine.status == RefundStatus.REJECTED
    assert mine.failure_reason == "Withdrawn by the requester."
    entries = db.scalars(select(AuditLog).where(AuditLog.action == "refund.reject")
                         .order_by(AuditLog.id)).all()
    assert [(e.user_id, e.detail["withdrawn"]) for e in entries] == [(second_admin.id, False),
                                                                    (admin.id, True)]


def test_staff_see_refunds_but_no_form_and_get_403(live, build, lab, staff_client, db):
    lab.refund_approval_threshold = 0
    db.commit()
    payment = paid_payment(build, db, lab)
    held = build.refund(payment, 1000, reason="Billing error",
                        status=RefundStatus.AWAITING_APPROVAL)
    page = staff_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert "Refunds" in page and "Billing error" in page and "Awaiting approval" in page
    assert 'name="refund_amount"' not in page and "/refund" not in page
    assert f"/refunds/{held.id}/" not in page
    token = csrf_from(page)
    for url in (f"/transactions/{payment.id}/refund", f"/refunds/{held.id}/approve",
                f"/refunds/{held.id}/reject"):
        response = staff_client.post(url, data={"csrf_token": token, "refund_amount": "1",
                                                "refund_key": new_reference("rfd")})
        assert response.status_code == 403, url
    db.refresh(held)
    assert held.status == RefundStatus.AWAITING_APPROVAL
    assert db.scalar(select(func.count(Refund.id))) == 1


def test_another_labs_payment_and_refund_are_not_found(live, build, lab, admin_client, db):
    other = build.lab("other")
    payment = paid_payment(build, db, other)
    held = build.refund(payment, 1000, status=RefundStatus.AWAITING_APPROVAL)
    token = csrf_from(admin_client.get("/").get_data(as_text=True))
    for url in (f"/transactions/{payment.id}/refund", f"/refunds/{held.id}/approve",
                f"/refunds/{held.id}/reject"):
        response = admin_client.post(url, data={"csrf_token": token, "refund_amount": "1",
                                                "refund_key": new_reference("rfd"),
                                                "refund_reason": "Billing error"})
        assert response.status_code == 404, url
    db.refresh(held)
    assert held.status == RefundStatus.AWAITING_APPROVAL and len(refunds_of(db, payment.id)) == 1


def test_a_counter_payment_is_not_refunded_through_a_gateway(build, lab, admin_client, db):
    payment = paid_payment(build, db, lab, gateway="counter", method="cash")
    page = admin_client.get(f"/transactions/{payment.id}").get_data(as_text=True)
    assert "A counter payment cannot be refunded through a gateway." in page
    assert 'name="refund_amount"' not in page
    form = {"csrf_token": csrf_from(page), "refund_amount": "10",
            "refund_reason": DEFAULT_REFUND_REASONS[0], "refund_key": new_reference("rfd")}
    response = admin_client.post(f"/transactions/{payment.id}/refund", data=form)
    assert response.status_code == 422
    assert "refunded at the desk, not through a gateway" in response.get_data(as_text=True)
    assert refunds_of(db, payment.id) == []


def test_a_gateway_without_keys_fails_the_refund_with_its_reason(build, lab, admin_client, db):
    from portal.models import PaymentGatewayKeys

    payment = paid_payment(build, db, lab)
    db.get(PaymentGatewayKeys, db.scalar(select(PaymentGatewayKeys.id))).enabled = False
    db.commit()
    response = post_refund(admin_client, payment.id, refund_amount="10")
    assert response.status_code == 303
    (refund,) = refunds_of(db, payment.id)
    assert refund.status == RefundStatus.FAILED and "has not set up" in refund.failure_reason
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The gateway refused the refund of ₹10.00" in page
    assert re.search(r'data-testid="refundable">₹1,234.50<', page)  # a failed refund frees it
