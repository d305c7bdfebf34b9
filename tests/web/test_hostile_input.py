"""The hostile-input table against every route, on SQLite (tests/postgres runs it on PostgreSQL)."""

import time

from tests.hostile import run_tables


def test_no_route_answers_5xx_or_stores_hostile_input(app, db, build):
    started = time.monotonic()
    refused, extremes = run_tables(app, db, build)
    elapsed = time.monotonic() - started
    print(f"\\nhostile table: {len(refused.routes)} route-methods, {refused.requests} refused "
          f"+ {extremes.requests} extreme requests in {elapsed:.1f} s")
    assert refused.failures == []
    assert extremes.failures == []
    assert {"POST /payments/webhook/<gateway>", "POST /payments/initiate",
            "GET /pay/<token>"} <= refused.routes
