"""Who did what to which object, when and from where."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ..models import AuditLog


def audit(session: Session, *, lab_id: int, user_id: int | None, action: str, object_type: str,
          object_id: Any = None, ip: str | None = None, **detail: Any) -> AuditLog:
    entry = AuditLog(lab_id=lab_id, user_id=user_id, action=action, object_type=object_type,
                     object_id=None if object_id is None else str(object_id),
                     ip_address=ip, detail=detail)
    session.add(entry)
    return entry
