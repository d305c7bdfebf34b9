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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from .. import logs, metrics
from ..models import Job, OutboxStatus, WorkerHeartbeat, utcnow
from .jobs import BATCHED, HANDLERS, PERIODIC
from .queue import LEASE, Batched, claim, complete, complete_many, finish, release

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
    batch = BatchRun(app, session_factory)
    try:
        for index, job in enumerate(jobs):
            if stop is not None and stop.is_set():
                batch.flush()
                count = batch.release(jobs[index:])
                log.info("stopping: %d claimed job(s) released to the queue", count)
                return index
            if job.lease_until is not None and job.lease_until <= utcnow():
                # Earlier jobs took the whole lease: another worker may be running this one.
                log.warning("job %s (%s) not started: its lease ran out while the batch ran",
                            job.id, job.kind)
                continue
            with in_request_of(job):
                if job.kind in BATCHED:
                    batch.run(job, jobs[index:])
                else:
                    batch.flush()
                    run_job(app, session_factory, job.id, job.kind, job.attempts)
            if heartbeat is not None:
                try:
                    heartbeat.beat(session_factory)
                except Exception as exc:  # the next job matters more; the loop tries again
                    log.warning("worker heartbeat not written: %s", type(exc).__name__)
    finally:
        batch.flush()
    return len(jobs)


@contextmanager
def in_request_of(job: Job) -> Iterator[None]:
    """Log lines carry the request id of the request that enqueued `job`."""
    request_id = (job.payload or {}).get("request_id")
    token = logs.set_request_id(request_id if isinstance(request_id, str) else None)
    try:
        yield
    finally:
        logs.reset_request_id(token)


ALONE = object()  # a prepared item: run the job by itself, through its handler
FLUSH_AFTER_SECONDS = 1.0  # a batch's "done"s wait at most this long (the lease is far longer)


@dataclass
class _Ran:
    job: Job
    kind: Batched
    item: Any  # None: nothing to do (the job is done with no work)
    outcome: Any
    finished_at: datetime
    started: float


class BatchRun:
    """The jobs of `BATCHED` kinds in one claimed batch: read together before the first runs,
    and marked done together (with what each wrote) when the batch ends, before a job of
    another kind, a failure or a stop, or after FLUSH_AFTER_SECONDS. Delivery stays at least
    once: a worker killed before the commit leaves its jobs to be run again at lease end."""

    def __init__(self, app: Flask, session_factory: sessionmaker[Session]) -> None:
        self.app = app
        self.session_factory = session_factory
        self.prepared: dict[int, Any] = {}  # job id -> item (None: nothing to do)
        self.ran: list[_Ran] = []

    def run(self, job: Job, upcoming: list[Job]) -> None:
        kind = BATCHED[job.kind]
        started = time.perf_counter()
        if job.id not in self.prepared:
            self._prepare(kind, [j for j in upcoming
                                 if j.kind == job.kind and j.id not in self.prepared])
        item = self.prepared[job.id]
        if item is ALONE:
            self.flush()
            run_job(self.app, self.session_factory, job.id, job.kind, job.attempts)
            return
        try:
            with self.app.app_context():
                outcome = kind.run(self.app, item) if item is not None else None
        except Exception as exc:  # a job's failure must not stop the worker
            self.flush()
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            self._failed(job, kind, item, exc, started)
            return
        self.ran.append(_Ran(job, kind, item, outcome, utcnow(), started))
        if time.perf_counter() - self.ran[0].started >= FLUSH_AFTER_SECONDS:
            self.flush()

    def _prepare(self, kind: Batched, jobs: list[Job]) -> None:
        try:
            with self.app.app_context(), self.session_factory() as session:
                items = kind.prepare(self.app, session, jobs)
                session.commit()  # no transaction stays open across SMTP or HTTP
        except Exception as exc:  # one bad job must not hold up the others: one at a time
            log.warning("preparing %d %s job(s) together failed (%s: %s); they run one at a "
                        "time", len(jobs), jobs[0].kind, type(exc).__name__, exc)
            self.prepared.update({j.id: ALONE for j in jobs})
            return
        self.prepared.update({j.id: items.get(j.id) for j in jobs})

    def _failed(self, job: Job, kind: Batched, item: Any, exc: Exception, started: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        with self.app.app_context(), self.session_factory() as session:
            if kind.failed(self.app, session, item, exc):
                kept = complete(session, job.id, job.attempts)
                metrics.JOBS.labels(job.kind, "done" if kept else "taken_over").inc()
                log.info("job %s (%s) done in %.0f ms", job.id, job.kind,
                         (time.perf_counter() - started) * 1000)
                return
            finish(session, job.id, job.attempts, error)
        metrics.JOBS.labels(job.kind, "failed").inc()

    def flush(self) -> None:
        """Marks the jobs that ran done, and writes their outcomes, in one transaction."""
        if not self.ran:
            return
        ran, self.ran = self.ran, []
        with self.session_factory() as session:
            kept = complete_many(session, [(r.job.id, r.job.attempts) for r in ran])
            by_kind: dict[int, tuple[Batched, list[tuple[Any, Any, datetime]]]] = {}
            for r in ran:
                if r.job.id in kept and r.item is not None:
                    by_kind.setdefault(id(r.kind), (r.kind, []))[1].append(
                        (r.item, r.outcome, r.finished_at))
            for kind, outcomes in by_kind.values():
                kind.record(session, outcomes)
            session.commit()
        done = time.perf_counter()
        for r in ran:
            metrics.JOBS.labels(r.job.kind, "done" if r.job.id in kept else "taken_over").inc()
            with in_request_of(r.job):
                log.info("job %s (%s) done in %.0f ms", r.job.id, r.job.kind,
                         (done - r.started) * 1000)

    def release(self, jobs: list[Job]) -> int:
        """Claimed jobs not started go back to the queue now, with what `prepare` marked."""
        items: dict[int, tuple[Batched, list[Any]]] = {}
        for job in jobs:
            item = self.prepared.get(job.id)
            if item is not None and item is not ALONE:
                kind = BATCHED[job.kind]
                items.setdefault(id(kind), (kind, []))[1].append(item)
        with self.session_factory() as session:
            for kind, prepared in items.values():
                kind.release(session, prepared)
            return release(session, [(job.id, job.attempts) for job in jobs])


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


# Jobs a `portal worker` claims at a time: the claim, and for emails the read and the "done",
# cost a statement and a commit each per batch, not per job.
CLAIM_LIMIT = 25


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
            ran = run_once(app, session_factory, limit=CLAIM_LIMIT, stop=stop,
                           heartbeat=heartbeat)
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
