"""An admin refunds part of a payment from its page, in a real browser."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import select

from portal.models import PaymentStatus, Refund, RefundStatus, Role
from tests.browser.test_axe import audit  # noqa: F401  the axe-core fixture
from tests.web.test_refunds_ui import paid_payment, refunded_at_gateway


def test_admin_refunds_part_of_a_payment(page, live_server, build, lab, admin, db, sign_in):
    payment = paid_payment(build, db, lab, amount=123450)
    sign_in(page, admin.email)
    page.goto(live_server(f"/transactions/{payment.id}"))

    refunds = page.get_by_role("region", name="Refunds")
    expect(refunds).to_contain_text("No refunds yet.")
    amount = refunds.get_by_label("Amount to refund")
    expect(amount).to_have_value("1234.50")
    amount.fill("1234.51")
    refunds.get_by_role("button", name="Refund", exact=True).click()
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_have_accessible_description(
        re.compile("The refund is more than what remains refundable."))

    amount.fill("234.50")
    refunds.get_by_label("Reason").select_option("Test dropped from the bill")
    refunds.get_by_role("button", name="Refund", exact=True).dblclick()  # an impatient admin

    # The browser follows the second click's answer, which may come while the first request
    # is still talking to the gateway: then it reports the same refund as accepted or on its way.
    expect(page.get_by_role("status")).to_contain_text(
        re.compile(r"₹234\.50 refunded\.|accepted the refund of ₹234\.50"
                   r"|refund of ₹234\.50 is being sent"))
    row = refunds.get_by_role("row").filter(has_text="Test dropped from the bill")
    for _ in range(20):
        page.reload()
        expect(row).to_have_count(1)
        if "Succeeded" in row.inner_text():
            break
    expect(row).to_contain_text("₹234.50")
    expect(row).to_contain_text("Succeeded")
    expect(row).to_contain_text(admin.email)
    expect(page.get_by_test_id("refundable")).to_have_text("₹1,000.00")
    expect(amount).to_have_value("1000.00")  # the next refund defaults to what is left

    (refund,) = db.scalars(select(Refund).where(Refund.payment_id == payment.id)).all()
    assert (refund.status, refund.amount) == (RefundStatus.SUCCEEDED, 23450)
    db.refresh(payment)
    assert (payment.status, payment.amount_refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 23450)
    assert refunded_at_gateway(db, payment) == 23450


def test_refund_section_has_no_violations(audit, live_server, build, lab, admin, db,  # noqa: F811
                                          sign_in):
    lab.refund_approval_threshold = 10000
    db.commit()
    other = build.user(lab, "second@acme.test", role=Role.ADMIN)
    payment = paid_payment(build, db, lab)
    build.refund(payment, 50000, reference="rfd_" + "0" * 24, reason="Billing error",
                 requested_by_id=other.id, status=RefundStatus.AWAITING_APPROVAL)
    page = audit.context.new_page()
    sign_in(page, admin.email)
    page.goto(live_server(f"/transactions/{payment.id}"))
    expect(page.get_by_role("button", name="Approve the refund of ₹500.00")).to_be_visible()
    assert audit("", page=page) == []
