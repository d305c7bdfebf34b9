"""Extension singletons and the database handle; nothing here does work at import."""

from __future__ import annotations

from flask import Flask
from flask_login import LoginManager
from flask_wtf import CSRFProtect
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

csrf = CSRFProtect()
login_manager = LoginManager()


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

        # SQLite has no row locks: BEGIN IMMEDIATE takes the write lock up front, so two
        # transactions that read-then-write are serialised instead of failing as "busy".
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


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
