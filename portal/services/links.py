"""Payment links: creation, lookup scoped to a lab, cancellation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session, joinedload

from ..models import (
    OPEN_LINK_STATES,
    Customer,
    Lab,
    LinkStatus,
    OnlinePayment,
    PaymentGatewayTransaction,
    utcnow,
)
from ..tokens import new_token
from . import events
from .audit import audit
from .cancellation import queue_checkout_cancellation
from .notifications import queue_link_message, schedule_reminders

PAGE_SIZE = 25


@dataclass(frozen=True)
class NewLink:
    patient_name: str
    phone: str | None
    email: str | None
    amount: int
    currency: str
    bill_reference: str
    description: str
    expires_at: datetime
    allow_partial: bool = False
    external_id: str | None = None
    gateway: str | None = None
    notify: tuple[str, ...] = ()  # "email", "sms": send the link now
    language: str | None = None  # the patient's (i18n.LANGUAGES); None: the lab's default


class LinkError(Exception):
    pass


def find_or_create_customer(session: Session, lab_id: int, name: str, phone: str | None,
                            email: str | None, external_id: str | None = None) -> Customer:
    """The lab's patient with this id, phone or email; a new one when none matches."""
    keys = []
    if external_id:
        keys.append(Customer.external_id == external_id)
    if phone:
        keys.append(Customer.phone == phone)
    if email:
        keys.append(Customer.email == email)
    customer = None
    if keys:
        customer = session.scalars(select(Customer).where(Customer.lab_id == lab_id, or_(*keys))
                                   .order_by(Customer.id.desc()).limit(1)).first()
    if customer is None:
        customer = Customer(lab_id=lab_id, name=name, phone=phone, email=email,
                            external_id=external_id)
        session.add(customer)
    else:
        customer.name = name or customer.name
        customer.phone = phone or customer.phone
        customer.email = email or customer.email
    return customer


def create_link(session: Session, lab: Lab, data: NewLink, *, user_id: int | None,
                ip: str | None = None) -> OnlinePayment:
    if data.expires_at <= utcnow():
        raise LinkError("The expiry must be in the future.")
    customer = find_or_create_customer(session, lab.id, data.patient_name, data.phone,
                                       data.email, data.external_id)
    link = OnlinePayment(
        lab_id=lab.id, token=new_token(), amount=data.amount, currency=data.currency.upper(),
        bill_reference=data.bill_reference, description=data.description, customer=customer,
        gateway=data.gateway or lab.default_gateway, expires_at=data.expires_at,
        allow_partial=data.allow_partial, created_by_id=user_id, status=LinkStatus.CREATED,
        language=data.language or lab.default_language,
    )
    session.add(link)
    session.flush()
    audit(session, lab_id=lab.id, user_id=user_id, action="link.create",
          object_type="online_payment", object_id=link.id, ip=ip, amount=link.amount,
          currency=link.currency, bill_reference=link.bill_reference)
    queue_link_message(session, link, data.notify)  # the outbox: same transaction
    schedule_reminders(session, link)
    return link


def get_link(session: Session, lab_id: int, link_id: int) -> OnlinePayment | None:
    """A link of this lab only: another lab's id is simply not found."""
    return session.scalar(select(OnlinePayment).where(OnlinePayment.id == link_id,
                                                      OnlinePayment.lab_id == lab_id))


# Built once: constructing the statement cost as much as running it.
_BY_TOKEN = (select(OnlinePayment).where(OnlinePayment.token == bindparam("token"))
             .options(joinedload(OnlinePayment.lab), joinedload(OnlinePayment.payments)))


def get_link_by_token(session: Session, token: str) -> OnlinePayment | None:
    """The link with its lab and payments, in one query: everything a patient's page shows."""
    if not token or len(token) > 64:
        return None
    return session.scalars(_BY_TOKEN, {"token": token}).unique().first()


def list_links(session: Session, lab_id: int, *, status: LinkStatus | None = None,
               before_id: int | None = None, now: datetime | None = None,
               limit: int = PAGE_SIZE) -> tuple[list[OnlinePayment], int | None]:
    """Newest first, keyset-paginated on id; returns the page and the cursor for the next."""
    now = now or utcnow()
    query = select(OnlinePayment).where(OnlinePayment.lab_id == lab_id)
    open_states = tuple(OPEN_LINK_STATES)
    if status == LinkStatus.EXPIRED:  # stored as expired, or open but past its expiry
        query = query.where(or_(OnlinePayment.status == LinkStatus.EXPIRED,
                                (OnlinePayment.status.in_(open_states))
                                & (OnlinePayment.expires_at <= now)))
    elif status in OPEN_LINK_STATES:
        query = query.where(OnlinePayment.status == status, OnlinePayment.expires_at > now)
    elif status is not None:
        query = query.where(OnlinePayment.status == status)
    if before_id:
        query = query.where(OnlinePayment.id < before_id)
    rows = list(session.scalars(query.order_by(OnlinePayment.id.desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def timeline(session: Session, link: OnlinePayment) -> list[PaymentGatewayTransaction]:
    return list(session.scalars(select(PaymentGatewayTransaction)
                                .where(PaymentGatewayTransaction.lab_id == link.lab_id,
                                       PaymentGatewayTransaction.online_payment_id == link.id)
                                .order_by(PaymentGatewayTransaction.id.desc())))


def cancel_link(session: Session, link: OnlinePayment, *, user_id: int | None,
                ip: str | None = None) -> None:
    """Cancels an open link; an expired or settled one cannot be cancelled."""
    link = events.lock_link(session, link.id)
    if link.effective_status() not in OPEN_LINK_STATES:
        raise LinkError(f"This link is {link.effective_status().replace('_', ' ')} "
                        "and can no longer be cancelled.")
    events.cancel_link(link, user_id=user_id)
    audit(session, lab_id=link.lab_id, user_id=user_id, action="link.cancel",
          object_type="online_payment", object_id=link.id, ip=ip)
    queue_checkout_cancellation(session, link)

