"""Benchmarks (`make bench`): figures printed as ratios to a bare Flask app, never asserted."""

from __future__ import annotations

import os

from sqlalchemy import create_engine

SERVER = os.environ.get("PORTAL_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def run_on_server(statement: str) -> None:
    """One statement outside a transaction (CREATE or DROP DATABASE) on the PostgreSQL server."""
    engine = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()
