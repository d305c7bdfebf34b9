"""The dashboard's last 30 days on PostgreSQL: the same Kolkata-midnight scenario as on SQLite
(days by one CASE over UTC bounds, waits in seconds by EXTRACT(EPOCH ...)), and the grouped
queries read the payments through the lab's index, not one Python loop per row."""

from __future__ import annotations

from sqlalchemy import event

from tests.web.test_dashboard_month import check_month, seed_month


def test_last_30_days_on_postgresql(pg_app, pg_build, pg_db):
    lab = pg_build.lab("kolkata", timezone="Asia/Kolkata")
    seed_month(pg_build, pg_db, lab)
    engine = pg_app.extensions["portal_db"].engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        check_month(pg_db, lab)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Money per day, links per day, gateway shares, how many waits, the middle ones.
    assert len(statements) == 5, statements
