"""Benchmarks (`make bench`): figures printed as ratios to a bare Flask app, never asserted."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

SERVER = os.environ.get("PORTAL_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def run_on_server(statement: str) -> None:
    """One statement outside a transaction (CREATE or DROP DATABASE) on the PostgreSQL server."""
    engine = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


@contextmanager
def throwaway_portal(database: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh instance folder and database ("sqlite": a file in it; "postgres": a new database
    on SERVER) and the settings that point a portal at them; both are gone afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    name = f"portal_bench_{secrets.token_hex(4)}"
    if database == "postgres":
        run_on_server(f'CREATE DATABASE "{name}"')
        url = make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{folder}/bench.db"
    try:
        yield folder, {"PORTAL_INSTANCE_PATH": str(folder), "PORTAL_SECRET_KEY": "bench",
                       "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                       "PORTAL_DATABASE_URL": url}
    finally:
        if database == "postgres":
            run_on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)
