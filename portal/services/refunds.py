"""Refunds: requested under the payment's row lock, sent to the gateway with an idempotency key."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import Capability, EventStatus, GatewayError, RefundRequest
from gateways.http import mask_secrets

from ..models import (
    SETTLED_PAYMENT_STATES,
    ExchangeKind,
    Refund,
    RefundStatus,
    utcnow,
)
from .events import fail_refund, lock_link_and_payment, record_exchange, settle_refund
from .jobs import enqueue, handler
from .keys import configured_gateway
from .links import new_reference

log = logging.getLogger(__name__)

OPEN_REFUND_STATES = frozenset({RefundStatus.PENDING, RefundStatus.AWAITING_APPROVAL})


class RefundNotAllowed(Exception):
    """The refund was refused before reaching the gateway; the message is for staff."""


def refundable(payment) -> int:
    """What may still be refunded: captured, minus refunded, minus refunds in flight."""
    in_flight = sum(r.amount for r in payment.refunds if r.status in OPEN_REFUND_STATES)
    return payment.amount - payment.amount_refunded - in_flight


def request_refund(session: Session, config: Mapping, payment_id: int, amount: int,
                   reason: str = "", *, user_id: int | None = None) -> Refund:
    """Records a pending refund within what remains refundable, then sends it."""
    _link, payment = lock_link_and_payment(session, payment_id)
    cls = GATEWAYS.get(payment.gateway)
    if payment.status not in SETTLED_PAYMENT_STATES:
        raise RefundNotAllowed("Only a succeeded payment can be refunded.")
    if cls is None or Capability.REFUND not in cls.capabilities:
        raise RefundNotAllowed("This payment's gateway does not support refunds.")
    remaining = refundable(payment)
    if amount <= 0:
        raise RefundNotAllowed("The refund amount must be more than zero.")
    if amount > remaining:
        raise RefundNotAllowed("The refund is more than what remains refundable.")
    if amount < remaining and Capability.PARTIAL_REFUND not in cls.capabilities:
        raise RefundNotAllowed("This gateway only refunds the whole remaining amount.")
    refund = Refund(lab_id=payment.lab_id, payment=payment, reference=new_reference("rfd"),
                    amount=amount, reason=reason[:200], status=RefundStatus.PENDING,
                    requested_by_id=user_id)
    session.add(refund)
    session.commit()
    return submit_refund(session, config, refund.id)


def submit_refund(session: Session, config: Mapping, refund_id: int, *,
                  schedule_retry: bool = True) -> Refund:
    """Sends a pending refund; a retry reuses its idempotency key, so it refunds once."""
    refund = session.get(Refund, refund_id)
    payment = refund.payment
    if refund.status != RefundStatus.PENDING or refund.gateway_refund_id:
        return refund
    gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    secrets = type(gateway).secret_values(gateway.credentials)
    request = RefundRequest(reference=payment.reference,
                            transaction_id=payment.gateway_transaction_id, amount=refund.amount,
                            currency=payment.currency, reason=refund.reason,
                            idempotency_key=f"refund-{refund.reference}")
    session.commit()  # no transaction stays open across the gateway call
    try:
        result = gateway.refund(request)
    except GatewayError as exc:
        _link, payment = lock_link_and_payment(session, payment.id)
        refund = session.get(Refund, refund_id)
        record_exchange(session, lab_id=payment.lab_id, gateway=payment.gateway,
                        kind=ExchangeKind.REFUND_REQUESTED, payment=payment,
                        event_type="refund.request", success=False,
                        outcome=f"refund {refund.reference} not accepted",
                        error=mask_secrets(exc.message, secrets),
                        payload=mask_secrets({"code": exc.code, "raw": exc.raw}, secrets))
        if exc.retryable:
            refund.failure_reason = f"Will retry: {exc.message}"[:500]
        if exc.retryable and schedule_retry:
            enqueue(session, "refund.submit", {"refund_id": refund.id}, lab_id=refund.lab_id,
                    run_at=utcnow() + timedelta(seconds=30), dedupe=f"refund-{refund.id}")
        if not exc.retryable:
            fail_refund(refund, exc.message)
        session.commit()
        return refund
    _link, payment = lock_link_and_payment(session, payment.id)
    refund = session.get(Refund, refund_id)
    refund.gateway_refund_id = result.refund_id
    refund.failure_reason = None
    if result.status == EventStatus.REFUND_SUCCEEDED:
        outcome, _ = settle_refund(payment, refund)
    elif result.status == EventStatus.REFUND_FAILED:
        outcome, _ = fail_refund(refund, "the gateway refused the refund")
    else:
        outcome = f"refund {refund.reference} accepted, pending at the gateway"
    record_exchange(session, lab_id=payment.lab_id, gateway=payment.gateway,
                    kind=ExchangeKind.REFUND_REQUESTED, payment=payment,
                    event_type="refund.request", outcome=outcome,
                    payload=mask_secrets(dict(result.raw), secrets))
    session.commit()
    return refund


@handler("refund.submit")
def _submit_refund_job(app, session, job) -> None:
    refund = submit_refund(session, app.config, job.payload["refund_id"], schedule_retry=False)
    if refund.status == RefundStatus.PENDING and not refund.gateway_refund_id:
        raise RuntimeError(refund.failure_reason or "refund not yet accepted")
