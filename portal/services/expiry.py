"""The expiry sweep: open links past their expiry become `expired`, their checkouts are closed."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import OPEN_LINK_STATES, OnlinePayment, utcnow
from .audit import audit
from .cancellation import queue_checkout_cancellation
from .events import expire_link

log = logging.getLogger(__name__)

BATCH = 200
MAX_BATCHES = 50  # one sweep ends; whatever is left goes to the next


def expire_links(session: Session, *, now: datetime | None = None,
                 batch: int = BATCH) -> list[int]:
    """Expires due links a batch per transaction, each under its row lock; returns their ids.

    On PostgreSQL a link locked at that moment (a webhook is paying it) is skipped and left to
    the next sweep; either way the state is re-read under the lock, so paid beats expired
    cleanly. Gateway-side checkouts are closed by jobs queued in the same transaction.
    """
    now = now or utcnow()
    expired: list[int] = []
    for _ in range(MAX_BATCHES):
        query = (select(OnlinePayment)
                 .where(OnlinePayment.status.in_(tuple(OPEN_LINK_STATES)),
                        OnlinePayment.expires_at <= now)
                 .order_by(OnlinePayment.id).limit(batch)
                 .execution_options(populate_existing=True))
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        links = list(session.scalars(query))
        for link in links:
            expire_link(link)  # locked by the query above (FOR UPDATE on PostgreSQL)
            audit(session, lab_id=link.lab_id, user_id=None, action="link.expire",
                  object_type="online_payment", object_id=link.id,
                  expires_at=link.expires_at.isoformat())
            queue_checkout_cancellation(session, link)
            expired.append(link.id)
        session.commit()
        if len(links) < batch:
            break
    if expired:
        log.info("expired %d link(s)", len(expired))
    return expired
