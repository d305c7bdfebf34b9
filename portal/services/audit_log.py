"""Reading the audit log (/admin/audit): who did what to which object, when and from where."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import AuditLog, User
from ..money import MoneyError, format_money

PAGE_SIZE = 50
RECENT_FOR_FILTER = 5000  # actions offered in the filter: the catalogue plus those seen lately
ACTION_FILTER = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$")

ACTION_LABELS = {
    "user.login": "Signed in",
    "link.create": "Link created",
    "link.resend": "Link sent again",
    "link.cancel": "Link cancelled",
    "link.expire": "Link expired",
    "payment.fetch_status": "Payment status fetched from the gateway",
    "payment_profile.save": "Saved payment method stored",
    "payment_profile.charge": "Saved payment method charged",
    "payment_profile.delete": "Saved payment method deleted",
    "gateway_keys.update": "Gateway keys changed",
    "gateway.test_connection": "Gateway connection tested",
    "messages.update": "Message settings changed",
    "lab.update": "Lab settings changed",
}
FIELD_LABELS = {
    "default_expiry_hours": "link expiry (hours)", "reminder_hours_before": "reminders (hours)",
    "refund_approval_threshold": "refund approval above", "brand_color": "brand colour",
    "logo_url": "logo", "timezone": "time zone",
}
MONEY_KEYS = frozenset({"amount", "refund_approval_threshold"})


@dataclass(frozen=True)
class Entry:
    log: AuditLog
    user_email: str | None


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action) or action.replace("_", " ").replace(".", ": ").capitalize()


def valid_action_filter(value: str) -> bool:
    """'link.cancel' (one action) or 'link.*' (every action on links)."""
    return bool(ACTION_FILTER.match(value)) and len(value) <= 100


def list_entries(session: Session, lab_id: int, *, action: str | None = None,
                 before_id: int | None = None,
                 limit: int = PAGE_SIZE) -> tuple[list[Entry], int | None]:
    """The lab's log, newest first, keyset-paginated on id; returns the page and next cursor."""
    query = (select(AuditLog, User.email)
             .outerjoin(User, (User.id == AuditLog.user_id) & (User.lab_id == lab_id))
             .where(AuditLog.lab_id == lab_id))
    if action and action.endswith(".*"):
        prefix = action[:-2].replace("_", "\\_")
        query = query.where(AuditLog.action.like(f"{prefix}.%", escape="\\"))
    elif action:
        query = query.where(AuditLog.action == action)
    if before_id:
        query = query.where(AuditLog.id < before_id)
    rows = session.execute(query.order_by(AuditLog.id.desc()).limit(limit + 1)).all()
    entries = [Entry(log, email) for log, email in rows[:limit]]
    return entries, (entries[-1].log.id if len(rows) > limit else None)


def filter_choices(session: Session, lab_id: int) -> list[tuple[str, list[str]]]:
    """(group, actions) for the filter: the known actions plus any seen in recent entries."""
    recent = (select(AuditLog.action).where(AuditLog.lab_id == lab_id)
              .order_by(AuditLog.id.desc()).limit(RECENT_FOR_FILTER).subquery())
    seen = set(session.scalars(select(recent.c.action).distinct()))
    groups: dict[str, list[str]] = {}
    for action in sorted(set(ACTION_LABELS) | seen):
        groups.setdefault(action.split(".")[0], []).append(action)
    return sorted(groups.items())


def describe(entry: AuditLog, locale: str = "en_IN") -> list[str]:
    """The entry's detail as short lines: 'currency: INR → USD', 'amount: ₹700.00'."""
    detail: dict[str, Any] = dict(entry.detail or {})
    changes = detail.pop("changes", None)
    lines = []
    if isinstance(changes, dict):
        detail.pop("fields_changed", None)  # said again by the changes themselves
        currency = detail.pop("currency", None)
        old_currency = (changes.get("currency") or {}).get("from", currency)
        for name, change in changes.items():
            old = _shown(name, change.get("from"), old_currency, locale)
            new = _shown(name, change.get("to"), currency, locale)
            lines.append(f"{FIELD_LABELS.get(name, name.replace('_', ' '))}: {old} → {new}")
    currency = detail.get("currency")
    for name, value in detail.items():
        lines.append(f"{FIELD_LABELS.get(name, name.replace('_', ' '))}: "
                     f"{_shown(name, value, currency, locale)}")
    return lines


def _shown(name: str, value: Any, currency: str | None, locale: str) -> str:
    if value is None or value == [] or value == "":
        return "none"
    if name in MONEY_KEYS and isinstance(value, int) and not isinstance(value, bool):
        try:
            return format_money(value, currency, locale) if currency else \
                f"{value} (minor units)"
        except MoneyError:
            return f"{value} {currency} (minor units)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)[:300]
    return str(value)[:300]
