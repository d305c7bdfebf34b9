"""Readiness (database, schema at head, a live worker) and the queue's state, for operators."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..models import Job, Notification, OutboxStatus, WorkerHeartbeat, utcnow

HEARTBEAT_WITHIN = timedelta(minutes=1)


@dataclass
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons


@functools.cache
def schema_heads() -> frozenset[str]:
    """The newest revision(s) of the migrations shipped with this code (read once)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ..migrate import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def readiness(session: Session, *, now: datetime | None = None) -> Readiness:
    """Each check's word, and the reasons this node should not get traffic yet; rolls back.

    The caller's session, not a connection of its own: within a request that holds SQLite's
    write lock already, a second connection would wait for it until its busy timeout.
    """
    report = Readiness()
    now = now or utcnow()
    try:
        session.execute(text("SELECT 1"))
        report.checks["database"] = "ok"
        if _schema_at_head(session, report):
            _worker_seen(session, report, now)
    except SQLAlchemyError as exc:
        report.checks.setdefault("database", "unreachable")
        if report.checks["database"] == "unreachable":
            report.reasons.append(f"database unreachable ({type(exc).__name__})")
        else:
            report.reasons.append(f"database query failed ({type(exc).__name__})")
    finally:
        session.rollback()
    return report


def _schema_at_head(session: Session, report: Readiness) -> bool:
    heads = schema_heads()
    try:
        with session.begin_nested():
            current = frozenset(session.scalars(
                text("SELECT version_num FROM alembic_version")))
    except SQLAlchemyError:
        current = frozenset()
    if current == heads:
        report.checks["schema"] = "ok"
        return True
    report.checks["schema"] = "behind"
    report.reasons.append(
        f"database schema at {', '.join(sorted(current)) or 'nothing'}, this code needs "
        f"{', '.join(sorted(heads))} (run `portal db upgrade`)")
    return False


def _worker_seen(session: Session, report: Readiness, now: datetime) -> None:
    seen = session.scalar(select(func.max(WorkerHeartbeat.seen_at)))
    if seen is not None and seen.tzinfo is None:  # a raw column read: naive UTC
        seen = seen.replace(tzinfo=now.tzinfo)
    if seen is not None and now - seen <= HEARTBEAT_WITHIN:
        report.checks["worker"] = "ok"
        return
    report.checks["worker"] = "silent"
    report.reasons.append("no worker heartbeat within the last minute (is `portal worker` "
                          "running?)")


@dataclass(frozen=True)
class QueueState:
    due: int
    oldest_due_seconds: float
    running: int
    dead: int
    notifications: dict[tuple[str, str], int]
    heartbeat_age_seconds: float | None


def queue_state(session: Session, *, now: datetime | None = None) -> QueueState:
    """The outbox at this moment: indexed counts only (status first in every index used);
    rolls back."""
    now = now or utcnow()
    try:
        due, oldest = session.execute(
            select(func.count(), func.min(Job.run_at))
            .where(Job.status == OutboxStatus.QUEUED, Job.run_at <= now)).one()
        by_status: dict[OutboxStatus, int] = {
            status: count for status, count in session.execute(
                select(Job.status, func.count())
                .where(Job.status.in_((OutboxStatus.RUNNING, OutboxStatus.DEAD)))
                .group_by(Job.status))}
        notifications = {
            (str(channel), str(status)): count for channel, status, count in session.execute(
                select(Notification.channel, Notification.status, func.count())
                .where(Notification.status.in_((OutboxStatus.QUEUED, OutboxStatus.RUNNING)))
                .group_by(Notification.channel, Notification.status))}
        seen = session.scalar(select(func.max(WorkerHeartbeat.seen_at)))
    finally:
        session.rollback()
    return QueueState(
        due=int(due),
        oldest_due_seconds=max(0.0, (now - _aware(oldest, now)).total_seconds())
        if oldest is not None else 0.0,
        running=int(by_status.get(OutboxStatus.RUNNING, 0)),
        dead=int(by_status.get(OutboxStatus.DEAD, 0)),
        notifications=notifications,
        heartbeat_age_seconds=(now - _aware(seen, now)).total_seconds()
        if seen is not None else None)


def _aware(value: datetime, now: datetime) -> datetime:
    return value.replace(tzinfo=now.tzinfo) if value.tzinfo is None else value
