from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.models import Job, OutboxStatus, utcnow
from portal.worker import jobs, queue, runner


def _always_fails(app, session, job):
    raise RuntimeError("boom")


def _succeeds(app, session, job):
    job.payload = {**job.payload, "ran": True}


@pytest.fixture(autouse=True)
def test_kinds(monkeypatch):
    monkeypatch.setitem(jobs.HANDLERS, "test.fail", _always_fails)
    monkeypatch.setitem(jobs.HANDLERS, "test.ok", _succeeds)


def run(app):
    return runner.run_once(app, app.extensions["portal_db"].session_factory)


def test_a_job_runs_once_and_is_done(app, db):
    queue.enqueue(db, "test.ok", {"n": 1})
    db.commit()
    assert run(app) == 1 and run(app) == 0
    job = db.scalar(select(Job))
    assert job.status == OutboxStatus.DONE and job.payload["ran"] and job.attempts == 1


def test_failures_back_off_then_die(app, db):
    queue.enqueue(db, "test.fail", {}, max_attempts=3)
    db.commit()
    run(app)
    job = db.scalar(select(Job))
    assert job.status == OutboxStatus.QUEUED and job.last_error == "RuntimeError: boom"
    assert timedelta(seconds=2) < job.run_at - utcnow() <= timedelta(seconds=5)
    for _ in range(2):
        job.run_at = utcnow()
        db.commit()
        run(app)
        job = db.scalar(select(Job))
    assert job.status == OutboxStatus.DEAD and job.attempts == 3


def test_backoff_grows_and_is_capped():
    assert [queue.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert queue.backoff(30) == queue.MAX_BACKOFF


def test_a_job_whose_lease_ran_out_is_taken_again(app, db):
    """A worker killed mid-job leaves it RUNNING; once the lease ends another takes it."""
    queue.enqueue(db, "test.ok", {})
    db.commit()
    claimed = queue.claim(app.extensions["portal_db"].session_factory())
    assert len(claimed) == 1
    assert run(app) == 0  # leased to the "dead" worker
    job = db.scalar(select(Job))
    job.lease_until = utcnow() - timedelta(seconds=1)
    db.commit()
    assert run(app) == 1
    job = db.scalar(select(Job))
    assert job.status == OutboxStatus.DONE and job.attempts == 2


def test_the_old_worker_cannot_finish_a_job_taken_over(app, db):
    queue.enqueue(db, "test.ok", {})
    db.commit()
    factory = app.extensions["portal_db"].session_factory
    [stale] = queue.claim(factory())
    job = db.scalar(select(Job))
    job.lease_until = utcnow() - timedelta(seconds=1)
    db.commit()
    queue.claim(factory())  # the second worker takes it (attempt 2)
    queue.finish(factory(), stale.id, attempt=1, error="late failure from the dead worker")
    assert db.scalar(select(Job)).status == OutboxStatus.RUNNING


def test_unknown_kind_is_an_error_not_a_crash(app, db):
    queue.enqueue(db, "test.nobody", {})
    db.commit()
    run(app)
    assert "no handler" in db.scalar(select(Job)).last_error


def test_dedupe_while_queued(app, db):
    assert queue.enqueue(db, "test.ok", {}, dedupe="same") is not None
    db.commit()
    assert queue.enqueue(db, "test.ok", {}, dedupe="same") is None


def test_dedupe_reads_the_indexed_key_not_every_payload(app, db):
    from sqlalchemy import event

    assert queue.enqueue(db, "test.ok", {}, dedupe="once") is not None
    db.commit()
    seen = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert queue.enqueue(db, "test.ok", {}, dedupe="once") is None
        assert queue.enqueue(db, "test.fail", {}, dedupe="once") is not None  # another kind
    finally:
        event.remove(engine, "before_cursor_execute", record)
    db.commit()
    lookups = [s for s in seen if s.startswith("SELECT")]
    assert lookups and all("jobs.dedupe IN" in s and "payload" not in s for s in lookups)
    job = db.scalars(select(Job).where(Job.kind == "test.ok")).one()
    assert job.dedupe == job.payload["dedupe"] == "once"
    job.status = OutboxStatus.DONE
    db.commit()
    assert queue.enqueue(db, "test.ok", {}, dedupe="once") is not None  # no longer queued


def test_a_claimed_job_whose_lease_ran_out_meanwhile_is_not_started(app, db, monkeypatch):
    first = queue.enqueue(db, "test.ok", {"n": 1})
    second = queue.enqueue(db, "test.ok", {"n": 2})
    db.commit()
    later = utcnow() + timedelta(minutes=5)

    def slow(app, session, job):  # takes longer than the lease
        _succeeds(app, session, job)
        monkeypatch.setattr(runner, "utcnow", lambda: later)

    monkeypatch.setitem(jobs.HANDLERS, "test.ok", slow)
    run(app)
    done, waiting = (db.scalar(select(Job).where(Job.id == j.id)) for j in (first, second))
    assert done.status == OutboxStatus.DONE
    # Left to whichever worker claims it next (another may have already): not run here.
    assert (waiting.status, waiting.attempts) == (OutboxStatus.RUNNING, 1)
    assert "ran" not in waiting.payload
