"""Closing gateway-side checkouts of a link that can no longer be paid (cancelled or expired)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import Capability, GatewayError
from gateways.http import mask_secrets

from ..models import ExchangeKind, OnlinePayment, Payment, PaymentStatus
from ..worker.queue import enqueue
from .events import record_exchange
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


def cancel_checkout(session: Session, config: Mapping, payment_id: int) -> None:
    payment = session.get(Payment, payment_id)
    if payment is None or payment.status != PaymentStatus.PENDING:
        return
    gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    secrets = type(gateway).secret_values(gateway.credentials)
    reference, checkout_id = payment.reference, payment.checkout_id
    session.commit()  # no transaction stays open across the gateway call
    try:
        gateway.cancel_checkout(reference, checkout_id)
    except GatewayError as exc:
        record_exchange(session, lab_id=payment.lab_id, gateway=payment.gateway,
                        kind=ExchangeKind.CHECKOUT_CREATED, payment=payment, success=False,
                        event_type="checkout.cancel", outcome="checkout could not be cancelled",
                        error=mask_secrets(exc.message, secrets))
        session.commit()
        raise
    record_exchange(session, lab_id=payment.lab_id, gateway=payment.gateway,
                    kind=ExchangeKind.CHECKOUT_CREATED, payment=payment,
                    event_type="checkout.cancel", outcome=f"checkout {checkout_id} closed")
