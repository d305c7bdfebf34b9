"""Background jobs: claimed with a lease (SKIP LOCKED on PostgreSQL), retried with backoff.

Periodic tasks (`@periodic`) are jobs too: each worker asks for one per interval, and the
queue makes sure only one is enqueued however many workers ask, so two workers never both
sweep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..models import Job, OutboxStatus, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(hours=1)
PERIODIC_LOCK = 0x706F7274616C  # any fixed key for pg_advisory_xact_lock ("portal")

Handler = Callable[[Any, Session, Job], None]
HANDLERS: dict[str, Handler] = {}


@dataclass(frozen=True)
class Periodic:
    kind: str
    every: timedelta

    def slot(self, now: datetime) -> datetime:
        """The start of the interval `now` falls in (intervals are counted from the epoch)."""
        seconds = self.every.total_seconds()
        return datetime.fromtimestamp(now.timestamp() // seconds * seconds, UTC)


PERIODIC: dict[str, Periodic] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn
    return register


def periodic(kind: str, *, every: timedelta) -> Callable[[Handler], Handler]:
    """A handler the worker runs once per `every`, whatever the number of workers."""
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        PERIODIC[kind] = Periodic(kind, every)
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

    def tick(self, session_factory: sessionmaker, now: datetime | None = None) -> int:
        now = now or utcnow()
        due = [kind for kind, task in PERIODIC.items() if self.asked.get(kind) != task.slot(now)]
        if not due:
            return 0
        with session_factory() as session:
            added = schedule_periodic(session, now=now, kinds=due)
        for kind in due:
            self.asked[kind] = PERIODIC[kind].slot(now)
        return len(added)


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=5 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def job_lease(app) -> timedelta:
    return timedelta(seconds=app.config.get("PORTAL_JOB_LEASE_SECONDS", LEASE.total_seconds()))


def claim(session: Session, *, now: datetime | None = None, limit: int = 10,
          lease: timedelta = LEASE) -> list[Job]:
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
        job.lease_until = now + lease
    session.commit()
    return jobs


def complete(session: Session, job_id: int, attempt: int) -> bool:
    """Marks the job done in its handler's own transaction, so the work commits with it.

    If the lease ran out and another worker took the job over meanwhile, the work is rolled
    back instead: a side effect in the database happens once, whichever worker finishes.
    """
    done = session.execute(
        update(Job).where(Job.id == job_id, Job.status == OutboxStatus.RUNNING,
                          Job.attempts == attempt)
        .values(status=OutboxStatus.DONE, finished_at=utcnow(), lease_until=None,
                last_error=None)
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        session.rollback()
        log.warning("job %s attempt %s was taken over by another worker; its work is dropped",
                    job_id, attempt)
        return False
    session.commit()
    return True


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


def run_once(app, session_factory: sessionmaker, *, limit: int = 10,
             lease: timedelta | None = None) -> int:
    """Claims and runs one batch; returns how many jobs it ran."""
    with session_factory() as session:
        jobs = claim(session, limit=limit, lease=lease or job_lease(app))
        claimed = [(job.id, job.kind, job.attempts) for job in jobs]
    for job_id, kind, attempt in claimed:
        with app.app_context(), session_factory() as session:
            job = session.get(Job, job_id)
            try:
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


KEEP_DONE_JOBS = timedelta(days=7)


def prune(session: Session, *, now: datetime | None = None, batch: int = 5000) -> int:
    """Deletes jobs done more than a week ago (dead ones stay for people to look at)."""
    cutoff = (now or utcnow()) - KEEP_DONE_JOBS
    ids = list(session.scalars(select(Job.id).where(
        Job.status == OutboxStatus.DONE, Job.run_at < cutoff, Job.finished_at < cutoff)
        .limit(batch)))
    if ids:
        session.execute(delete(Job).where(Job.id.in_(ids)))
    session.commit()
    return len(ids)


@periodic("jobs.prune", every=timedelta(hours=6))
def _prune(app, session: Session, job: Job) -> None:
    prune(session)


def run_worker(app, stop: threading.Event, *, poll_interval: float = 1.0) -> None:
    """The worker loop: `portal worker`, or a thread beside the web server in `make run`."""
    from . import job_handlers  # noqa: F401  registers the handlers

    session_factory = app.extensions["portal_db"].session_factory
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
