"""Rendered pay pages kept per process, checked against the database on every request.

A page is reused only while one cheap query finds the link, its lab and its payments exactly
as they were when it was rendered (their updated_at), the link on the same side of its expiry,
and the same language chosen. Anything else renders afresh. Entries live ten minutes at most,
well inside the Pay form token's day.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

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
        self._entries: OrderedDict[tuple, tuple[float, tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def has(self, key: tuple) -> bool:
        return key in self._entries

    def get(self, key: tuple, version: tuple) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            born, seen_version, value = entry
            if seen_version != version or time.monotonic() - born > MAX_AGE_SECONDS:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: tuple, version: tuple, value: Any) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic(), version, value)
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def current_version(session: Session, token: str, now: datetime | None = None
                    ) -> tuple[tuple, str | None, str | None] | None:
    """(version, link language, lab default language) of the link, or None if there is none."""
    row = session.execute(_VERSION, {"token": token}).first()
    if row is None:
        return None
    link_updated, expires_at, language, lab_updated, lab_language, paid_updated = row
    expired = expires_at <= (now or utcnow())
    return (link_updated, lab_updated, paid_updated, expired), language, lab_language


def version_of(link: OnlinePayment, now: datetime | None = None) -> tuple:
    """The same version, from a link loaded with its lab and payments (no query)."""
    paid_updated = max((p.updated_at for p in link.payments), default=None)
    return (link.updated_at, link.lab.updated_at, paid_updated,
            link.expires_at <= (now or utcnow()))
