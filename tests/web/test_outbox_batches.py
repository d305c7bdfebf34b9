"""The worker sends a claimed batch of emails together: one read, one "done" commit, and every
guarantee of the one-job path (stops, take-overs, failures, bad payloads) kept."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import event, select, update

from portal.models import Job, Notification, OutboxStatus, utcnow
from portal.services import notifications
from portal.services.links import NewLink, create_link
from portal.worker import queue, runner
from tests.fakes.smtp import SmtpServer


def make_links(db, lab, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        create_link(db, lab, NewLink(
            patient_name=f"Patient {n}", phone=None, email=f"p{n}@example.com",
            amount=1000 + n, currency="INR", bill_reference=f"B-{n}", description="",
            expires_at=utcnow() + timedelta(hours=24), notify=("email",)), user_id=None)
    db.commit()


def rows(db) -> list[Notification]:
    return list(db.scalars(select(Notification).order_by(Notification.id)))


def send_jobs(db) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.kind == "notification.send")
                           .order_by(Job.id)))


def factory(app):
    return app.extensions["portal_db"].session_factory


def test_a_batch_takes_the_same_statements_and_commits_for_5_emails_as_for_10(app, db, lab):
    engine = app.extensions["portal_db"].engine
    counts = {"statements": 0, "commits": 0}

    def statement(*_args):
        counts["statements"] += 1

    def commit(*_args):
        counts["commits"] += 1

    seen = []
    with SmtpServer() as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "commit", commit)
        try:
            for start, count in ((0, 5), (5, 10)):
                make_links(db, lab, count, start)
                counts.update(statements=0, commits=0)
                assert runner.run_once(app, factory(app), limit=10) == count
                seen.append(dict(counts))
        finally:
            event.remove(engine, "before_cursor_execute", statement)
            event.remove(engine, "commit", commit)
        assert len(smtp.received) == 15
    assert seen[0] == seen[1]
    # claim, read and mark sending, mark done (with BEGIN IMMEDIATE on SQLite): not 7 an email
    assert seen[1]["commits"] == 3 and seen[1]["statements"] <= 10
    assert {(r.status, r.attempts) for r in rows(db)} == {(OutboxStatus.DONE, 1)}
    assert all(r.sent_at is not None and r.lease_until is None for r in rows(db))


def test_a_stop_mid_batch_finishes_the_email_and_puts_the_rest_back_at_once(app, db, lab,
                                                                           monkeypatch):
    make_links(db, lab, 3)
    stop = threading.Event()
    real_send = notifications.send_email

    def send_then_stop(url, message):
        real_send(url, message)
        stop.set()  # SIGTERM arrives while the first email goes

    monkeypatch.setattr(notifications, "send_email", send_then_stop)
    with SmtpServer() as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        assert runner.run_once(app, factory(app), stop=stop) == 1
        assert len(smtp.received) == 1
        first, *rest = rows(db)
        assert (first.status, first.attempts) == (OutboxStatus.DONE, 1)
        for row in rest:  # marked sending with the batch, never started: waiting again
            assert (row.status, row.attempts, row.lease_until) == (OutboxStatus.QUEUED, 0, None)
        jobs = send_jobs(db)
        assert (jobs[0].status, jobs[0].attempts) == (OutboxStatus.DONE, 1)
        for job in jobs[1:]:
            assert (job.status, job.attempts, job.lease_until) == (OutboxStatus.QUEUED, 0, None)

        monkeypatch.setattr(notifications, "send_email", real_send)
        runner.wait_idle(app)
        assert len(smtp.received) == 3
    assert {(r.status, r.attempts) for r in rows(db)} == {(OutboxStatus.DONE, 1)}


def test_a_job_taken_over_mid_batch_keeps_neither_done_nor_its_row(app, db, lab, monkeypatch,
                                                                   caplog):
    make_links(db, lab, 2)
    taken = send_jobs(db)[0]
    real_send = notifications.send_email

    def send_while_another_worker_takes_the_first(url, message):
        real_send(url, message)
        with factory(app)() as other:  # its lease ran out: attempt 2 is another worker's
            other.execute(update(Job).where(Job.id == taken.id, Job.attempts == 1)
                          .values(attempts=2, lease_until=utcnow() + timedelta(minutes=1)))
            other.commit()

    monkeypatch.setattr(notifications, "send_email", send_while_another_worker_takes_the_first)
    caplog.set_level(logging.WARNING)
    with SmtpServer() as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        assert runner.run_once(app, factory(app)) == 2
    first, second = send_jobs(db)
    assert (first.status, first.attempts) == (OutboxStatus.RUNNING, 2)  # the other worker's
    assert (second.status, second.attempts) == (OutboxStatus.DONE, 2 - 1)
    row_first, row_second = rows(db)
    assert row_first.status == OutboxStatus.RUNNING and row_first.sent_at is None
    assert (row_second.status, row_second.attempts) == (OutboxStatus.DONE, 1)
    assert f"job {taken.id} attempt 1 was taken over by another worker" in caplog.text


def test_one_refused_recipient_in_a_batch_is_dead_and_the_others_go(app, db, lab):
    make_links(db, lab, 3)
    with SmtpServer() as smtp:
        smtp.recorder.refuse.add("p1@example.com")
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        assert runner.run_once(app, factory(app)) == 3
        assert sorted(r.rcpt_tos[0] for r in smtp.received) == ["p0@example.com",
                                                                "p2@example.com"]
    sent, refused, last = rows(db)
    assert (refused.status, refused.attempts, refused.sent_at) == (OutboxStatus.DEAD, 1, None)
    assert "refused the recipient" in refused.last_error
    assert {(r.status, r.attempts) for r in (sent, last)} == {(OutboxStatus.DONE, 1)}
    assert {j.status for j in send_jobs(db)} == {OutboxStatus.DONE}  # nothing to retry


def test_a_batch_that_cannot_be_read_together_runs_one_job_at_a_time(app, db, lab):
    make_links(db, lab, 1)
    broken = queue.enqueue(db, "notification.send", {}, lab_id=lab.id)  # no notification id
    db.commit()
    with SmtpServer() as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        assert runner.run_once(app, factory(app)) == 2
        assert len(smtp.received) == 1
    [row] = rows(db)
    assert (row.status, row.attempts) == (OutboxStatus.DONE, 1)
    job = db.scalar(select(Job).where(Job.id == broken.id))
    assert (job.status, job.attempts) == (OutboxStatus.QUEUED, 1)  # retried later, alone
    assert job.last_error.startswith("KeyError")


def test_a_stop_among_jobs_run_one_at_a_time_puts_the_rest_back(app, db, lab, monkeypatch):
    make_links(db, lab, 2)
    queue.enqueue(db, "notification.send", {}, lab_id=lab.id)  # the batch cannot be read
    db.commit()
    stop = threading.Event()
    real_send = notifications.send_email

    def send_then_stop(url, message):
        real_send(url, message)
        stop.set()

    monkeypatch.setattr(notifications, "send_email", send_then_stop)
    with SmtpServer() as smtp:
        app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        assert runner.run_once(app, factory(app), stop=stop) == 1
        assert len(smtp.received) == 1
    first, second, broken = send_jobs(db)
    assert (first.status, first.attempts) == (OutboxStatus.DONE, 1)
    for job in (second, broken):
        assert (job.status, job.attempts, job.lease_until) == (OutboxStatus.QUEUED, 0, None)
    assert [r.status for r in rows(db)] == [OutboxStatus.DONE, OutboxStatus.QUEUED]
