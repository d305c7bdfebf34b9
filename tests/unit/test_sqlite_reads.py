"""On SQLite a read-only view's transaction must not take the write lock (BEGIN IMMEDIATE)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from portal.extensions import make_engine, reads_only


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'locks.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    yield engine
    engine.dispose()


@pytest.fixture
def writer(tmp_path, engine):
    """A second connection holding the write lock, as a long write transaction would."""
    other = sqlite3.connect(tmp_path / "locks.db", isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (2)")
    yield other
    other.execute("ROLLBACK")
    other.close()


def _short_wait(conn):
    conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=100")  # outside a BEGIN


def test_a_read_only_transaction_reads_while_another_connection_writes(engine, writer):
    with engine.connect() as conn:
        _short_wait(conn)
        with reads_only():
            with conn.begin():
                assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_other_transactions_still_take_the_write_lock_up_front(engine, writer):
    with engine.connect() as conn:
        _short_wait(conn)
        with pytest.raises(Exception, match="locked"):
            with conn.begin():
                conn.execute(text("SELECT count(*) FROM t"))


def test_the_pay_page_reads_while_a_writer_holds_the_lock(app, build, lab, client):
    link = build.link(lab)
    path = app.config["PORTAL_DATABASE_URL"].removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert client.get(f"/pay/{link.token}").status_code == 200
    finally:
        other.execute("ROLLBACK")
        other.close()
