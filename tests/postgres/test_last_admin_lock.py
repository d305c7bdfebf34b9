"""Two admins removing each other at once on PostgreSQL: the lab's row lock keeps one admin."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select, text

from portal.models import Lab, Role, User
from portal.services import users

TIMEOUT = 30


def backends_waiting_on_a_lock(session) -> int:
    return session.scalar(text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"))


def in_thread(app, session_factory, change, results: dict, key: str) -> threading.Thread:
    def target() -> None:
        try:
            with app.app_context(), session_factory() as session:
                try:
                    change(session)
                    session.commit()
                    results[key] = "done"
                except users.LastAdminError as exc:
                    session.rollback()
                    results[key] = exc
        except BaseException as exc:  # reported by the main thread
            results[key] = exc

    thread = threading.Thread(target=target, name=f"admin-change-{key}")
    thread.start()
    return thread


def test_demote_and_deactivate_racing_leave_one_admin(pg_app, pg_build, pg_db,
                                                     pg_session_factory):
    lab = pg_build.lab()
    first = pg_build.user(lab, "first@lab.test", role=Role.ADMIN)
    second = pg_build.user(lab, "second@lab.test", role=Role.ADMIN)
    results: dict = {}
    with pg_session_factory() as holder, pg_session_factory() as observer:
        holder.execute(select(Lab.id).where(Lab.id == lab.id).with_for_update())
        threads = [
            in_thread(pg_app, pg_session_factory, lambda s: users.change_role(
                s, lab.id, first.id, Role.STAFF, actor_id=second.id, ip=None), results, "demote"),
            in_thread(pg_app, pg_session_factory, lambda s: users.deactivate(
                s, lab.id, second.id, actor_id=first.id, ip=None), results, "deactivate"),
        ]
        deadline = time.monotonic() + TIMEOUT
        while backends_waiting_on_a_lock(observer) < 2:
            observer.rollback()
            assert time.monotonic() < deadline, "the changes never waited for the lab's lock"
            time.sleep(0.02)
        assert results == {}
        holder.rollback()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive()

    outcomes = sorted("done" if r == "done" else type(r).__name__ for r in results.values())
    assert outcomes == ["LastAdminError", "done"], results
    pg_db.expire_all()
    admins = pg_db.scalar(select(func.count()).select_from(User).where(
        User.lab_id == lab.id, User.role == Role.ADMIN, User.active.is_(True)))
    assert admins == 1
