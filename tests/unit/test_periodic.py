"""Periodic tasks are enqueued once per interval however many workers ask; leases and takeover."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from portal.models import Job, OutboxStatus, utcnow
from portal.worker import jobs, queue, runner

EVERY = timedelta(minutes=1)
T0 = datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)


def _tick(app, session, job):
    job.payload = {**job.payload, "ran": True}


def _writes(app, session, job):
    job.payload = {**job.payload, "written": True}  # the job's own "side effect"


@pytest.fixture(autouse=True)
def tick_task(monkeypatch):
    """A periodic task for these tests only: other tests' workers must not run it."""
    monkeypatch.setitem(jobs.PERIODIC, "test.tick", queue.Periodic("test.tick", every=EVERY))
    monkeypatch.setitem(jobs.HANDLERS, "test.tick", _tick)
    monkeypatch.setitem(jobs.HANDLERS, "test.writes", _writes)


def factory(app):
    return app.extensions["portal_db"].session_factory


def tick_jobs(db):
    return db.scalars(select(Job).where(Job.kind == "test.tick").order_by(Job.id)).all()


def test_slot_is_the_start_of_the_interval():
    task = jobs.PERIODIC["test.tick"]
    assert task.slot(T0) == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert task.slot(T0 + timedelta(seconds=54)) == task.slot(T0)
    assert task.slot(T0 + timedelta(seconds=55)) == datetime(2026, 3, 1, 10, 1, tzinfo=UTC)


def test_two_workers_asking_in_one_interval_enqueue_one_job(app, db):
    first = runner.schedule_periodic(factory(app)(), now=T0, kinds=["test.tick"])
    second = runner.schedule_periodic(factory(app)(), now=T0 + timedelta(seconds=30),
                                    kinds=["test.tick"])
    assert len(first) == 1 and second == []
    [job] = tick_jobs(db)
    assert job.run_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert job.max_attempts == 1  # a failed run waits for the next interval, not a retry


def test_a_task_still_queued_or_running_is_not_doubled(app, db):
    runner.schedule_periodic(factory(app)(), now=T0, kinds=["test.tick"])
    # The next interval comes while the first run is still queued: nothing new.
    assert runner.schedule_periodic(factory(app)(), now=T0 + EVERY, kinds=["test.tick"]) == []
    runner.run_once(app, factory(app))
    assert tick_jobs(db)[0].status == OutboxStatus.DONE and tick_jobs(db)[0].payload["ran"]
    # Done, and the interval it was for has passed: the next one is enqueued once.
    assert len(runner.schedule_periodic(factory(app)(), now=T0 + EVERY, kinds=["test.tick"])) == 1
    assert runner.schedule_periodic(factory(app)(), now=T0 + EVERY, kinds=["test.tick"]) == []
    assert len(tick_jobs(db)) == 2


def test_the_scheduler_asks_once_per_interval(app, db, monkeypatch):
    calls = []
    real = runner.schedule_periodic
    monkeypatch.setattr(runner, "schedule_periodic",
                        lambda session, **kw: calls.append(kw["kinds"]) or real(session, **kw))
    scheduler = runner.Scheduler()
    scheduler.tick(factory(app), now=T0)
    scheduler.tick(factory(app), now=T0 + timedelta(seconds=20))  # same interval: no query
    assert len(calls) == 1 and "test.tick" in calls[0]
    scheduler.tick(factory(app), now=T0 + EVERY)
    assert len(calls) == 2


def test_the_worker_loop_runs_periodic_tasks(app, db):
    thread, stop = runner.start_worker_thread(app, poll_interval=0.05)
    try:
        deadline = utcnow() + timedelta(seconds=10)
        while utcnow() < deadline and not any(j.status == OutboxStatus.DONE
                                              for j in tick_jobs(db)):
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert [j.status for j in tick_jobs(db)] == [OutboxStatus.DONE]
    kinds = set(db.scalars(select(Job.kind)))
    assert {"expiry.sweep", "reconciliation.scan", "jobs.prune"} <= kinds


def test_the_lease_comes_from_the_config(app, db):
    app.config["PORTAL_JOB_LEASE_SECONDS"] = 2
    queue.enqueue(db, "test.writes", {})
    db.commit()
    [job] = queue.claim(factory(app)(), lease=runner.job_lease(app))
    assert timedelta(seconds=1) < job.lease_until - utcnow() <= timedelta(seconds=2)


def test_work_of_a_worker_whose_job_was_taken_over_is_rolled_back(app, db):
    """The handler's work commits with "done", so a stale worker cannot repeat a side effect."""
    queue.enqueue(db, "test.writes", {})
    db.commit()
    [stale] = queue.claim(factory(app)())  # attempt 1, by a worker that then stalls
    taken = db.get(Job, stale.id)
    taken.lease_until = utcnow() - timedelta(seconds=1)
    db.commit()
    assert [j.id for j in queue.claim(factory(app)())] == [stale.id]  # attempt 2
    session = factory(app)()
    _writes(app, session, session.get(Job, stale.id))  # the stalled worker wakes up
    assert queue.complete(session, stale.id, attempt=1) is False
    job = db.scalar(select(Job).where(Job.id == stale.id))
    assert job.status == OutboxStatus.RUNNING and "written" not in job.payload
    session = factory(app)()
    _writes(app, session, session.get(Job, stale.id))
    assert queue.complete(session, stale.id, attempt=2) is True
    job = db.scalar(select(Job).where(Job.id == stale.id))
    assert job.status == OutboxStatus.DONE and job.payload["written"] and job.attempts == 2


def test_prune_keeps_recent_and_dead_jobs(app, db):
    old = utcnow() - timedelta(days=8)
    db.add_all([Job(kind="test.writes", status=OutboxStatus.DONE, run_at=old, finished_at=old),
                Job(kind="test.writes", status=OutboxStatus.DEAD, run_at=old, finished_at=old),
                Job(kind="test.writes", status=OutboxStatus.DONE, run_at=utcnow(),
                    finished_at=utcnow())])
    db.commit()
    assert queue.prune(factory(app)()) == 1
    assert db.scalar(select(func.count()).select_from(Job)) == 2
