"""Benchmark: how fast workers drain the job queue on PostgreSQL (1 and 2 worker processes).

Makes a throw-away database on PORTAL_TEST_POSTGRES_URL's server (default: the local one),
migrates it, queues N jobs and lets worker processes (each with its own engine, as
`portal worker` runs) claim and run them with SKIP LOCKED. The handler does what an outbox
relay does around the send: it reads the job and marks it done in its transaction (plus an
optional sleep for the send itself). A measurement, not a test: nothing here asserts a speed.

    .venv/bin/python bench/outbox_drain.py [--jobs 2000] [--workers 1 2] [--send-ms 0]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import SERVER, run_on_server  # noqa: E402


def register(send_ms: float) -> None:
    from portal.worker.jobs import HANDLERS

    def send(app, session, job) -> None:
        if send_ms:
            time.sleep(send_ms / 1000)

    HANDLERS["bench.send"] = send


def worker(url: str, send_ms: float, start, batch: int) -> None:
    os.environ["PORTAL_DATABASE_URL"] = url
    from portal import create_app
    from portal.worker import runner

    register(send_ms)
    app = create_app()
    factory = app.extensions["portal_db"].session_factory
    start.wait()
    idle = 0
    while idle < 3:  # a few empty claims in a row: the queue is drained
        if runner.run_once(app, factory, limit=batch):
            idle = 0
        else:
            idle += 1
            time.sleep(0.01)
    app.extensions["portal_db"].engine.dispose()


def measure(url: str, count: int, workers: int, send_ms: float, batch: int) -> float:
    from portal.models import Job, OutboxStatus
    from portal.worker import queue

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(Job.__table__.delete())
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        for n in range(count):
            queue.enqueue(session, "bench.send", {"n": n})
        session.commit()
    start = multiprocessing.Event()
    processes = [multiprocessing.Process(target=worker, args=(url, send_ms, start, batch))
                 for _ in range(workers)]
    for process in processes:
        process.start()
    time.sleep(2)  # let every process import and connect before the clock starts
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - began
    with Session(engine) as session:
        done = session.scalar(select(func.count()).where(Job.status == OutboxStatus.DONE,
                                                         Job.attempts == 1))
    engine.dispose()
    assert done == count, f"{done} of {count} jobs done once"
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--send-ms", type=float, default=0.0,
                        help="time each job spends 'sending', outside the database")
    parser.add_argument("--batch", type=int, default=10, help="jobs claimed per round")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="portal-bench-")
    os.environ.update(PORTAL_INSTANCE_PATH=folder, PORTAL_SECRET_KEY="bench",
                      PORTAL_ENCRYPTION_KEYS=Fernet.generate_key().decode())
    import logging

    logging.disable(logging.WARNING)
    from portal.migrate import upgrade

    name = f"portal_bench_{secrets.token_hex(4)}"
    run_on_server(f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        print(f"PostgreSQL, {args.jobs} jobs, claim batch {args.batch}, "
              f"send {args.send_ms:g} ms per job, {os.cpu_count()} CPUs")
        for workers in args.workers:
            rate = measure(url, args.jobs, workers, args.send_ms, args.batch)
            print(f"  {workers} worker process(es): {rate:,.0f} jobs/s")
    finally:
        run_on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
