"""The worker: claims due jobs and runs each kind's handler; asks for periodic tasks on time.

Periodic tasks are jobs too: each worker asks for one per interval, and the queue makes sure
only one is enqueued however many workers ask, so two workers never both sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..models import Job, OutboxStatus, utcnow
from .jobs import HANDLERS, PERIODIC
from .queue import LEASE, claim, complete, finish

log = logging.getLogger(__name__)

PERIODIC_LOCK = 0x706F7274616C  # any fixed key for pg_advisory_xact_lock ("portal")


def schedule_periodic(session: Session, *, now: datetime | None = None,
                      kinds: Iterable[str] | None = None) -> list[Job]:
    """Enqueues each periodic task once for its current interval; commits.

    Workers asking at the same moment take turns: an advisory lock held until the commit on
    PostgreSQL, the write lock of SQLite's BEGIN IMMEDIATE there. A task still queued or running
    (a sweep longer than its interval) is not enqueued again beside itself.
    """
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(PERIODIC_LOCK)))
    added = []
    for kind in kinds if kinds is not None else list(PERIODIC):
        task = PERIODIC[kind]
        slot = task.slot(now)
        busy = session.scalar(select(Job.id).where(
            Job.kind == kind,
            or_(Job.status.in_((OutboxStatus.QUEUED, OutboxStatus.RUNNING)),
                Job.status.in_((OutboxStatus.DONE, OutboxStatus.DEAD)) & (Job.run_at >= slot)),
        ).limit(1))
        if busy is None:
            job = Job(kind=kind, payload={"interval": slot.isoformat()}, run_at=slot,
                      max_attempts=1)
            session.add(job)
            added.append(job)
    session.commit()
    return added


class Scheduler:
    """One per worker: asks for each periodic task once per interval, not on every poll."""

    def __init__(self) -> None:
        self.asked: dict[str, datetime] = {}

    def tick(self, session_factory: sessionmaker[Session], now: datetime | None = None) -> int:
        now = now or utcnow()
        due = [kind for kind, task in PERIODIC.items() if self.asked.get(kind) != task.slot(now)]
        if not due:
            return 0
        with session_factory() as session:
            added = schedule_periodic(session, now=now, kinds=due)
        for kind in due:
            self.asked[kind] = PERIODIC[kind].slot(now)
        return len(added)


def job_lease(app: Flask) -> timedelta:
    return timedelta(seconds=app.config.get("PORTAL_JOB_LEASE_SECONDS", LEASE.total_seconds()))


def run_once(app: Flask, session_factory: sessionmaker[Session], *, limit: int = 10,
             lease: timedelta | None = None) -> int:
    """Claims and runs one batch; returns how many jobs it ran."""
    with session_factory() as session:
        jobs = claim(session, limit=limit, lease=lease or job_lease(app))
        claimed = [(job.id, job.kind, job.attempts) for job in jobs]
    for job_id, kind, attempt in claimed:
        with app.app_context(), session_factory() as session:
            try:
                job = session.get_one(Job, job_id)
                fn = HANDLERS.get(kind)
                if fn is None:
                    raise LookupError(f"no handler for job kind {kind!r}")
                fn(app, session, job)
                complete(session, job_id, attempt)
                continue
            except Exception as exc:  # a job's failure must not stop the worker
                session.rollback()
                log.warning("job %s (%s) failed: %s", job_id, kind, exc)
                error = f"{type(exc).__name__}: {exc}"
        with session_factory() as session:
            finish(session, job_id, attempt, error)
    return len(claimed)


def session_factory_of(app: Flask) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = app.extensions["portal_db"].session_factory
    return factory


def run_worker(app: Flask, stop: threading.Event, *, poll_interval: float = 1.0) -> None:
    """The worker loop: `portal worker`, or a thread beside the web server in `make run`."""
    session_factory = session_factory_of(app)
    scheduler = Scheduler()
    log.info("worker started")
    while not stop.is_set():
        try:
            scheduler.tick(session_factory)
            ran = run_once(app, session_factory)
        except Exception:
            log.exception("worker batch failed")
            ran = 0
        if not ran:
            stop.wait(poll_interval)
    log.info("worker stopped")


def start_worker_thread(app: Flask, *, poll_interval: float = 0.5
                        ) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(app, stop),
                              kwargs={"poll_interval": poll_interval}, name="portal-worker",
                              daemon=True)
    thread.start()
    return thread, stop


def wait_idle(app: Flask, timeout: float = 10.0) -> None:
    """Runs due jobs inline until none is left (tests and CLI helpers)."""
    deadline = time.monotonic() + timeout
    session_factory = session_factory_of(app)
    while run_once(app, session_factory) and time.monotonic() < deadline:
        pass
