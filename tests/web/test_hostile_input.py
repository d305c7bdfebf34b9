"""The hostile-input table against every route, on SQLite (tests/postgres runs it on PostgreSQL)."""

import time

from tests.hostile import run_tables


def test_no_route_answers_5xx_or_stores_hostile_input(app, db, build):
    started, cpu = time.monotonic(), time.process_time()
    refused, extremes = run_tables(app, db, build)
    print(f"\nhostile table: {len(refused.routes)} route-methods, {refused.requests} refused "
          f"+ {extremes.requests} extreme requests in {time.monotonic() - started:.1f} s "
          f"({time.process_time() - cpu:.1f} s of CPU)")
    assert refused.failures == []
    assert extremes.failures == []
    assert {"POST /payments/webhook/<gateway>", "POST /payments/initiate",
            "GET /pay/<token>"} <= refused.routes
