"""Benchmark: emails per second from the outbox to a real SMTP server, two `portal worker`s.

Starts an SMTP sink (aiosmtpd, its own process), two `portal worker` processes on a
throw-away database (SQLite file or PostgreSQL database), then creates N links that each
queue a "link" email in one transaction, and times until every notification is done.
A measurement, not a test.

    .venv/bin/python bench/outbox_email.py [--db sqlite postgres] [--emails 1500]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, func, select  # noqa: E402

from bench import throwaway_portal  # noqa: E402
from bench.http_bench import BIN, start, stop  # noqa: E402

SMTP_PORT = 18102


def run(database: str, emails: int, workers: int) -> None:
    with throwaway_portal(database) as (folder, base):
        env = {**base, "PORTAL_SMTP_URL": f"smtp://127.0.0.1:{SMTP_PORT}",
               "PORTAL_MAIL_FROM": "payments@bench.test"}
        os.environ.update(env)
        import logging

        logging.disable(logging.WARNING)
        from portal import create_app
        from portal.migrate import upgrade
        from portal.models import Lab, Notification, OutboxStatus, utcnow
        from portal.services.links import NewLink, create_link

        app = create_app()
        db = app.extensions["portal_db"]
        upgrade(db.engine)
        processes = []
        try:
            sink = start([str(BIN / "python"), "-m", "aiosmtpd", "-n", "-l",
                          f"127.0.0.1:{SMTP_PORT}", "-c", "aiosmtpd.handlers.Sink"], {},
                         SMTP_PORT, folder / "smtp.log")
            processes.append(sink)
            for _ in range(workers):
                processes.append(start_worker(env, folder))
            time.sleep(3)  # imported and polling
            with app.app_context(), db.session_factory() as session:
                lab = Lab(slug="bench", name="Bench Diagnostics", currency="INR",
                          default_gateway="sandbox")
                session.add(lab)
                session.flush()
                expires = utcnow() + timedelta(days=3)
                for i in range(emails):
                    create_link(session, lab, NewLink(
                        patient_name=f"Patient {i}", phone=None, email=f"p{i}@example.com",
                        amount=10000 + i, currency="INR", bill_reference=f"B-{i}",
                        description="Blood panel", expires_at=expires, notify=("email",)),
                        user_id=None)
                session.commit()
            cpu_before = [cpu_seconds(process.pid) for process in processes]
            began = time.perf_counter()
            engine = create_engine(env["PORTAL_DATABASE_URL"])
            done = 0
            while time.perf_counter() - began < 300:
                with engine.connect() as conn:
                    done = conn.execute(select(func.count()).select_from(Notification).where(
                        Notification.status == OutboxStatus.DONE)).scalar()
                if done >= emails:
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - began
            cpu = [cpu_seconds(process.pid) - before
                   for process, before in zip(processes, cpu_before, strict=True)]
            engine.dispose()
            print(f"{database}: {done} of {emails} emails sent to an SMTP sink by {workers} "
                  f"portal workers in {elapsed:.1f} s: {done / elapsed:,.0f} emails/s "
                  f"({os.cpu_count()} CPUs shared with other users); CPU per email: "
                  f"{sum(cpu[1:]) * 1000 / max(done, 1):.2f} ms in the workers, "
                  f"{cpu[0] * 1000 / max(done, 1):.2f} ms in the SMTP sink")
        finally:
            for process in processes:
                stop(process)
            db.engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc), robust to load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_worker(env: dict[str, str], folder: Path):
    import subprocess  # nosec B404

    log = (folder / "worker.log").open("ab")
    return subprocess.Popen([str(BIN / "portal"), "worker"],  # nosec B603
                            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"],
                        choices=["sqlite", "postgres"])
    parser.add_argument("--emails", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for database in args.db:
        run(database, args.emails, args.workers)


if __name__ == "__main__":
    main()
