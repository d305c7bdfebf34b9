"""The webhook inbox: what gateways told us (webhooks, status polls, signed returns, the answers
to saved-method charges) and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways.base import GatewayError
from gateways.http import mask_secrets

from ..models import (
    ExchangeKind,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
)
from .audit import audit
from .checkout import fetch_and_apply
from .keys import configured_gateway

PAGE_SIZE = 50
INBOX_KINDS = (ExchangeKind.WEBHOOK_RECEIVED, ExchangeKind.STATUS_FETCHED,
               ExchangeKind.RETURN_VERIFIED, ExchangeKind.CHARGE_REQUESTED)
OUT_OF_ORDER = "ignored as out of order"


@dataclass(frozen=True)
class Entry:
    exchange: PaymentGatewayTransaction
    bill_reference: str | None

    @property
    def dedupe(self) -> str:
        """new / duplicate / ignored as out of order."""
        if "duplicate_of" in (self.exchange.payload or {}):
            return "duplicate"
        if self.exchange.outcome.startswith(OUT_OF_ORDER):
            return OUT_OF_ORDER
        return "new"

    @property
    def signature(self) -> str:
        valid = self.exchange.signature_valid
        if valid is None:
            return "not signed (our own request)"
        return "verified" if valid else "failed"


def list_entries(session: Session, lab_id: int, *, before_id: int | None = None,
                 limit: int = PAGE_SIZE) -> tuple[list[Entry], int | None]:
    """The lab's inbox, newest first, keyset-paginated on id; returns the page and next cursor."""
    query = (select(PaymentGatewayTransaction, OnlinePayment.bill_reference)
             .outerjoin(OnlinePayment,
                        (OnlinePayment.id == PaymentGatewayTransaction.online_payment_id)
                        & (OnlinePayment.lab_id == lab_id))
             .where(PaymentGatewayTransaction.lab_id == lab_id,
                    PaymentGatewayTransaction.kind.in_(INBOX_KINDS)))
    if before_id:
        query = query.where(PaymentGatewayTransaction.id < before_id)
    rows = session.execute(query.order_by(PaymentGatewayTransaction.id.desc())
                           .limit(limit + 1)).all()
    entries = [Entry(exchange, bill) for exchange, bill in rows[:limit]]
    return entries, (entries[-1].exchange.id if len(rows) > limit else None)


def pending_payments(session: Session, lab_id: int, *, limit: int = 50) -> list[Payment]:
    """The lab's payments still waiting on the gateway, newest first."""
    return list(session.scalars(select(Payment).where(
        Payment.lab_id == lab_id, Payment.status == PaymentStatus.PENDING)
        .order_by(Payment.id.desc()).limit(limit)))


def get_payment(session: Session, lab_id: int, payment_id: int) -> Payment | None:
    """A payment of this lab only: another lab's id is simply not found."""
    return session.scalar(select(Payment).where(Payment.id == payment_id,
                                                Payment.lab_id == lab_id))


class FetchFailed(Exception):
    """The gateway could not be asked; the message is safe to show (secrets masked)."""


def fetch_now(session: Session, config: Mapping[str, Any], payment: Payment, *, user_id: int | None,
              ip: str | None = None) -> str:
    """Asks the gateway about a pending payment at once (staff's button); returns the outcome.

    The answer goes through `apply_gateway_event` like any poll; commits.
    """
    audit(session, lab_id=payment.lab_id, user_id=user_id, action="payment.fetch_status",
          object_type="payment", object_id=payment.id, ip=ip)
    session.commit()
    try:
        applied = fetch_and_apply(session, config, payment.id)
    except GatewayError as exc:
        session.rollback()
        raise FetchFailed(_masked(session, config, payment, exc.message)) from None
    if applied is None:
        return "This payment is no longer pending: nothing to ask."
    return applied.outcome


def _masked(session: Session, config: Mapping[str, Any], payment: Payment, message: str) -> str:
    try:
        gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    except GatewayError:
        return message  # not configured: nothing secret to mask
    masked: str = mask_secrets(message, type(gateway).secret_values(gateway.credentials))
    return masked
