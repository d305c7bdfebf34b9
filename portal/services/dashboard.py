"""The front desk's day: today's figures per currency, and what needs someone's attention."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, case, func, select
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


# --- the last 30 days ----------------------------------------------------------------------------
# Days are the lab's calendar days. Their bounds are computed here (zoneinfo knows summer time)
# and each row is put in its day by one CASE in SQL, so SQLite (no time zones) and PostgreSQL
# group the same way. Money stays per currency: a lab's INR and USD are never added together.

MONTH_DAYS = 30
LINK_MESSAGE = "link"  # the Notification.template of the message that carries the link


@dataclass(frozen=True)
class Day:
    day: date
    links_paid: int
    collected: dict[str, int]  # currency -> minor units of settled payments, before refunds


@dataclass(frozen=True)
class GatewayShare:
    gateway: str
    payments: int
    share: float  # of all settled payments in the period, by count (currencies do not add up)
    collected: dict[str, int]


@dataclass(frozen=True)
class Month:
    days: list[Day]  # oldest first, ending today
    currencies: list[str]  # the lab's own currency first
    gateways: list[GatewayShare]  # most payments first
    median_seconds_to_pay: float | None  # from sending a link to its payment
    links_timed: int  # the links that median is over

    def links_paid_series(self) -> list[tuple[date, int]]:
        return [(d.day, d.links_paid) for d in self.days]

    def collected_series(self, currency: str) -> list[tuple[date, int]]:
        return [(d.day, d.collected.get(currency, 0)) for d in self.days]


def day_starts(timezone: str, now: datetime, days: int = MONTH_DAYS) -> list[datetime]:
    """The starts of the lab's last `days` days (today included), then the end of today."""
    zone = ZoneInfo(timezone)
    today_ = now.astimezone(zone).date()
    return [datetime.combine(today_ - timedelta(days=days - 1 - i), time(), tzinfo=zone)
            for i in range(days + 1)]


def day_index(column: Any, starts: list[datetime]) -> Any:
    """A SQL CASE giving the day (0 = oldest) a timestamp falls in; rows are filtered first."""
    return case(*((column < end, index) for index, end in enumerate(starts[1:])), else_=None)


def seconds_between(session: Session, start: Any, end: Any) -> Any:
    """`end - start` in seconds, in this database's own words."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def month(session: Session, lab: Lab, *, now: datetime | None = None) -> Month:
    now = now or utcnow()
    starts = day_starts(lab.timezone, now)
    first, last = starts[0], starts[-1]
    collected: dict[int, dict[str, int]] = {}
    currencies: set[str] = set()

    settled = (Payment.lab_id == lab.id, Payment.status.in_(tuple(SETTLED_PAYMENT_STATES)),
               Payment.succeeded_at >= first, Payment.succeeded_at < last)
    rows = select(day_index(Payment.succeeded_at, starts).label("day"), Payment.currency,
                  Payment.amount).where(*settled).subquery()
    for index, currency, amount in session.execute(
            select(rows.c.day, rows.c.currency, func.sum(rows.c.amount))
            .group_by(rows.c.day, rows.c.currency)):
        collected.setdefault(index, {})[currency] = int(amount)
        currencies.add(currency)

    paid = select(day_index(OnlinePayment.paid_at, starts).label("day")).where(
        OnlinePayment.lab_id == lab.id, OnlinePayment.status == LinkStatus.PAID,
        OnlinePayment.paid_at >= first, OnlinePayment.paid_at < last).subquery()
    links_paid: dict[int, int] = {index: number for index, number in session.execute(
        select(paid.c.day, func.count()).group_by(paid.c.day))}

    days = [Day(day=starts[i].date(), links_paid=links_paid.get(i, 0),
                collected=collected.get(i, {})) for i in range(MONTH_DAYS)]
    median, timed = median_time_to_pay(session, lab.id, first, last)
    return Month(days=days,
                 currencies=sorted(currencies, key=lambda c: (c != lab.currency, c)),
                 gateways=gateway_shares(session, settled), median_seconds_to_pay=median,
                 links_timed=timed)


def gateway_shares(session: Session, settled: tuple[Any, ...]) -> list[GatewayShare]:
    """Settled payments per gateway: their count, share of the count, and money per currency."""
    counts: dict[str, int] = {}
    money: dict[str, dict[str, int]] = {}
    for gateway, currency, number, amount in session.execute(
            select(Payment.gateway, Payment.currency, func.count(), func.sum(Payment.amount))
            .where(*settled).group_by(Payment.gateway, Payment.currency)):
        counts[gateway] = counts.get(gateway, 0) + number
        money.setdefault(gateway, {})[currency] = int(amount)
    total = sum(counts.values())
    return [GatewayShare(gateway=g, payments=n, share=n / total, collected=money[g])
            for g, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def median_time_to_pay(session: Session, lab_id: int, first: datetime,
                       last: datetime) -> tuple[float | None, int]:
    """The median time from sending to payment of the links paid in [first, last), and over
    how many links. Sent: the first message with the link that went out; a link never sent
    (shown at the counter, copied by hand) counts from its creation."""
    first_sent = (select(func.min(Notification.sent_at))
                  .where(Notification.online_payment_id == OnlinePayment.id,
                         Notification.template == LINK_MESSAGE,
                         Notification.sent_at.is_not(None))
                  .correlate(OnlinePayment).scalar_subquery())
    sent = func.coalesce(first_sent, OnlinePayment.created_at)
    waits = select(seconds_between(session, sent, OnlinePayment.paid_at).label("wait")).where(
        OnlinePayment.lab_id == lab_id, OnlinePayment.status == LinkStatus.PAID,
        OnlinePayment.paid_at >= first, OnlinePayment.paid_at < last).subquery()
    count = session.scalar(select(func.count()).select_from(waits)) or 0
    if not count:
        return None, 0
    # The middle one or two waits, found by the database: no row but those leaves it.
    middle = list(session.scalars(select(waits.c.wait).order_by(waits.c.wait)
                                  .offset((count - 1) // 2).limit(2 - count % 2)))
    return float(sum(middle)) / len(middle), count
