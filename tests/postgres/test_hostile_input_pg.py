"""The hostile-input table on PostgreSQL: where a NUL byte, an over-long text or a number out of
BIGINT range used to reach the database (`ValueError: A string literal cannot contain NUL`)."""

import time

from tests.conftest import Builder, FreshReadSession
from tests.hostile import run_tables


def test_no_route_answers_5xx_or_stores_hostile_input_on_postgres(pg_app):
    # Not pg_db: it holds an app context open, which every request would then share (with its
    # `g` and the signed-in user of the first request).
    session = FreshReadSession(pg_app.extensions["portal_db"].engine, expire_on_commit=False)
    started = time.monotonic()
    try:
        refused, extremes = run_tables(pg_app, session, Builder(pg_app, session))
    finally:
        session.close()
    print(f"\nhostile table on PostgreSQL: {len(refused.routes)} route-methods, "
          f"{refused.requests} refused + {extremes.requests} extreme requests in "
          f"{time.monotonic() - started:.1f} s")
    assert refused.failures == []
    assert extremes.failures == []
