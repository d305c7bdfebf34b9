"""Closing gateway-side checkouts of a link that can no longer be paid (cancelled or expired)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import Capability

from ..models import ExchangeKind, OnlinePayment, Payment, PaymentStatus
from ..worker.queue import enqueue
from .exchanges import GatewayCall
from .keys import configured_gateway


def queue_checkout_cancellation(session: Session, link: OnlinePayment) -> int:
    """In the caller's transaction: one job per pending payment whose gateway can cancel."""
    pending = session.scalars(select(Payment).where(
        Payment.online_payment_id == link.id, Payment.status == PaymentStatus.PENDING,
        Payment.checkout_id.is_not(None))).all()
    queued = 0
    for payment in pending:
        cls = GATEWAYS.get(payment.gateway)
        if cls is not None and Capability.CANCEL_CHECKOUT in cls.capabilities:
            enqueue(session, "payment.cancel_checkout", {"payment_id": payment.id},
                    lab_id=payment.lab_id, dedupe=f"cancel-checkout-{payment.id}")
            queued += 1
    return queued


def cancel_checkout(session: Session, config: Mapping[str, Any], payment_id: int) -> None:
    payment = session.get(Payment, payment_id)
    if payment is None or payment.status != PaymentStatus.PENDING:
        return
    gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    call = GatewayCall(session, gateway, payment, ExchangeKind.CHECKOUT_CANCELLED,
                       event_type="checkout.cancel")
    reference, checkout_id = payment.reference, payment.checkout_id
    call.send(lambda: gateway.cancel_checkout(reference, checkout_id),
              failed="checkout could not be cancelled")
    _link, payment = call.lock()
    call.record(payment, outcome=f"checkout {checkout_id} closed")
    session.commit()
