"""The worker: claims due jobs and runs each kind's handler; asks for periodic tasks on time.

Periodic tasks are jobs too: each worker asks for one per interval, and the queue makes sure
only one is enqueued however many workers ask, so two workers never both sweep.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from .. import logs, metrics
from ..models import Job, OutboxStatus, WorkerHeartbeat, utcnow
from .jobs import HANDLERS, PERIODIC
from .queue import LEASE, claim, complete, finish, release

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
             lease: timedelta | None = None, stop: threading.Event | None = None,
             heartbeat: Heartbeat | None = None) -> int:
    """Claims and runs one batch; returns how many jobs it ran.

    Once `stop` is set, the job running finishes and the batch's other claims are released.
    """
    with session_factory() as session:
        jobs = claim(session, limit=limit, lease=lease or job_lease(app))
        claimed = [(job.id, job.kind, job.attempts, (job.payload or {}).get("request_id"))
                   for job in jobs]
    for index, (job_id, kind, attempt, request_id) in enumerate(claimed):
        if stop is not None and stop.is_set():
            with session_factory() as session:
                count = release(session, [(c[0], c[2]) for c in claimed[index:]])
            log.info("stopping: %d claimed job(s) released to the queue", count)
            return index
        token = logs.set_request_id(request_id if isinstance(request_id, str) else None)
        try:
            run_job(app, session_factory, job_id, kind, attempt)
        finally:
            logs.reset_request_id(token)
        if heartbeat is not None:
            try:
                heartbeat.beat(session_factory)
            except Exception as exc:  # the next job matters more; the loop tries again
                log.warning("worker heartbeat not written: %s", type(exc).__name__)
    return len(claimed)


def run_job(app: Flask, session_factory: sessionmaker[Session], job_id: int, kind: str,
            attempt: int) -> None:
    started = time.perf_counter()
    with app.app_context(), session_factory() as session:
        try:
            job = session.get_one(Job, job_id)
            fn = HANDLERS.get(kind)
            if fn is None:
                raise LookupError(f"no handler for job kind {kind!r}")
            fn(app, session, job)
            kept = complete(session, job_id, attempt)
            metrics.JOBS.labels(kind, "done" if kept else "taken_over").inc()
            log.info("job %s (%s) done in %.0f ms", job_id, kind,
                     (time.perf_counter() - started) * 1000)
            return
        except Exception as exc:  # a job's failure must not stop the worker
            session.rollback()
            log.warning("job %s (%s) failed: %s", job_id, kind, exc)
            error = f"{type(exc).__name__}: {exc}"
    metrics.JOBS.labels(kind, "failed").inc()
    with session_factory() as session:
        finish(session, job_id, attempt, error)


HEARTBEAT_EVERY = timedelta(seconds=15)
FORGET_HEARTBEATS_AFTER = timedelta(days=1)


class Heartbeat:
    """This worker's row in `worker_heartbeats`, written at most every 15 s (/readyz reads it)."""

    def __init__(self) -> None:
        self.worker_id = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.last: float | None = None

    def beat(self, session_factory: sessionmaker[Session], *, force: bool = False) -> bool:
        now_monotonic = time.monotonic()
        if not force and self.last is not None \
                and now_monotonic - self.last < HEARTBEAT_EVERY.total_seconds():
            return False
        now = utcnow()
        with session_factory() as session:
            row = session.get(WorkerHeartbeat, self.worker_id)
            if row is None:
                session.add(WorkerHeartbeat(worker_id=self.worker_id,
                                            hostname=socket.gethostname()[:255],
                                            pid=os.getpid(), started_at=now, seen_at=now))
                session.execute(delete(WorkerHeartbeat).where(
                    WorkerHeartbeat.seen_at < now - FORGET_HEARTBEATS_AFTER))
            else:
                row.seen_at = now
            session.commit()
        self.last = now_monotonic
        return True


def session_factory_of(app: Flask) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = app.extensions["portal_db"].session_factory
    return factory


def run_worker(app: Flask, stop: threading.Event, *, poll_interval: float = 1.0) -> None:
    """The worker loop: `portal worker`, or a thread beside the web server in `make run`."""
    session_factory = session_factory_of(app)
    scheduler = Scheduler()
    heartbeat = Heartbeat()
    log.info("worker %s started", heartbeat.worker_id)
    while not stop.is_set():
        try:
            heartbeat.beat(session_factory)
            scheduler.tick(session_factory)
            ran = run_once(app, session_factory, stop=stop, heartbeat=heartbeat)
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
