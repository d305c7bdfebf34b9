"""Background jobs: claimed with a lease (SKIP LOCKED on PostgreSQL), retried with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..models import Job, OutboxStatus, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(hours=1)

Handler = Callable[[Any, Session, Job], None]
HANDLERS: dict[str, Handler] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn
    return register


def enqueue(session: Session, kind: str, payload: dict[str, Any], *, lab_id: int | None = None,
            run_at: datetime | None = None, max_attempts: int = 8,
            dedupe: str | None = None) -> Job | None:
    """Adds a job in the caller's transaction; with `dedupe`, not while one is still queued."""
    if dedupe is not None:
        payload = {**payload, "dedupe": dedupe}
        existing = session.scalar(select(Job.id).where(
            Job.kind == kind, Job.status == OutboxStatus.QUEUED,
            Job.payload["dedupe"].as_string() == dedupe))
        if existing:
            return None
    job = Job(kind=kind, payload=payload, lab_id=lab_id, run_at=run_at or utcnow(),
              max_attempts=max_attempts)
    session.add(job)
    return job


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=5 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def claim(session: Session, *, now: datetime | None = None, limit: int = 10) -> list[Job]:
    """Takes due jobs, and running ones whose lease ran out, under a fresh lease; commits."""
    now = now or utcnow()
    due = or_((Job.status == OutboxStatus.QUEUED) & (Job.run_at <= now),
              (Job.status == OutboxStatus.RUNNING) & (Job.lease_until < now))
    query = select(Job).where(due).order_by(Job.run_at, Job.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query))
    for job in jobs:
        job.status = OutboxStatus.RUNNING
        job.attempts += 1
        job.lease_until = now + LEASE
    session.commit()
    return jobs


def finish(session: Session, job_id: int, attempt: int, error: str | None = None) -> None:
    """Marks a claimed job done or failed, unless another worker has claimed it since."""
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
    if job.status != OutboxStatus.RUNNING or job.attempts != attempt:
        session.rollback()
        return
    now = utcnow()
    job.lease_until = None
    if error is None:
        job.status = OutboxStatus.DONE
        job.finished_at = now
        job.last_error = None
    elif job.attempts >= job.max_attempts:
        job.status = OutboxStatus.DEAD
        job.finished_at = now
        job.last_error = error[:1000]
    else:
        job.status = OutboxStatus.QUEUED
        job.run_at = now + backoff(job.attempts)
        job.last_error = error[:1000]
    session.commit()


def run_once(app, session_factory: sessionmaker, *, limit: int = 10) -> int:
    """Claims and runs one batch; returns how many jobs it ran."""
    with session_factory() as session:
        jobs = claim(session, limit=limit)
        claimed = [(job.id, job.kind, job.attempts) for job in jobs]
    for job_id, kind, attempt in claimed:
        error = None
        with app.app_context(), session_factory() as session:
            job = session.get(Job, job_id)
            try:
                fn = HANDLERS.get(kind)
                if fn is None:
                    raise LookupError(f"no handler for job kind {kind!r}")
                fn(app, session, job)
                session.commit()
            except Exception as exc:  # a job's failure must not stop the worker
                session.rollback()
                log.warning("job %s (%s) failed: %s", job_id, kind, exc)
                error = f"{type(exc).__name__}: {exc}"
        with session_factory() as session:
            finish(session, job_id, attempt, error)
    return len(claimed)


def run_worker(app, stop: threading.Event, *, poll_interval: float = 1.0) -> None:
    """The worker loop: `portal worker`, or a thread beside the web server in `make run`."""
    from . import job_handlers  # noqa: F401  registers the handlers

    session_factory = app.extensions["portal_db"].session_factory
    log.info("worker started")
    while not stop.is_set():
        try:
            ran = run_once(app, session_factory)
        except Exception:
            log.exception("worker batch failed")
            ran = 0
        if not ran:
            stop.wait(poll_interval)
    log.info("worker stopped")


def start_worker_thread(app, *, poll_interval: float = 0.5) -> tuple[threading.Thread,
                                                                     threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(app, stop),
                              kwargs={"poll_interval": poll_interval}, name="portal-worker",
                              daemon=True)
    thread.start()
    return thread, stop


def wait_idle(app, timeout: float = 10.0) -> None:
    """Runs due jobs inline until none is left (tests and CLI helpers)."""
    from . import job_handlers  # noqa: F401

    deadline = time.monotonic() + timeout
    session_factory = app.extensions["portal_db"].session_factory
    while run_once(app, session_factory) and time.monotonic() < deadline:
        pass
