"""Idempotency keys as Stripe has them: the first response is kept and replayed for 24 hours.

The same key with another body is refused; a request arriving while the first with its key is
still running is refused too. Keys are per lab.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..models import IdempotencyKey, insert_unless_exists, utcnow

KEEP_FOR = timedelta(hours=24)
# A request that never finished (its process died) stops blocking its key after this.
IN_FLIGHT_FOR = timedelta(minutes=2)


class KeyInFlight(Exception):
    pass


class KeyReused(Exception):
    pass


@dataclass(frozen=True)
class Stored:
    status: int
    body: str


def fingerprint(method: str, path: str, raw_body: bytes) -> str:
    """The same request whatever the key order or spacing of its JSON."""
    try:
        canonical = json.dumps(json.loads(raw_body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = raw_body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _reserve(session: Session, lab_id: int, key: str, print_: str, now: datetime) -> bool:
    """Inserts the in-flight row unless the key has one; True when this request inserted it.

    One INSERT ... ON CONFLICT DO NOTHING: a taken key costs no error, no savepoint and no
    rolled-back transaction.
    """
    inserted = session.execute(
        insert_unless_exists(session, IdempotencyKey, "lab_id", "key")
        .values(lab_id=lab_id, key=key, fingerprint=print_, in_flight=True, created_at=now)
        .returning(IdempotencyKey.id)).first()
    return inserted is not None


def begin(session: Session, lab_id: int, key: str, print_: str) -> Stored | None:
    """Reserves `key` (committed) and returns None, or returns the response to replay."""
    now = utcnow()
    if _reserve(session, lab_id, key, print_, now):
        session.commit()
        return None
    row = session.scalar(select(IdempotencyKey).where(IdempotencyKey.lab_id == lab_id,
                                                      IdempotencyKey.key == key))
    if row is None:  # finished and pruned between our two statements: a fresh start
        session.commit()
        return begin(session, lab_id, key, print_)
    if row.created_at < now - KEEP_FOR or (row.in_flight
                                           and row.created_at < now - IN_FLIGHT_FOR):
        # Kept long enough, or its request never finished (its process died): start afresh.
        session.execute(delete(IdempotencyKey).where(
            IdempotencyKey.id == row.id, IdempotencyKey.created_at == row.created_at))
        session.commit()
        return begin(session, lab_id, key, print_)
    session.commit()
    if row.fingerprint != print_:
        raise KeyReused()
    if row.in_flight:
        raise KeyInFlight()
    if row.response_status is None or row.response_body is None:
        raise KeyInFlight()  # finished rows always carry their response
    return Stored(row.response_status, row.response_body)


def finish(session: Session, lab_id: int, key: str, status: int, body: str) -> None:
    session.execute(update(IdempotencyKey).where(
        IdempotencyKey.lab_id == lab_id, IdempotencyKey.key == key)
        .values(in_flight=False, response_status=status, response_body=body)
        .execution_options(synchronize_session=False))
    session.commit()


def abandon(session: Session, lab_id: int, key: str) -> None:
    """A request that failed on our side: the client may retry with the same key."""
    session.rollback()
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.lab_id == lab_id,
                                                 IdempotencyKey.key == key,
                                                 IdempotencyKey.in_flight.is_(True)))
    session.commit()
