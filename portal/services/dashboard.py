"""The front desk's day: today's figures per currency, and what needs someone's attention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..models import (
    OPEN_LINK_STATES,
    SETTLED_PAYMENT_STATES,
    Lab,
    LinkStatus,
    Notification,
    OnlinePayment,
    OutboxStatus,
    Payment,
    utcnow,
)

ATTENTION_LIMIT = 20


@dataclass
class Figures:
    """One currency's day. `awaiting` counts every open link, not only today's."""

    currency: str
    created: int = 0
    paid: int = 0
    awaiting: int = 0
    expired: int = 0
    collected: int = 0  # minor units of settled payments, before refunds


@dataclass(frozen=True)
class Today:
    day: date
    figures: list[Figures]
    attention: list[OnlinePayment] = field(default_factory=list)
    failed_notifications: list[tuple[Notification, str | None]] = field(default_factory=list)


def day_bounds(timezone: str, now: datetime) -> tuple[date, datetime, datetime]:
    """The lab's local date at `now`, and that day's start and end as aware datetimes."""
    zone = ZoneInfo(timezone)
    day = now.astimezone(zone).date()
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return day, start, end


def today(session: Session, lab: Lab, *, now: datetime | None = None) -> Today:
    now = now or utcnow()
    day, start, end = day_bounds(lab.timezone, now)
    links = OnlinePayment.lab_id == lab.id
    by_currency: dict[str, Figures] = {}

    def add(name: str, query: Select[str, Any]) -> None:
        for currency, value in session.execute(query.group_by(OnlinePayment.currency)):
            figures = by_currency.setdefault(currency, Figures(currency))
            setattr(figures, name, getattr(figures, name) + (value or 0))

    count = select(OnlinePayment.currency, func.count()).where(links)
    add("created", count.where(OnlinePayment.created_at >= start,
                               OnlinePayment.created_at < end))
    add("paid", count.where(OnlinePayment.status == LinkStatus.PAID,
                            OnlinePayment.paid_at >= start, OnlinePayment.paid_at < end))
    add("awaiting", count.where(OnlinePayment.status.in_(tuple(OPEN_LINK_STATES)),
                                OnlinePayment.expires_at > now))
    # Expired today: by the sweep, or open past its expiry and not swept yet.
    add("expired", count.where(
        OnlinePayment.status.in_((LinkStatus.EXPIRED, *OPEN_LINK_STATES)),
        OnlinePayment.expires_at >= start, OnlinePayment.expires_at <= min(end, now)))
    add("collected", select(OnlinePayment.currency, func.sum(Payment.amount))
        .join(Payment, Payment.online_payment_id == OnlinePayment.id)
        .where(links, Payment.status.in_(tuple(SETTLED_PAYMENT_STATES)),
               Payment.succeeded_at >= start, Payment.succeeded_at < end))

    figures = sorted(by_currency.values(), key=lambda f: (f.currency != lab.currency, f.currency))
    return Today(day=day, figures=figures or [Figures(lab.currency)],
                 attention=needs_attention(session, lab.id),
                 failed_notifications=failed_notifications(session, lab.id))


def needs_attention(session: Session, lab_id: int) -> list[OnlinePayment]:
    """Links flagged for staff (paid after expiry, amount mismatch...), newest first."""
    return list(session.scalars(select(OnlinePayment).where(
        OnlinePayment.lab_id == lab_id, OnlinePayment.needs_attention.is_(True))
        .order_by(OnlinePayment.id.desc()).limit(ATTENTION_LIMIT)))


def failed_notifications(session: Session, lab_id: int) -> list[tuple[Notification, str | None]]:
    """Messages the worker gave up on, with their link's bill reference, newest first."""
    return [(notification, bill) for notification, bill in session.execute(
        select(Notification, OnlinePayment.bill_reference)
        .outerjoin(OnlinePayment, OnlinePayment.id == Notification.online_payment_id)
        .where(Notification.lab_id == lab_id, Notification.status == OutboxStatus.DEAD)
        .order_by(Notification.id.desc()).limit(ATTENTION_LIMIT))]
