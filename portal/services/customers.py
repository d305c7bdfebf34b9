"""A lab's patients: search, their links and payments, and their saved payment methods."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import Capability, GatewayError

from ..models import (
    OPEN_LINK_STATES,
    Customer,
    CustomerPaymentProfile,
    OnlinePayment,
    Payment,
    utcnow,
)
from .events import Applied
from .profiles import ProfileError, charge_profile, delete_profile
from .search import escaped, looks_like_phone, phone_matches

PAGE_SIZE = 25
MAX_QUERY = 100



def _matches(query: str, country: str | None) -> list[ColumnElement[bool]]:
    """How `query` finds a patient, by its shape; the lab's own patient id always matches.

    An email or a whole mobile number uses an index (email prefix; the number in E.164 with the
    lab's country, so "098765 43210" finds +919876543210). A name, or a part of a number, is
    looked for anywhere in it: a scan of the lab's patients, newest first, that stops at a page.
    """
    matches = [Customer.external_id == query]
    if "@" in query:
        matches.append(func.lower(Customer.email).like(escaped(query.lower()) + "%",
                                                       escape="\\"))
    elif looks_like_phone(query):
        matches += phone_matches(Customer.phone, query, country)
    else:
        matches.append(func.lower(Customer.name).like(f"%{escaped(query.lower())}%",
                                                      escape="\\"))
    return matches


def search_customers(session: Session, lab_id: int, *, query: str | None = None,
                     country: str | None = None, before_id: int | None = None,
                     limit: int = PAGE_SIZE) -> tuple[list[Customer], int | None]:
    """Newest first, keyset-paginated on id; `query` finds a name, email, mobile or patient id."""
    statement = select(Customer).where(Customer.lab_id == lab_id)
    query = (query or "").strip()[:MAX_QUERY]
    if query:
        statement = statement.where(or_(*_matches(query, country)))
    if before_id:
        statement = statement.where(Customer.id < before_id)
    rows = list(session.scalars(statement.order_by(Customer.id.desc()).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def get_customer(session: Session, lab_id: int, customer_id: int) -> Customer | None:
    """A patient of this lab only: another lab's id is simply not found."""
    return session.scalar(select(Customer).where(Customer.id == customer_id,
                                                 Customer.lab_id == lab_id))


def customer_links(session: Session, customer: Customer, *, before_id: int | None = None,
                   limit: int = PAGE_SIZE) -> tuple[list[OnlinePayment], int | None]:
    """The patient's links, newest first, keyset-paginated on id."""
    statement = select(OnlinePayment).where(OnlinePayment.lab_id == customer.lab_id,
                                            OnlinePayment.customer_id == customer.id)
    if before_id:
        statement = statement.where(OnlinePayment.id < before_id)
    rows = list(session.scalars(statement.order_by(OnlinePayment.id.desc()).limit(limit + 1)))
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def payments_of(session: Session, lab_id: int, links: list[OnlinePayment]) -> list[Payment]:
    """Every attempt to pay these links, newest first."""
    if not links:
        return []
    return list(session.scalars(select(Payment).where(
        Payment.lab_id == lab_id, Payment.online_payment_id.in_([link.id for link in links]))
        .order_by(Payment.id.desc())))


def open_links(session: Session, customer: Customer, *, now: datetime | None = None,
               limit: int = 50) -> list[OnlinePayment]:
    """The patient's links that can still be paid, newest first."""
    now = now or utcnow()
    return list(session.scalars(select(OnlinePayment).where(
        OnlinePayment.lab_id == customer.lab_id, OnlinePayment.customer_id == customer.id,
        OnlinePayment.status.in_(tuple(OPEN_LINK_STATES)), OnlinePayment.expires_at > now)
        .order_by(OnlinePayment.id.desc()).limit(limit)))


def can_charge(profile: CustomerPaymentProfile) -> bool:
    """Only gateways that declare saved methods can charge one off-session."""
    cls = GATEWAYS.get(profile.gateway)
    return cls is not None and Capability.SAVED_METHODS in cls.capabilities


def get_profile(session: Session, customer: Customer,
                profile_id: int) -> CustomerPaymentProfile | None:
    return session.scalar(select(CustomerPaymentProfile).where(
        CustomerPaymentProfile.id == profile_id,
        CustomerPaymentProfile.lab_id == customer.lab_id,
        CustomerPaymentProfile.customer_id == customer.id,
        CustomerPaymentProfile.deleted_at.is_(None)))


def charge_saved_method(session: Session, config: Mapping[str, Any], customer: Customer,
                        profile: CustomerPaymentProfile, link: OnlinePayment, *,
                        user_id: int | None, ip: str | None = None) -> tuple[Payment, Applied]:
    """Charges what `link` still owes to the patient's saved method; one charge at a time.

    The guard against a second charge in flight lives in `profiles.charge_profile`.
    """
    if link.lab_id != customer.lab_id or link.customer_id != customer.id:
        raise ProfileError("This link is not one of the patient's.")
    if not can_charge(profile):
        raise ProfileError("This gateway cannot charge saved methods.")
    return charge_profile(session, config, link, profile, user_id=user_id, ip=ip)


def remove_profile(session: Session, config: Mapping[str, Any], profile: CustomerPaymentProfile, *,
                   user_id: int | None, ip: str | None = None) -> None:
    """Deletes the method at the gateway, then here; nothing changes if the gateway refuses."""
    try:
        delete_profile(session, config, profile, user_id=user_id, ip=ip)
    except GatewayError as exc:
        raise ProfileError(exc.message) from None
