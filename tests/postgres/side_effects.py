"""A job kind for the worker tests whose side effect is a row in a table of its own.

The row is written in the job's transaction, so it commits together with "done" (or not at
all); a line in `started_file` (outside any transaction) records every attempt that began.
"""

from __future__ import annotations

import os
import threading
import time

from sqlalchemy import text

KIND = "test.side_effect"
CREATE = ("CREATE TABLE IF NOT EXISTS test_side_effects (id serial PRIMARY KEY, "
          "job_id integer NOT NULL, attempt integer NOT NULL, worker text NOT NULL)")


def worker_name() -> str:
    return f"{os.getpid()}/{threading.current_thread().name}"


def side_effect(app, session, job) -> None:
    started = job.payload.get("started_file")
    if started:
        with open(started, "a") as file:
            file.write(f"{job.id} {job.attempts} {os.getpid()}\n")
    if job.attempts == job.payload.get("hang_on_attempt"):
        time.sleep(600)  # the test kills this worker here
    session.execute(text("INSERT INTO test_side_effects (job_id, attempt, worker) "
                         "VALUES (:job, :attempt, :worker)"),
                    {"job": job.id, "attempt": job.attempts, "worker": worker_name()})
