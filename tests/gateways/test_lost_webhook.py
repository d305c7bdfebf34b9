"""A webhook that never arrives: only the worker's reconciliation closes the link."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.models import (
    ExchangeKind,
    Job,
    LinkStatus,
    OutboxStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    utcnow,
)
from portal.services.expiry import expire_links
from portal.worker import runner
from tests.conftest import serving
from tests.gateways.test_sandbox_http import choose, press_pay


@pytest.fixture
def live(app):
    with serving(app) as url:
        yield url


def lose_the_webhook(db) -> None:
    lost = db.scalars(select(Job).where(Job.kind == "sandbox.deliver_webhook")).all()
    assert len(lost) == 1
    lost[0].status = OutboxStatus.DEAD
    db.commit()


def run_reconciliation(app, db) -> None:
    """The first check falls due, and the worker runs its periodic scan and the checks."""
    db.scalar(select(Payment)).next_check_at = utcnow() - timedelta(seconds=1)
    db.commit()
    runner.schedule_periodic(app.extensions["portal_db"].session_factory(),
                           kinds=["reconciliation.scan"])
    runner.wait_idle(app)


def inbox(db, kind):
    return db.scalars(select(PaymentGatewayTransaction)
                      .where(PaymentGatewayTransaction.kind == kind)).all()


def test_only_reconciliation_closes_the_link(app, live, build, lab, db):
    link = build.link(lab)
    browser, checkout_url = press_pay(live, link.token)
    answer = choose(browser, checkout_url, "pay")
    assert answer.status_code == 303  # the patient paid, then closed the tab: no return page
    lose_the_webhook(db)
    runner.wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.CREATED
    assert db.scalar(select(Job).where(Job.kind == "payment.fetch_status")) is None

    run_reconciliation(app, db)

    db.refresh(link)
    payment = db.scalar(select(Payment))
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450
    assert payment.status == PaymentStatus.SUCCEEDED and payment.next_check_at is None
    assert inbox(db, ExchangeKind.WEBHOOK_RECEIVED) == []
    [poll] = inbox(db, ExchangeKind.STATUS_FETCHED)
    assert (poll.outcome, poll.signature_valid, poll.success) == \
        ("payment succeeded; link paid", None, True)
    # Asked once more later, nothing changes: the payment is final and no more checks are due.
    run_reconciliation(app, db)
    assert len(inbox(db, ExchangeKind.STATUS_FETCHED)) == 1


def test_money_found_after_expiry_is_recorded_and_flagged(app, live, build, lab, db):
    link = build.link(lab)
    browser, checkout_url = press_pay(live, link.token)
    choose(browser, checkout_url, "pay")
    lose_the_webhook(db)
    link.expires_at = utcnow() - timedelta(minutes=5)  # it ran out just after the payment
    db.commit()
    expire_links(app.extensions["portal_db"].session_factory())

    run_reconciliation(app, db)  # within the grace window after expiry

    db.refresh(link)
    assert link.status == LinkStatus.EXPIRED and link.amount_paid == 123450
    assert link.needs_attention and link.attention_reason == "Paid after the link expired."
    assert db.scalar(select(Payment)).status == PaymentStatus.SUCCEEDED


def test_a_payment_still_open_at_the_gateway_stays_pending(app, live, build, lab, db):
    link = build.link(lab)
    press_pay(live, link.token)  # the patient never chose pay or decline
    run_reconciliation(app, db)
    payment = db.scalar(select(Payment))
    assert payment.status == PaymentStatus.PENDING
    assert payment.next_check_at > utcnow()  # asked again later
    [poll] = inbox(db, ExchangeKind.STATUS_FETCHED)
    assert poll.outcome == "no change: still pending at the gateway"
