"""SQLite's writers queue on an flock beside the database file (extensions._WriterQueue)."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest
from sqlalchemy import text

from portal.extensions import make_engine, reads_only


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/queue.db")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    engine.dispose()


def queue_is_free(engine) -> bool:
    """Whether another writer could take its turn now (a non-blocking try on the lock file)."""
    fd = os.open(f"{engine.url.database}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the file drops a lock taken through it
    return True


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_writer_holds_its_turn_until_its_transaction_ends(engine, end):
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert not queue_is_free(engine)
        getattr(conn, end)()
        assert queue_is_free(engine)


def test_a_closed_connection_ends_the_turn(engine):
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
        assert not queue_is_free(engine)
    assert queue_is_free(engine)  # closing returns the connection: rolled back, turn ended
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0


def test_readers_do_not_queue(engine):
    with reads_only(), engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
        assert queue_is_free(engine)


def test_a_second_writer_waits_for_the_first_and_both_commit(engine):
    order = []
    first_in = threading.Event()

    def second():
        first_in.wait(5)
        with engine.connect() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            order.append("second wrote")
            conn.commit()

    thread = threading.Thread(target=second)
    thread.start()
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        first_in.set()
        thread.join(0.3)
        assert thread.is_alive() and order == []  # queued behind the first writer
        order.append("first committed")
        conn.commit()
    thread.join(10)
    assert order == ["first committed", "second wrote"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_a_failed_begin_gives_the_turn_back(engine, monkeypatch):
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # a connection exists and began
        conn.rollback()
        real = conn.exec_driver_sql

        def refuse(statement, *args, **kwargs):
            if statement == "BEGIN IMMEDIATE":
                raise RuntimeError("refused")
            return real(statement, *args, **kwargs)

        monkeypatch.setattr(conn, "exec_driver_sql", refuse)
        with pytest.raises(RuntimeError):
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert queue_is_free(engine)
