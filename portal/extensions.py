"""Extension singletons and the database handle; nothing here does work at import."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from flask import Flask
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

csrf = CSRFProtect()
login_manager = LoginManager()

# Set while code that only reads runs: its SQLite transactions BEGIN DEFERRED (a WAL reader
# waits for no one) instead of taking the write lock.
_reads_only: ContextVar[bool] = ContextVar("portal_reads_only", default=False)


@contextmanager
def reads_only() -> Iterator[None]:
    token = _reads_only.set(True)
    try:
        yield
    finally:
        _reads_only.reset(token)


def read_only_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view that never writes: on SQLite it does not queue behind writers."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reads_only():
            return view(*args, **kwargs)
    return wrapper


def make_engine(url: str) -> Engine:
    """PostgreSQL with a pool; SQLite in WAL mode with write-locking BEGINs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # let the BEGIN below be ours
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        writers = _WriterQueue.for_database(engine.url.database)

        # SQLite has no row locks: BEGIN IMMEDIATE takes the write lock up front, so two
        # transactions that read-then-write are serialised instead of failing as "busy".
        # Code that only reads (read_only_view) begins deferred and waits for no writer.
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            if _reads_only.get():
                conn.exec_driver_sql("BEGIN")
                return
            if writers is not None:
                writers.wait_turn(conn.connection.dbapi_connection)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                if writers is not None:
                    writers.done(conn.connection.dbapi_connection)
                raise

        if writers is not None:
            writers.release_after_transactions(engine)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_when_idle(engine)
    return engine


class _WriterQueue:
    """SQLite's writers, queued on an flock(2) beside the database file.

    SQLite's own wait for the write lock is a sleep-and-retry loop (1, 2, 5, 10 ... 100 ms):
    under concurrent writes most of the time goes to sleeping while the lock is free. A
    writer here first waits on an exclusive flock, which the kernel hands to the next waiter
    the moment it is released (at COMMIT or ROLLBACK), so the write lock changes hands at
    once. Each connection has its own open file (threads and processes queue alike); a
    process that dies releases its flock. busy_timeout stays as the guard for anything that
    writes without the queue (sqlite3's command line, a reads_only transaction that writes).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: dict[int, int] = {}  # id(DBAPI connection) -> its open lock file
        self.holding: set[int] = set()

    @classmethod
    def for_database(cls, database: str | None) -> _WriterQueue | None:
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return cls(os.path.abspath(database) + "-writers.lock")

    @staticmethod
    def _key(conn: Any) -> int:
        """The DBAPI connection's id, whether handed it or the pool's proxy for it."""
        return id(getattr(conn, "dbapi_connection", None) or conn)

    def _file(self, dbapi_conn: Any) -> int:
        key = self._key(dbapi_conn)
        fd = self.files.get(key)
        if fd is None:
            fd = self.files[key] = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd

    def wait_turn(self, dbapi_conn: Any) -> None:
        key = self._key(dbapi_conn)
        if key in self.holding:
            return
        fcntl.flock(self._file(dbapi_conn), fcntl.LOCK_EX)
        self.holding.add(key)

    def done(self, dbapi_conn: Any) -> None:
        key = self._key(dbapi_conn)
        if key in self.holding:
            self.holding.discard(key)
            fcntl.flock(self.files[key], fcntl.LOCK_UN)

    def forget(self, dbapi_conn: Any) -> None:
        self.done(dbapi_conn)
        fd = self.files.pop(self._key(dbapi_conn), None)
        if fd is not None:
            os.close(fd)

    def release_after_transactions(self, engine: Engine) -> None:
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_conn: Any) -> None:
            try:
                commit(dbapi_conn)
            finally:
                self.done(dbapi_conn)

        def do_rollback(dbapi_conn: Any) -> None:
            try:
                rollback(dbapi_conn)
            finally:
                self.done(dbapi_conn)

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        event.listen(engine, "close", lambda dbapi_conn, _record: self.forget(dbapi_conn))
        event.listen(engine, "invalidate",
                     lambda dbapi_conn, _record, _exc: self.forget(dbapi_conn))


PING_AFTER_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, but only for a connection that sat unused for a while.

    A connection busy a moment ago is alive: pinging it too cost a round trip on every
    request. One idle across a database restart is found dead here and replaced; one that
    dies in use is caught by SQLAlchemy's disconnect handling, which renews the whole pool.
    """
    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as exc:  # any failure: a dead connection the pool replaces
            raise DisconnectionError(str(exc)) from exc


class Database:
    """One engine and a request-scoped session per app."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.session_factory: sessionmaker[Session] | None = None
        self.session: scoped_session[Session] | None = None

    def init_app(self, app: Flask) -> None:
        self.engine = make_engine(app.config["PORTAL_DATABASE_URL"])
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)
        self.session = scoped_session(self.session_factory)
        app.extensions["portal_db"] = self

        # Each request (and each app context) ends its transaction, so no lock outlives it.
        app.teardown_request(lambda _exc: self.session.remove())
        app.teardown_appcontext(lambda _exc: self.session.remove())


def db_session() -> Session:
    """The current app's request-scoped session."""
    from flask import current_app

    return current_app.extensions["portal_db"].session()
