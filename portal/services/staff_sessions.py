"""Server-side sessions of signed-in staff: what sign-out, a new password or an admin revokes.

The signed cookie carries a random session id (256 bits); the table keeps only its SHA-256, so
a copy of the database cannot be turned into a cookie. Every request checks the row: revoked,
idle longer than the idle limit, or older than the absolute limit, and the cookie is refused.
`last_seen_at` is written at most once a minute, not on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, joinedload

from ..models import StaffSession, User
from .audit import audit

TOUCH_EVERY = timedelta(minutes=1)
KEEP_ENDED_FOR = timedelta(days=30)  # then deleted at the user's next sign-in


@dataclass(frozen=True)
class Limits:
    idle: timedelta
    absolute: timedelta


class Ended(StrEnum):
    """Why a cookie's session is over."""

    UNKNOWN = "unknown"  # no such session, or not this user's
    REVOKED = "revoked"  # signed out, here or elsewhere; a new password; an admin
    IDLE = "idle"
    EXPIRED = "expired"  # the absolute lifetime


def hash_session_id(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def start(session: Session, user: User, *, ip: str | None, user_agent: str | None,
          now: datetime, limits: Limits) -> tuple[str, StaffSession]:
    """A new session of `user`: the raw id for the cookie, and its row. The caller commits."""
    forget_before = now - max(KEEP_ENDED_FOR, limits.absolute)
    session.execute(delete(StaffSession).where(StaffSession.user_id == user.id,
                                               StaffSession.created_at < forget_before))
    raw = secrets.token_urlsafe(32)
    row = StaffSession(user_id=user.id, token_hash=hash_session_id(raw), created_at=now,
                       last_seen_at=now, ip=(ip or None) and ip[:45],
                       device=describe_device(user_agent))
    row.user = user
    session.add(row)
    return raw, row


def check(session: Session, raw: object, user_id: int, *, now: datetime,
          limits: Limits) -> StaffSession | Ended:
    """The live session (its user loaded) behind a cookie, or why there is none."""
    if not isinstance(raw, str) or not raw or len(raw) > 100:
        return Ended.UNKNOWN
    # The lab comes in the same query: every staff page names it and scopes to it.
    row = session.scalar(select(StaffSession)
                         .options(joinedload(StaffSession.user).joinedload(User.lab))
                         .where(StaffSession.token_hash == hash_session_id(raw)))
    if row is None or row.user_id != user_id:
        return Ended.UNKNOWN
    if row.revoked_at is not None or not row.user.active:
        return Ended.REVOKED
    if now >= row.created_at + limits.absolute:
        return Ended.EXPIRED
    if now >= row.last_seen_at + limits.idle:
        return Ended.IDLE
    return row


def touch(row: StaffSession, now: datetime) -> bool:
    """Marks activity, at most once a minute; True when there is something to commit."""
    if now - row.last_seen_at < TOUCH_EVERY:
        return False
    row.last_seen_at = now
    return True


def end(session: Session, row: StaffSession, now: datetime) -> None:
    session.execute(update(StaffSession).where(StaffSession.id == row.id,
                                               StaffSession.revoked_at.is_(None))
                    .values(revoked_at=now))


def revoke_all(session: Session, user_id: int, now: datetime) -> int:
    """Ends every session of the user; how many were still open."""
    ended = session.scalars(update(StaffSession).where(StaffSession.user_id == user_id,
                                                       StaffSession.revoked_at.is_(None))
                            .values(revoked_at=now).returning(StaffSession.id))
    return len(ended.all())


def active(session: Session, user_id: int, *, now: datetime, limits: Limits
           ) -> list[StaffSession]:
    """The user's sessions that would still be let in, most recently used first."""
    return list(session.scalars(
        select(StaffSession).where(StaffSession.user_id == user_id,
                                   StaffSession.revoked_at.is_(None),
                                   StaffSession.created_at > now - limits.absolute,
                                   StaffSession.last_seen_at > now - limits.idle)
        .order_by(StaffSession.last_seen_at.desc(), StaffSession.id.desc())))


def revoke_for_user(session: Session, user: User, *, actor_id: int | None, ip: str | None,
                    now: datetime, scope: str) -> int:
    """Ends all of `user`'s sessions, audited; `scope` says who asked ("self" or "admin")."""
    count = revoke_all(session, user.id, now)
    audit(session, lab_id=user.lab_id, user_id=actor_id, action="user.sessions_revoked",
          object_type="user", object_id=user.id, ip=ip, scope=scope, sessions=count)
    return count


# --- a readable name for the browser ---------------------------------------------------------

_BROWSERS = (("Edge", r"Edg(?:e|A|iOS)?/"), ("Opera", r"OPR/|Opera"),
             ("Samsung Internet", r"SamsungBrowser/"), ("Firefox", r"Firefox/|FxiOS/"),
             ("Chrome", r"Chrome/|CriOS/|Chromium/"), ("Safari", r"Safari/"))
_SYSTEMS = (("Android", r"Android"), ("iPhone", r"iPhone"), ("iPad", r"iPad"),
            ("Windows", r"Windows"), ("ChromeOS", r"CrOS"), ("macOS", r"Mac OS X|Macintosh"),
            ("Linux", r"Linux"))


def describe_device(user_agent: str | None) -> str:
    """"Chrome on Windows" from a User-Agent header; never the raw header (it is unbounded)."""
    ua = (user_agent or "")[:512]
    browser = next((name for name, pattern in _BROWSERS if re.search(pattern, ua)), None)
    system = next((name for name, pattern in _SYSTEMS if re.search(pattern, ua)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"
