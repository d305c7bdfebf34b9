"""PostgreSQL fixtures: a throw-away database migrated by Alembic, an app on it, a live server.

The server is `PORTAL_TEST_POSTGRES_URL` (see `tests.conftest.pg_server_url`). Every test in this
folder is marked `postgres`. Where no server answers, the tests skip with the reason, unless `CI`
is set: then they fail, because a CI run that silently skipped them would prove nothing.

One database per module (`portal_test_<hex>`, created with AUTOCOMMIT `CREATE DATABASE`, dropped
with `DROP DATABASE ... WITH (FORCE)`), migrated once by the real Alembic migrations; each test
gets its tables truncated (`pg_app`), which is far faster than a database per test.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from portal.migrate import upgrade
from portal.models import Base
from tests.conftest import Builder, make_app, pg_server_url, postgres_available, serving

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before the mark plugin applies `-m`
def pytest_collection_modifyitems(config, items):
    """Marks every test of this folder `postgres`, so `-m "not postgres"` leaves them all out."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.postgres)


def render(url: URL) -> str:
    """The URL as text with its password (str(url) would mask it as ***)."""
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server() -> URL:
    """The server's URL once one answers; skip (no CI) or fail (CI) when none does."""
    url = pg_server_url()
    if not postgres_available():
        shown = make_url(url).render_as_string(hide_password=True)
        reason = (f"no PostgreSQL server answers at {shown} "
                  "(set PORTAL_TEST_POSTGRES_URL to point at one)")
        if "CI" in os.environ:  # set at all, whatever its value: never skip on CI
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return make_url(url)


@pytest.fixture(autouse=True)
def _require_postgres(pg_server):
    """Every test here needs the server, even one that asks for no other fixture."""


def run_on_server(server: URL, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE need that)."""
    admin = create_engine(render(server), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        admin.dispose()


def create_database(server: URL) -> URL:
    name = f"portal_test_{secrets.token_hex(6)}"
    run_on_server(server, f'CREATE DATABASE "{name}"')
    return server.set(database=name)


def drop_database(server: URL, name: str) -> None:
    run_on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pg_database(pg_server) -> str:
    """A fresh database migrated to head by Alembic; yields its SQLAlchemy URL (as text)."""
    url = create_database(pg_server)
    try:
        engine = create_engine(render(url))
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        yield render(url)
    finally:
        drop_database(pg_server, url.database)


def truncate_all(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture
def pg_app(tmp_path, monkeypatch, pg_database):
    """The app on the module's database, every table emptied first."""
    truncate_all(pg_database)
    app = make_app(tmp_path, monkeypatch, pg_database)
    assert app.extensions["portal_db"].engine.dialect.name == "postgresql"
    yield app
    app.extensions["portal_db"].engine.dispose()


@pytest.fixture
def pg_session_factory(pg_app):
    return pg_app.extensions["portal_db"].session_factory


@pytest.fixture
def pg_db(pg_app, pg_session_factory):
    """A session of the PostgreSQL database, outside any request."""
    with pg_app.app_context():
        session = pg_session_factory()
        yield session
        session.close()


@pytest.fixture
def pg_build(pg_app, pg_db) -> Builder:
    return Builder(pg_app, pg_db)


@pytest.fixture
def live_server(pg_app):
    """The app served over real HTTP by a threaded werkzeug server; yields its base URL."""
    with serving(pg_app) as url:
        yield url
