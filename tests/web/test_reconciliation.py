"""Reconciliation's schedule: when a pending payment is asked about, and when asking stops."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from portal.models import Job, OnlinePayment, Payment, PaymentStatus, utcnow
from portal.services import reconciliation
from portal.services.reconciliation import next_check, schedule_status_checks
from tests.web.helpers import start_payment

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
S, M, H = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)


def test_checks_back_off_then_come_hourly():
    times = [T0]
    while times[-1] < T0 + 4 * H:
        times.append(next_check(T0, times[-1]))
    offsets = [t - T0 for t in times[1:]]
    assert offsets == [20 * S, M, 5 * M, 15 * M, H, 2 * H, 3 * H, 4 * H]
    assert next_check(T0, T0 + 90 * M) == T0 + 2 * H  # a late scan catches up, no burst


def test_deadline_is_the_grace_window_after_expiry_or_the_gateways_cutoff():
    link_expiry = T0 + 72 * H
    sandbox = Payment(gateway="sandbox", created_at=T0)
    phonepe = Payment(gateway="phonepe_v1", created_at=T0)
    assert reconciliation.deadline(sandbox, link_expiry) == link_expiry + 24 * H
    assert reconciliation.deadline(phonepe, link_expiry) == T0 + 25 * M


def session_of(app):
    return app.extensions["portal_db"].session_factory()


def fetch_jobs(db):
    return db.scalars(select(Job).where(Job.kind == "payment.fetch_status")).all()


def test_scan_queues_one_check_per_due_payment_and_books_the_next(app, client, build, lab, db):
    link = build.link(lab)
    start_payment(client, link)
    payment = db.scalar(select(Payment))
    started = payment.created_at
    assert payment.next_check_at - started < 21 * S  # booked by the checkout

    assert schedule_status_checks(session_of(app), now=started + 10 * S) == 0  # not yet due
    assert schedule_status_checks(session_of(app), now=started + 21 * S) == 1
    [job] = fetch_jobs(db)
    assert job.payload["payment_id"] == payment.id and job.lab_id == lab.id
    assert db.scalar(select(Payment)).next_check_at == started + M

    # Due again while the first check is still queued: deduped, but the next is still booked.
    assert schedule_status_checks(session_of(app), now=started + 61 * S) == 0
    assert len(fetch_jobs(db)) == 1
    assert db.scalar(select(Payment)).next_check_at == started + 5 * M


def test_final_payments_are_not_asked_about(app, client, build, lab, db):
    link = build.link(lab)
    start_payment(client, link)
    payment = db.scalar(select(Payment))
    payment.status = PaymentStatus.SUCCEEDED  # (the webhook path also clears next_check_at)
    db.commit()
    assert schedule_status_checks(session_of(app), now=utcnow() + H) == 0


def test_asking_goes_on_through_the_grace_window_after_expiry_then_stops(app, client, build,
                                                                        lab, db):
    link = build.link(lab)
    start_payment(client, link)
    expires = db.scalar(select(Payment)).created_at + 72 * H + 30 * M
    link = db.scalar(select(OnlinePayment))
    link.expires_at = expires
    db.commit()

    # Ten hours after the link expired: still asked about, hourly.
    now = expires + 10 * H
    db.scalar(select(Payment)).next_check_at = now - S
    db.commit()
    assert schedule_status_checks(session_of(app), now=now) == 1
    booked = db.scalar(select(Payment)).next_check_at
    assert now < booked <= now + H

    # Close to the end of the grace window, the next hourly check would fall after it:
    # one last look is booked at its very end instead.
    for job in fetch_jobs(db):
        job.status = "done"
    now = expires + 23 * H + 59 * M
    db.scalar(select(Payment)).next_check_at = now - S
    db.commit()
    schedule_status_checks(session_of(app), now=now)
    assert db.scalar(select(Payment)).next_check_at == expires + 24 * H

    # That last look is taken, and nothing more is booked.
    for job in fetch_jobs(db):
        job.status = "done"
    db.commit()
    assert schedule_status_checks(session_of(app), now=expires + 24 * H + S) == 1
    assert db.scalar(select(Payment)).next_check_at is None
    assert schedule_status_checks(session_of(app), now=expires + 48 * H) == 0
    assert db.scalar(select(func.count()).select_from(Job).where(
        Job.kind == "payment.fetch_status")) == 3
