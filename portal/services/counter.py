"""Payments taken at the desk (cash, card terminal, UPI) against an open link.

Recorded as a Payment of the gateway "counter" that succeeds at once, moved by the same code as a
gateway's success (events.py), under the link's row lock. Any checkout still open at the
lab's gateway is then cancelled, so the link the patient already has cannot take money twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateways.base import EventStatus, GatewayEvent

from ..models import (
    OPEN_LINK_STATES,
    AuditLog,
    OnlinePayment,
    Payment,
    PaymentStatus,
    User,
)
from ..tokens import new_reference
from .audit import audit
from .cancellation import queue_checkout_cancellation
from .events import apply_event, lock_link

COUNTER = "counter"
COUNTER_METHODS = {"cash": "Cash", "card": "Card at the desk", "upi": "UPI"}

# The form's token, made when it renders: it becomes the payment's reference, so a
# double-click records one payment.
COUNTER_KEY = re.compile(r"ctr_[0-9a-f]{24}")


class CounterPaymentError(Exception):
    """Refused; the message is for staff."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def new_counter_key() -> str:
    return new_reference("ctr")


def record_counter_payment(session: Session, link_id: int, amount: int, method: str,
                           note: str = "", *, user_id: int | None, ip: str | None = None,
                           key: str | None = None) -> Payment:
    """Records money taken at the desk; the caller commits. A repeated `key` changes nothing."""
    if method not in COUNTER_METHODS:
        raise CounterPaymentError("Choose how the patient paid.", field="method")
    if key is not None and not COUNTER_KEY.fullmatch(key):
        raise CounterPaymentError("This form is not valid. Reload the page and try again.")
    link = lock_link(session, link_id)
    if key is not None:
        existing = _recorded_with(session, link, key)
        if existing is not None:
            return existing
    status = link.effective_status()
    if status not in OPEN_LINK_STATES:
        raise CounterPaymentError(f"This link is {status.value.replace('_', ' ')} "
                                  "and can no longer be paid.")
    if amount <= 0:
        raise CounterPaymentError("The amount must be more than zero.", field="amount")
    if amount > link.outstanding:
        raise CounterPaymentError("The amount is more than what is still owed.", field="amount")
    payment = Payment(lab_id=link.lab_id, online_payment=link,
                      reference=key or new_reference("ctr"), amount=amount,
                      currency=link.currency, gateway=COUNTER, status=PaymentStatus.PENDING,
                      method=method)
    session.add(payment)
    try:
        session.flush()
    except IntegrityError:  # the same form twice at once, where there are no row locks (SQLite)
        session.rollback()
        link = lock_link(session, link_id)
        existing = _recorded_with(session, link, key) if key else None
        if existing is None:
            raise
        return existing
    # The new payment is locked with its link: it is this transaction's own row.
    outcome, _ok = apply_event(session, link, payment, GatewayEvent(
        dedupe_id=None, type=f"counter.{method}", reference=payment.reference,
        status=EventStatus.SUCCEEDED, amount=amount, currency=link.currency, method=method))
    # Any open checkout was made for the old outstanding amount: it must not be paid now.
    cancelled = queue_checkout_cancellation(session, link)
    audit(session, lab_id=link.lab_id, user_id=user_id, action="payment.counter",
          object_type="online_payment", object_id=link.id, ip=ip, payment_id=payment.id,
          reference=payment.reference, amount=amount, currency=link.currency, method=method,
          note=note[:200], outcome=outcome, checkouts_cancelled=cancelled)
    session.flush()
    return payment


def _recorded_with(session: Session, link: OnlinePayment, key: str) -> Payment | None:
    payment = session.scalar(select(Payment).where(Payment.reference == key))
    if payment is not None and (payment.online_payment_id != link.id or payment.gateway != COUNTER):
        raise CounterPaymentError("This form belongs to another link.")
    return payment


@dataclass(frozen=True)
class CounterRecord:
    payment: Payment
    method: str
    note: str
    recorded_by: str | None


def counter_payments(session: Session, link: OnlinePayment) -> list[CounterRecord]:
    """The link's desk payments, with the note and the person from their audit entries."""
    payments = [p for p in link.payments if p.gateway == COUNTER]
    if not payments:
        return []
    entries = session.execute(
        select(AuditLog.detail, User.email).outerjoin(User, User.id == AuditLog.user_id)
        .where(AuditLog.lab_id == link.lab_id, AuditLog.action == "payment.counter",
               AuditLog.object_type == "online_payment", AuditLog.object_id == str(link.id)))
    by_payment = {detail.get("payment_id"): (detail.get("note") or "", email)
                  for detail, email in entries}
    return [CounterRecord(p, COUNTER_METHODS.get(p.method or "", p.method or ""),
                          *by_payment.get(p.id, ("", None))) for p in payments]
