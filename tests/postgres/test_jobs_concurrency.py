"""Background jobs on PostgreSQL: two workers claiming at once never run a job twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from portal.models import Job, OutboxStatus
from portal.worker import jobs, queue, runner

RAN: list[tuple[int, str]] = []  # (job id, worker thread name), appended by the handler
RAN_LOCK = threading.Lock()


def record(app, session, job: Job) -> None:
    with RAN_LOCK:
        RAN.append((job.id, threading.current_thread().name))
    time.sleep(0.002)  # long enough for the other worker's claim to interleave with ours


@pytest.fixture(autouse=True)
def record_kind(monkeypatch):
    monkeypatch.setitem(jobs.HANDLERS, "test.record", record)


def enqueue_many(session, count: int) -> list[int]:
    queued = [queue.enqueue(session, "test.record", {"n": n}) for n in range(count)]
    session.commit()
    return [job.id for job in queued]


def test_jobs_claimed_once_by_concurrent_workers(pg_app, pg_db, pg_session_factory):
    RAN.clear()
    job_ids = enqueue_many(pg_db, 200)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            deadline = time.monotonic() + 60
            while runner.run_once(pg_app, pg_session_factory):
                assert time.monotonic() < deadline, "worker did not drain the queue in 60 s"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"worker-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    runs = Counter(job_id for job_id, _ in RAN)
    assert sorted(runs) == sorted(job_ids)
    assert [job_id for job_id, n in runs.items() if n != 1] == []
    # Both workers really took part, so "once" was tested under contention.
    assert {name for _, name in RAN} == {"worker-0", "worker-1"}

    pg_db.expire_all()
    states = pg_db.execute(select(Job.status, Job.attempts, func.count()).group_by(
        Job.status, Job.attempts)).all()
    assert states == [(OutboxStatus.DONE, 1, 200)]
    assert pg_db.scalar(select(func.count()).where(Job.finished_at.is_(None))) == 0


def test_claim_skips_rows_another_worker_has_locked(pg_app, pg_db, pg_session_factory):
    """SKIP LOCKED, deterministically: jobs a transaction holds are left to it, not waited on."""
    job_ids = enqueue_many(pg_db, 5)
    with pg_session_factory() as holder, pg_session_factory() as other:
        held = holder.scalars(select(Job).where(Job.id.in_(job_ids[:3]))
                              .with_for_update()).all()
        assert len(held) == 3
        started = time.monotonic()
        claimed = queue.claim(other, limit=10)
        assert time.monotonic() - started < 5  # it did not wait for the holder
        assert sorted(job.id for job in claimed) == job_ids[3:]
        holder.rollback()
        assert sorted(job.id for job in queue.claim(other, limit=10)) == job_ids[:3]
        # Everything is now running under a lease: nothing left to claim.
        assert queue.claim(other, limit=10) == []
