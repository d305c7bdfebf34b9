"""The job queue: rows of `jobs`, claimed with a lease (SKIP LOCKED on PostgreSQL), retried with
backoff. Services add jobs here in their own transaction; the runner claims and finishes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import CursorResult, delete, or_, select, tuple_, update
from sqlalchemy.orm import Session

from .. import logs
from ..models import Job, OutboxStatus, utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(hours=1)
KEEP_DONE_JOBS = timedelta(days=7)
IN_CHUNK = 5000  # values in one IN (...): well under SQLite's and PostgreSQL's limits

Handler = Callable[[Flask, Session, Job], None]


@dataclass(frozen=True)
class Batched:
    """A job kind the runner runs a batch at a time (its `Handler` is the one-job form).

    `prepare` reads what the claimed jobs need in one transaction (the runner commits it),
    by job id, leaving out jobs with nothing to do; `run` does one job's outside work with
    no database and returns its outcome; `record` writes the outcomes of many jobs in the
    transaction that marks them done (`complete_many`); `failed` records a run that raised
    and commits, returning True when the job is done all the same; `release` undoes
    `prepare` for jobs released unstarted (a worker stopping), in the release's transaction.
    """

    prepare: Callable[[Flask, Session, Sequence[Job]], Mapping[int, Any]]
    run: Callable[[Flask, Any], Any]
    record: Callable[[Session, Sequence[tuple[Any, Any, datetime]]], None]
    failed: Callable[[Flask, Session, Any, Exception], bool]
    release: Callable[[Session, Iterable[Any]], None]


@dataclass(frozen=True)
class Periodic:
    """A job kind the worker runs once per `every`, whatever the number of workers."""

    kind: str
    every: timedelta

    def slot(self, now: datetime) -> datetime:
        """The start of the interval `now` falls in (intervals are counted from the epoch)."""
        seconds = self.every.total_seconds()
        return datetime.fromtimestamp(now.timestamp() // seconds * seconds, UTC)


def enqueue(session: Session, kind: str, payload: dict[str, Any], *, lab_id: int | None = None,
            run_at: datetime | None = None, max_attempts: int = 8,
            dedupe: str | None = None) -> Job | None:
    """Adds a job in the caller's transaction; with `dedupe`, not while one is still queued."""
    if dedupe is not None and queued_dedupes(session, kind, [dedupe]):
        return None
    job = new_job(kind, payload, lab_id=lab_id, run_at=run_at, max_attempts=max_attempts,
                  dedupe=dedupe)
    session.add(job)
    return job


def new_job(kind: str, payload: dict[str, Any], *, lab_id: int | None = None,
            run_at: datetime | None = None, max_attempts: int = 8,
            dedupe: str | None = None) -> Job:
    """A job row, not yet added (callers adding many add them together: batched INSERTs).

    The request id in force (if any) rides in the payload, so the job's log lines carry it.
    """
    request_id = logs.request_id.get()
    if request_id is not None and "request_id" not in payload:
        payload = {**payload, "request_id": request_id}
    if dedupe is not None:
        payload = {**payload, "dedupe": dedupe}
    return Job(kind=kind, payload=payload, lab_id=lab_id, run_at=run_at or utcnow(),
               max_attempts=max_attempts, dedupe=dedupe)


def queued_dedupes(session: Session, kind: str, keys: Collection[str]) -> set[str]:
    """Which of `keys` a queued job of `kind` holds (the indexed column, never the JSON)."""
    found: set[str] = set()
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), IN_CHUNK):
        found.update(session.scalars(select(Job.dedupe).where(
            Job.kind == kind, Job.dedupe.in_(unique[start:start + IN_CHUNK]),
            Job.status == OutboxStatus.QUEUED)))
    return found


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=5 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


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
    done: CursorResult[Any] = session.execute(  # type: ignore[assignment]
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


def complete_many(session: Session, claims: Collection[tuple[int, int]]) -> set[int]:
    """`complete` for many claimed jobs in one statement, in the caller's transaction.

    Returns the ids still ours: the caller writes the work of those alone, then commits, so
    each job's work commits with its "done"; a job another worker took over keeps neither.
    """
    if not claims:
        return set()
    done = session.execute(
        update(Job).where(tuple_(Job.id, Job.attempts).in_(list(claims)),
                          Job.status == OutboxStatus.RUNNING)
        .values(status=OutboxStatus.DONE, finished_at=utcnow(), lease_until=None,
                last_error=None)
        .returning(Job.id).execution_options(synchronize_session=False))
    kept = set(done.scalars())
    for job_id, attempt in claims:
        if job_id not in kept:
            log.warning("job %s attempt %s was taken over by another worker; its work is "
                        "dropped", job_id, attempt)
    return kept


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


def release(session: Session, claims: list[tuple[int, int]]) -> int:
    """Claimed jobs not started go back to the queue now, the attempt not counted; commits.

    A worker stopping (SIGTERM) calls this so that another worker need not wait for the lease.
    Jobs another worker has taken over since (a different attempt) are left alone.
    """
    released = 0
    for job_id, attempt in claims:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job).where(Job.id == job_id, Job.status == OutboxStatus.RUNNING,
                              Job.attempts == attempt)
            .values(status=OutboxStatus.QUEUED, attempts=attempt - 1, lease_until=None)
            .execution_options(synchronize_session=False))
        released += result.rowcount
    session.commit()
    return released


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
