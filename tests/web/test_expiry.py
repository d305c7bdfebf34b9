"""The worker's expiry sweep: open links past their expiry become expired, once, in batches."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gateways.base import Capability
from gateways.sandbox import SandboxGateway
from portal.models import (
    AuditLog,
    ExchangeKind,
    Job,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    utcnow,
)
from portal.services.expiry import expire_links
from portal.worker import runner
from tests.web.helpers import post_event, start_payment


def session_of(app):
    return app.extensions["portal_db"].session_factory()


def statuses(db):
    return dict(db.execute(select(OnlinePayment.bill_reference, OnlinePayment.status)).all())


def test_sweep_expires_only_open_links_past_their_expiry(app, build, lab, db):
    past = utcnow() - timedelta(minutes=1)
    build.link(lab, bill_reference="OLD", expires_at=utcnow() + timedelta(hours=1))
    build.link(lab, bill_reference="PART", allow_partial=True,
               status=LinkStatus.PARTIALLY_PAID, amount_paid=100)
    build.link(lab, bill_reference="PAID", status=LinkStatus.PAID)
    build.link(lab, bill_reference="GONE", status=LinkStatus.CANCELLED)
    build.link(lab, bill_reference="LIVE")
    for link in db.scalars(select(OnlinePayment)).all():
        if link.bill_reference != "LIVE":
            link.expires_at = past  # as if their time ran out a minute ago
    db.commit()

    expired = expire_links(session_of(app))

    assert len(expired) == 2
    assert statuses(db) == {"OLD": LinkStatus.EXPIRED, "PART": LinkStatus.EXPIRED,
                            "PAID": LinkStatus.PAID, "GONE": LinkStatus.CANCELLED,
                            "LIVE": LinkStatus.CREATED}
    assert expire_links(session_of(app)) == []  # idempotent
    audits = db.scalars(select(AuditLog).where(AuditLog.action == "link.expire")).all()
    assert sorted(int(a.object_id) for a in audits) == sorted(expired)
    assert all(a.user_id is None for a in audits)


def test_frozen_clock_and_batches(app, build, lab, db):
    for n in range(5):
        build.link(lab, bill_reference=f"B{n}", expires_at=utcnow() + timedelta(hours=n + 1))
    later = utcnow() + timedelta(hours=3, minutes=30)  # B0, B1, B2 are past their expiry

    assert len(expire_links(session_of(app), now=later, batch=2)) == 3
    assert [s for _, s in sorted(statuses(db).items())] == [LinkStatus.EXPIRED] * 3 + \
        [LinkStatus.CREATED] * 2


def test_a_paid_link_is_never_expired_and_money_after_expiry_is_flagged(app, client, build,
                                                                       lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    expire_links(session_of(app))
    assert post_event(client, reference).status_code == 200  # the patient's money arrives late
    db.refresh(link)
    payment = db.scalar(select(Payment))
    assert link.status == LinkStatus.EXPIRED and link.amount_paid == payment.amount
    assert link.needs_attention and link.attention_reason == "Paid after the link expired."


def test_sweep_runs_as_a_periodic_job(app, build, lab, db):
    link = build.link(lab)
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    runner.schedule_periodic(session_of(app), kinds=["expiry.sweep"])
    runner.wait_idle(app)
    db.refresh(link)
    assert link.status == LinkStatus.EXPIRED
    assert db.scalar(select(Job.status).where(Job.kind == "expiry.sweep")) == "done"


@pytest.fixture
def cancellable_sandbox(monkeypatch):
    """The sandbox, as if it could close a hosted checkout (Stripe and Razorpay can)."""
    calls = []
    monkeypatch.setattr(SandboxGateway, "capabilities",
                        SandboxGateway.capabilities | {Capability.CANCEL_CHECKOUT})
    monkeypatch.setattr(SandboxGateway, "cancel_checkout",
                        lambda self, reference, checkout_id: calls.append((reference,
                                                                           checkout_id)))
    return calls


def test_expiry_closes_the_gateway_checkout_outside_the_sweep(app, client, build, lab, db,
                                                              cancellable_sandbox):
    link = build.link(lab)
    reference = start_payment(client, link)
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()

    expire_links(session_of(app))
    assert cancellable_sandbox == []  # not inside the sweep's transaction: a job does it
    assert db.scalar(select(Job.kind).where(Job.kind == "payment.cancel_checkout"))
    runner.wait_idle(app)

    assert cancellable_sandbox == [(reference, f"sbx_cs_{reference}")]
    exchange = db.scalar(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.event_type == "checkout.cancel"))
    assert exchange.kind == ExchangeKind.CHECKOUT_CANCELLED and exchange.success
    # Once more: nothing new to expire, nothing cancelled twice.
    expire_links(session_of(app))
    runner.wait_idle(app)
    assert len(cancellable_sandbox) == 1


def test_gateways_that_cannot_cancel_get_no_job(app, client, build, lab, db):
    link = build.link(lab)
    start_payment(client, link)
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    expire_links(session_of(app))
    assert db.scalar(select(func.count()).select_from(Job).where(
        Job.kind == "payment.cancel_checkout")) == 0
