"""Who did what to which object, when and from where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from ..models import AuditLog


def audit(session: Session, *, lab_id: int, user_id: int | None, action: str, object_type: str,
          object_id: Any = None, ip: str | None = None, **detail: Any) -> AuditLog:
    entry = AuditLog(lab_id=lab_id, user_id=user_id, action=action, object_type=object_type,
                     object_id=None if object_id is None else str(object_id),
                     ip_address=ip, detail=detail)
    session.add(entry)
    return entry


def audit_rows(session: Session, entries: Sequence[dict[str, Any]]) -> None:
    """Writes entries at once (each `audit`'s keywords, `detail` as a dict), in one INSERT.

    For rows nobody reads back in the transaction (a new link's): no ORM objects to flush.
    """
    if entries:
        session.execute(insert(cast(Table, AuditLog.__table__)), [{
            "lab_id": e["lab_id"], "user_id": e["user_id"], "action": e["action"],
            "object_type": e["object_type"],
            "object_id": None if e.get("object_id") is None else str(e["object_id"]),
            "ip_address": e.get("ip"), "detail": e.get("detail", {})} for e in entries])
