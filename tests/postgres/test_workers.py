"""Several workers on one PostgreSQL database: each job done once; a killed worker's is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from portal.extensions import make_engine
from portal.models import Job, OutboxStatus
from portal.worker import jobs, queue, runner
from tests.conftest import ENCRYPTION_KEY
from tests.polling import wait_until
from tests.postgres import side_effects

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def side_effect_table(pg_app, pg_db, monkeypatch):
    monkeypatch.setitem(jobs.HANDLERS, side_effects.KIND, side_effects.side_effect)
    pg_db.execute(text(side_effects.CREATE))
    pg_db.execute(text("TRUNCATE test_side_effects"))
    pg_db.commit()
    yield
    pg_db.rollback()
    pg_db.execute(text("DROP TABLE test_side_effects"))
    pg_db.commit()


def side_effect_rows(session) -> list[tuple[int, int, str]]:
    session.rollback()
    return [tuple(row) for row in session.execute(text(
        "SELECT job_id, attempt, worker FROM test_side_effects ORDER BY id"))]


def test_two_workers_with_their_own_engines_do_200_jobs_once(pg_app, pg_db, side_effect_table):
    queued = [queue.enqueue(pg_db, side_effects.KIND, {"n": n}) for n in range(200)]
    pg_db.commit()
    url = pg_app.config["PORTAL_DATABASE_URL"]
    engines = [make_engine(url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(engine) -> None:
        factory = sessionmaker(engine, expire_on_commit=False)
        try:
            barrier.wait(timeout=10)
            deadline = time.monotonic() + 60
            while runner.run_once(pg_app, factory, limit=5):
                assert time.monotonic() < deadline, "the queue was not drained in 60 s"
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(engine,), name=f"worker-{n}")
               for n, engine in enumerate(engines)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        for engine in engines:
            engine.dispose()
    assert not any(thread.is_alive() for thread in threads) and errors == []

    rows = side_effect_rows(pg_db)
    done = Counter(job_id for job_id, _, _ in rows)
    assert sorted(done) == sorted(job.id for job in queued)
    assert [job_id for job_id, times in done.items() if times != 1] == []
    assert {worker.split("/")[1] for _, _, worker in rows} == {"worker-0", "worker-1"}
    pg_db.expire_all()
    assert set(pg_db.execute(select(Job.status, Job.attempts))) == {(OutboxStatus.DONE, 1)}


def start_worker(url: str, tmp_path: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PORTAL_DATABASE_URL": url, "PORTAL_JOB_LEASE_SECONDS": "2",
           "PORTAL_SECRET_KEY": "test-secret-key", "PORTAL_ENCRYPTION_KEYS": ENCRYPTION_KEY,
           "PORTAL_INSTANCE_PATH": str(tmp_path / "instance"),
           "PYTHONPATH": str(ROOT)}
    with open(tmp_path / f"{name}.log", "w") as log:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-m", "tests.postgres.worker_process"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_a_worker_killed_mid_job_leaves_it_to_the_other(pg_app, pg_db, side_effect_table,
                                                        tmp_path):
    started_file = tmp_path / "started"
    started_file.touch()
    job = queue.enqueue(pg_db, side_effects.KIND, {"hang_on_attempt": 1,
                                                   "started_file": str(started_file)})
    pg_db.commit()
    url = pg_app.config["PORTAL_DATABASE_URL"]
    workers = {p.pid: p for p in (start_worker(url, tmp_path, "a"),
                                  start_worker(url, tmp_path, "b"))}
    try:
        # Whichever worker claims the job first hangs in it; it is killed there.
        first = wait_until(lambda: started_file.read_text().split(), 30, "the job to start")
        job_id, attempt, pid = map(int, first[:3])
        assert (job_id, attempt) == (job.id, 1) and pid in workers
        workers[pid].send_signal(signal.SIGKILL)
        workers[pid].wait(timeout=10)
        survivor = next(p for p in workers.values() if p.pid != pid)

        def finished():
            pg_db.rollback()
            return pg_db.scalar(select(Job.status).where(Job.id == job.id)) == "done"

        wait_until(finished, 30, "the other worker to finish the job after the lease")
        assert survivor.poll() is None  # still running
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)

    lines = [tuple(map(int, line.split())) for line in started_file.read_text().splitlines()]
    assert lines == [(job.id, 1, pid), (job.id, 2, survivor.pid)]
    assert [(j, a, w.split("/")[0]) for j, a, w in side_effect_rows(pg_db)] == \
        [(job.id, 2, str(survivor.pid))]  # one side effect, by the survivor
    pg_db.expire_all()
    done = pg_db.get(Job, job.id)
    assert (done.status, done.attempts, done.last_error) == (OutboxStatus.DONE, 2, None)


def test_workers_asking_for_periodic_tasks_at_once_enqueue_each_once(pg_app, pg_db):
    """The advisory lock makes check-then-insert atomic across workers."""
    url = pg_app.config["PORTAL_DATABASE_URL"]
    engines = [make_engine(url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def ask(engine) -> None:
        try:
            with sessionmaker(engine)() as session:
                barrier.wait(timeout=10)
                runner.schedule_periodic(session)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(engine,)) for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for engine in engines:
            engine.dispose()
    assert errors == []
    kinds = Counter(pg_db.scalars(select(Job.kind)))
    assert kinds == Counter(set(jobs.PERIODIC))
    assert {"expiry.sweep", "reconciliation.scan"} <= set(kinds)
