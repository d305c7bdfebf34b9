"""Rendered pay pages kept per process, checked against the database on every request.

A page is reused only while one cheap query finds the link, its lab and its payments exactly
as they were just before it was rendered (their updated_at), the link on the same side of its
expiry, and the same language chosen. Anything else renders afresh. Entries live ten minutes
at most, well inside the Pay form token's day.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..models import Lab, OnlinePayment, Payment, utcnow

MAX_ENTRIES = 4096
MAX_AGE_SECONDS = 600.0

_VERSION = (
    select(OnlinePayment.updated_at, OnlinePayment.expires_at, OnlinePayment.language,
           Lab.updated_at, Lab.default_language,
           select(func.max(Payment.updated_at))
           .where(Payment.online_payment_id == OnlinePayment.id).scalar_subquery())
    .join(Lab, Lab.id == OnlinePayment.lab_id)
    .where(OnlinePayment.token == bindparam("token")))


class PageCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, tuple[float, tuple, datetime, bool, Any]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, version: tuple, now: datetime | None = None) -> Any:
        """The page kept for `key` if it was rendered at `version` and the link is still on
        the same side of its expiry."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            born, seen_version, expires_at, expired, value = entry
            if (seen_version != version or time.monotonic() - born > MAX_AGE_SECONDS
                    or (expires_at <= (now or utcnow())) != expired):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: tuple, version: tuple, link: OnlinePayment, value: Any,
            now: datetime | None = None) -> None:
        """`version` is what `current_version` read before the link was loaded to render."""
        expired = link.expires_at <= (now or utcnow())
        with self._lock:
            self._entries[key] = (time.monotonic(), version, link.expires_at, expired, value)
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class Version(NamedTuple):
    """The row as the database driver hands it back: compared, never interpreted."""

    link_updated: Any
    expires_at: Any
    language: str | None
    lab_updated: Any
    lab_language: str | None
    payments_updated: Any


def current_version(engine: Engine, token: str) -> Version | None:
    """The link's version, or None if there is none: one statement on a pooled connection,
    straight through the driver (no transaction around it: one statement reads one
    consistent snapshot by itself). This runs on every patient GET of a kept page."""
    sql, positional = _compiled(engine)
    params = (token,) if positional else {"token": token}
    driver_error = engine.dialect.loaded_dbapi.Error
    try:
        connection = engine.raw_connection()
    except driver_error as exc:  # the pool hands back the driver's own error
        raise DBAPIError.instance(sql, params, exc, driver_error, dialect=engine.dialect) \
            from exc
    try:
        driver = connection.driver_connection
        autocommit = getattr(driver, "autocommit", None)
        if autocommit is False:  # psycopg: no BEGIN and ROLLBACK round trips
            driver.autocommit = True
        try:
            cursor = connection.cursor()
            cursor.execute(sql, params)
            row = cursor.fetchone()
            cursor.close()
        finally:
            if autocommit is False:
                driver.autocommit = False
    except driver_error as exc:  # as SQLAlchemy would: a dead connection leaves the pool
        lost = engine.dialect.is_disconnect(exc, connection.dbapi_connection, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, params, exc, driver_error, dialect=engine.dialect,
                                  connection_invalidated=lost) from exc
    finally:
        connection.close()
    return None if row is None else Version(*row)


_SQL: dict[str, tuple[str, bool]] = {}


def _compiled(engine: Engine) -> tuple[str, bool]:
    found = _SQL.get(engine.dialect.name)
    if found is None:
        compiled = _VERSION.compile(dialect=engine.dialect)
        found = _SQL[engine.dialect.name] = (str(compiled), bool(compiled.positional))
    return found
