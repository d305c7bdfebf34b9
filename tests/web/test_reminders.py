"""Reminders before expiry, on a frozen clock: on time, once, and never for a closed link."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from portal import models
from portal.models import Channel, Job, LinkStatus, Notification, OutboxStatus
from portal.services.links import NewLink, cancel_link, create_link
from portal.services.notifications import schedule_reminders, send_reminder
from portal.worker import runner
from tests.conftest import csrf_from

T0 = datetime(2026, 11, 26, 4, 30, tzinfo=UTC)  # 10:00 in Kolkata


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    """`portal.models.utcnow`, frozen for every module that imported it."""
    frozen = Clock(T0)
    real = models.utcnow
    for name, module in list(sys.modules.items()):
        if name.startswith("portal") and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", frozen)
    return frozen


@pytest.fixture
def reminding_lab(lab, db):
    lab = db.merge(lab)
    lab.reminder_hours_before = [24, 2]
    db.commit()
    return lab


def new_link(db, lab, hours=72, channels=("sms", "email"), **fields):
    link = create_link(db, lab, NewLink(
        patient_name="Asha Rao", phone="+919876543210", email="asha@example.com",
        amount=50000, currency="INR", bill_reference=fields.pop("bill_reference", "B-7"),
        description="", expires_at=models.utcnow() + timedelta(hours=hours),
        notify=tuple(channels)), user_id=None)
    db.commit()
    return link


def reminder_jobs(db, link) -> list[Job]:
    return [j for j in db.scalars(select(Job).where(Job.kind == "notification.reminder")
                                  .order_by(Job.run_at))
            if j.payload["link_id"] == link.id]


def reminders(db, link) -> list[Notification]:
    return list(db.scalars(select(Notification).where(
        Notification.online_payment_id == link.id, Notification.template == "reminder")
        .order_by(Notification.id)))


def run(app) -> None:
    runner.wait_idle(app)


def test_reminders_are_scheduled_before_expiry_per_the_lab(clock, db, reminding_lab):
    link = new_link(db, reminding_lab)
    assert [(j.run_at, j.payload["hours"]) for j in reminder_jobs(db, link)] == [
        (T0 + timedelta(hours=48), 24), (T0 + timedelta(hours=70), 2)]


def test_a_short_link_gets_only_the_reminders_that_fit(clock, db, reminding_lab):
    link = new_link(db, reminding_lab, hours=5)  # 24 h before is already past
    assert [j.payload["hours"] for j in reminder_jobs(db, link)] == [2]
    link = new_link(db, reminding_lab, hours=2.5, bill_reference="B-8")  # within the 1st hour
    assert reminder_jobs(db, link) == []


def test_no_reminders_when_the_lab_has_none(clock, db, lab):
    assert reminder_jobs(db, new_link(db, lab)) == []


@pytest.fixture
def twilio(app):
    from tests.fakes.sms_fakes import FakeTwilio
    from tests.web.test_notifications import AUTH_TOKEN, SID, twilio_config

    with FakeTwilio(SID, AUTH_TOKEN) as fake:
        twilio_config(app, fake)
        yield fake


def test_reminders_go_on_time_by_the_links_channels(app, clock, db, reminding_lab, twilio):
    link = new_link(db, reminding_lab, channels=("sms",))
    run(app)  # the link itself goes out now
    clock.advance(hours=48, minutes=-1)
    run(app)
    assert reminders(db, link) == []  # a minute early
    clock.advance(minutes=1)
    run(app)
    [first] = reminders(db, link)
    assert (first.channel, first.status, first.dedupe_key) == (
        Channel.SMS, OutboxStatus.DONE, f"reminder:{link.id}:24:sms")
    assert first.sent_at == T0 + timedelta(hours=48)
    clock.advance(hours=22)
    run(app)
    assert [n.dedupe_key for n in reminders(db, link)] == [
        f"reminder:{link.id}:24:sms", f"reminder:{link.id}:2:sms"]
    clock.advance(hours=3)  # past expiry: nothing more
    run(app)
    assert len(reminders(db, link)) == 2
    bodies = [r.form["Body"] for r in twilio.requests]
    assert [b.split(":")[0] for b in bodies] == ["Acme Diagnostics", "Reminder from Acme "
                                                 "Diagnostics", "Reminder from Acme Diagnostics"]
    assert "INR 500.00 for bill B-7 is due" in bodies[1]


@pytest.mark.parametrize("close", ["paid", "cancelled", "expired", "stored_expired"])
def test_no_reminder_for_a_closed_link(app, clock, db, reminding_lab, close):
    link = new_link(db, reminding_lab)
    run(app)
    if close == "paid":
        link.status, link.amount_paid, link.paid_at = LinkStatus.PAID, 50000, clock.now
    elif close == "cancelled":
        cancel_link(db, link, user_id=None)
    elif close == "stored_expired":  # the expiry sweep moved it
        link.status = LinkStatus.EXPIRED
    db.commit()
    if close == "expired":  # open in the table, but past expiry by the time the worker runs
        clock.advance(hours=73)
    else:
        clock.advance(hours=48)
    run(app)
    clock.advance(hours=22)
    run(app)
    assert reminders(db, link) == []
    assert all(j.status == OutboxStatus.DONE for j in reminder_jobs(db, link))


def test_a_reminder_due_while_the_link_is_paid_is_not_sent(app, clock, db, reminding_lab):
    """Queued before the payment, sent after it: the send job checks the link again."""
    link = new_link(db, reminding_lab, channels=("sms",))
    run(app)
    clock.advance(hours=48)
    job = reminder_jobs(db, link)[0]
    send_reminder(app, db, db.get(Job, job.id))  # the reminder is queued...
    db.commit()
    link.status = LinkStatus.PAID  # ...and the patient pays before the worker sends it
    db.commit()
    run(app)
    [row] = reminders(db, link)
    assert (row.status, row.sent_at, row.last_error) == (
        OutboxStatus.DONE, None, "Not sent: the link is paid.")


def test_a_reminder_is_never_sent_twice(app, clock, db, reminding_lab):
    link = new_link(db, reminding_lab)
    assert schedule_reminders(db, link) == []  # already scheduled: the queue dedupes
    db.commit()
    assert len(reminder_jobs(db, link)) == 2
    run(app)
    clock.advance(hours=48)
    run(app)
    job = reminder_jobs(db, link)[0]
    job.status, job.run_at = OutboxStatus.QUEUED, clock.now  # as if its worker had died
    db.commit()
    run(app)
    assert len(reminders(db, link)) == 2  # one SMS, one email, once
    job = reminder_jobs(db, link)[0]
    assert (job.status, job.last_error) == (OutboxStatus.DONE, None)  # skipped, not failed


def test_a_reminder_the_lab_has_since_dropped_is_not_sent(app, clock, db, reminding_lab):
    link = new_link(db, reminding_lab)
    reminding_lab.reminder_hours_before = [2]
    db.commit()
    run(app)
    clock.advance(hours=48)
    run(app)
    assert reminders(db, link) == []
    clock.advance(hours=22)
    run(app)
    assert [n.dedupe_key.split(":")[2] for n in reminders(db, link)] == ["2", "2"]


def test_a_link_never_sent_gets_no_reminder(app, clock, db, reminding_lab):
    link = new_link(db, reminding_lab, channels=())
    clock.advance(hours=48)
    run(app)
    assert reminders(db, link) == []


def test_the_new_link_form_tells_staff_when_reminders_go(staff_client, reminding_lab):
    page = staff_client.get("/links/new").get_data(as_text=True)
    assert "Reminders go the same way 24 and 2 hours before the link expires" in page
    assert csrf_from(page)
