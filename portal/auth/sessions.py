"""Staff sessions in the web layer: begun at sign-in, checked on every request, ended at sign-out.

The signed cookie holds Flask-Login's user id, the session id and the password fingerprint; the
`staff_sessions` row decides whether it still lets anyone in (portal/services/staff_sessions.py).
A refused cookie is emptied; pages then redirect to /login saying why, JSON answers 401.
Patient pages, the sandbox, webhooks and the JSON API never look at it: no row, no write.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from flask import current_app, flash, g, jsonify, redirect, request, url_for
from flask import session as cookie_session
from flask_login import current_user, login_url, login_user, logout_user
from sqlalchemy.orm import Session

from ..edge import is_api_path
from ..extensions import db_session, login_manager
from ..i18n import staff_gettext, staff_ngettext
from ..models import User, utcnow
from ..services import staff_sessions
from ..services.staff_sessions import Ended, Limits
from ..services.users import password_fingerprint
from ..tenancy import client_ip
from . import bp

SESSION_ID = "sid"
PASSWORD_IN_SESSION = "password_fp"  # nosec B105  # a session key name, not a password
LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds", SESSION_ID,
              PASSWORD_IN_SESSION)
NO_STAFF_SESSION = frozenset({"pay", "sandbox", "webhooks", "api"})


def limits() -> Limits:
    config = current_app.config
    return Limits(idle=timedelta(minutes=config["PORTAL_SESSION_IDLE_MINUTES"]),
                  absolute=timedelta(hours=config["PORTAL_SESSION_MAX_HOURS"]))


def begin(db: Session, user: User) -> None:
    """Signs `user` in on this browser under a new session id; the caller commits.

    A session this browser had (another user's, or the one being renewed) ends here.
    """
    now = utcnow()
    previous = g.get("staff_session")
    if previous is not None:
        staff_sessions.end(db, previous, now)
    raw, row = staff_sessions.start(db, user, ip=client_ip(),
                                    user_agent=request.headers.get("User-Agent"),
                                    now=now, limits=limits())
    for key in LOGIN_KEYS:
        cookie_session.pop(key, None)
    cookie_session[SESSION_ID] = raw
    cookie_session[PASSWORD_IN_SESSION] = password_fingerprint(user.password_hash)
    login_user(user)
    g.staff_session = row


def end_here(db: Session) -> None:
    """Sign-out: the row is revoked and the cookie forgets everything, its CSRF token too."""
    row = g.get("staff_session")
    if row is not None:
        staff_sessions.end(db, row, utcnow())
        db.commit()
    logout_user()
    cookie_session.clear()


def current_session_id() -> int | None:
    row = g.get("staff_session")
    return row.id if row is not None else None


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user of a live session, else None with the cookie emptied and the reason kept."""
    user_id = str(user_id)
    uid = int(user_id) if user_id.isascii() and user_id.isdigit() else -1
    found = staff_sessions.check(db_session(), cookie_session.get(SESSION_ID), uid,
                                 now=utcnow(), limits=limits())
    if isinstance(found, Ended):
        return _refuse(found)
    user = found.user
    # A password hash changed by any path (even outside the services) ends the session too.
    presented = str(cookie_session.get(PASSWORD_IN_SESSION, ""))
    if not hmac.compare_digest(presented, password_fingerprint(user.password_hash)):
        return _refuse(Ended.REVOKED)
    g.staff_session = found
    return user


def _refuse(reason: Ended) -> None:
    g.session_ended = reason
    for key in LOGIN_KEYS:
        cookie_session.pop(key, None)
    return None


@bp.before_app_request
def note_activity():
    """Loads the staff user (so the session is checked first) and marks it seen."""
    if request.endpoint in (None, "static") or request.blueprint in NO_STAFF_SESSION:
        return None
    if not current_user.is_authenticated:
        return None
    row = g.get("staff_session")
    if row is not None and staff_sessions.touch(row, utcnow()):
        db_session().commit()  # before the view: nothing else is pending yet
    return None


def _plural_count(value: float) -> int:
    return int(value) if float(value).is_integer() else 2  # "1.5 hours" takes the plural


def ended_message(reason: Ended | None) -> str:
    config = current_app.config
    if reason == Ended.IDLE:
        minutes = config["PORTAL_SESSION_IDLE_MINUTES"]
        shown = format(minutes, "g")
        return staff_ngettext(
            "You were signed out after %(minutes)s minute without activity. "
            "Please sign in again.",
            "You were signed out after %(minutes)s minutes without activity. "
            "Please sign in again.",
            _plural_count(minutes), minutes=shown)
    if reason == Ended.EXPIRED:
        hours = config["PORTAL_SESSION_MAX_HOURS"]
        shown = format(hours, "g")
        return staff_ngettext(
            "You were signed out: a session lasts at most %(hours)s hour. Please sign in again.",
            "You were signed out: a session lasts at most %(hours)s hours. "
            "Please sign in again.",
            _plural_count(hours), hours=shown)
    return staff_gettext("You were signed out. Please sign in again.")


def _answers_json() -> bool:
    return (is_api_path(request.path) or request.is_json
            or request.accept_mimetypes.best == "application/json")


@login_manager.unauthorized_handler
def unauthorized():
    reason = g.get("session_ended")
    message = ended_message(reason) if reason else login_manager.login_message
    if _answers_json():
        code = "session_ended" if reason else "unauthorized"
        return jsonify(error={"code": code, "message": message}), 401
    flash(message, "info" if reason else login_manager.login_message_category)
    if request.method == "GET":
        return redirect(login_url("auth.login", next_url=request.url))
    return redirect(url_for("auth.login"), 303)  # a form's target is no page to come back to
