"""The notification outbox on PostgreSQL: two workers, a real SMTP server, each email once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from portal.models import Notification, OutboxStatus, utcnow
from portal.services.links import NewLink, create_link
from portal.worker import runner
from tests.fakes.smtp import SmtpServer

COUNT = 200


def test_two_workers_send_every_email_exactly_once(pg_app, pg_build, pg_db, pg_session_factory):
    lab = pg_build.lab("drain", name="Drain Diagnostics")
    for n in range(COUNT):
        create_link(pg_db, lab, NewLink(
            patient_name=f"Patient {n}", phone=None, email=f"p{n}@example.com", amount=1000 + n,
            currency="INR", bill_reference=f"B-{n}", description="",
            expires_at=utcnow() + timedelta(hours=24), notify=("email",)), user_id=None)
    pg_db.commit()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    ran = Counter()

    def worker(name: str) -> None:
        try:
            barrier.wait(timeout=10)
            deadline = time.monotonic() + 120
            while count := runner.run_once(pg_app, pg_session_factory):
                ran[name] += count
                assert time.monotonic() < deadline, "the outbox was not drained in 120 s"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with SmtpServer() as smtp:
        pg_app.config["PORTAL_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(2)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)
        elapsed = time.monotonic() - started
    assert errors == [] and not any(t.is_alive() for t in threads)

    ids = Counter(r.message["Message-ID"] for r in smtp.received)
    assert len(ids) == COUNT and set(ids.values()) == {1}
    assert {r.rcpt_tos[0] for r in smtp.received} == {f"p{n}@example.com" for n in range(COUNT)}
    assert set(ran) == {"w0", "w1"}  # both workers took part
    states = pg_db.execute(select(Notification.status, Notification.attempts, func.count())
                           .group_by(Notification.status, Notification.attempts)).all()
    assert states == [(OutboxStatus.DONE, 1, COUNT)]
    print(f"\noutbox drain, PostgreSQL, 2 worker threads, real SMTP: {COUNT} emails in "
          f"{elapsed:.2f} s = {COUNT / elapsed:.0f}/s ({dict(ran)})")
