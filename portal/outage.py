"""Database outages: every request answers 503 while the database is unreachable.

Webhooks get `Retry-After` (gateways send again), the API its `unavailable` error, pages a
plain "try again in a minute" page that needs no database. The log says once that the database
is down and once that it is back, not a traceback per request.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, jsonify, make_response, request
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .edge import is_api_path, plain_page

log = logging.getLogger("portal.database")

# What a lost or refused connection raises: the server is down, restarting, or out of
# connections; a pool with every connection busy times out. Never the client's fault.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
RETRY_AFTER = {"webhook": "30", "api": "5", "page": "60"}


class DatabaseHealth:
    """Down or up, so that each change is logged once whatever the number of requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down = False

    def failed(self, exc: Exception) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
        log.error("database unavailable: %s", _summary(exc))

    def answered(self) -> None:
        if not self.down:  # the common case: no lock taken
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
        log.warning("database is back")


def _summary(exc: Exception) -> str:
    """The driver's first line (host and port, never the password), cut short."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}"[:300]


def watch(engine: Engine, health: DatabaseHealth) -> None:
    # A connection is handed out only after the pool's pre-ping (or a fresh connect)
    # succeeded: the database answers again.
    event.listen(engine, "checkout", lambda *_args: health.answered())


def init_app(app: Flask, engine: Engine) -> None:
    health = DatabaseHealth()
    app.extensions["portal_db_health"] = health
    watch(engine, health)

    def unavailable(exc):
        from .extensions import db_session

        try:
            db_session().rollback()
        except UNAVAILABLE:
            pass
        health.failed(exc)
        return answer()

    for exc_class in UNAVAILABLE:
        app.register_error_handler(exc_class, unavailable)


def answer():
    """The 503 for the current request, in the words its caller understands."""
    if request.path.startswith("/payments/webhook/"):
        response = jsonify(error={"code": "unavailable",
                                  "message": "Temporarily unavailable; send it again later."})
        kind = "webhook"
    elif is_api_path(request.path):
        response = jsonify(error={"code": "unavailable",
                                  "message": "The service is briefly unavailable; retry later."})
        kind = "api"
    else:
        response = plain_page("errors/unavailable.html", 503)
        kind = "page"
    response = make_response(response, 503)
    response.headers["Retry-After"] = RETRY_AFTER[kind]
    return response
