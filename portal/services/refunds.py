"""Refunds: requested under the payment's row lock, sent to the gateway with an idempotency key."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import Capability, EventStatus, GatewayError, RefundRequest

from ..models import (
    SETTLED_PAYMENT_STATES,
    ExchangeKind,
    Lab,
    Payment,
    Refund,
    RefundStatus,
    User,
    utcnow,
)
from ..tokens import new_reference
from ..worker.queue import enqueue
from . import events
from .audit import audit
from .counter import COUNTER
from .events import fail_refund, lock_link_and_payment, settle_refund
from .exchanges import GatewayCall
from .keys import configured_gateway

log = logging.getLogger(__name__)

OPEN_REFUND_STATES = frozenset({RefundStatus.PENDING, RefundStatus.AWAITING_APPROVAL})

# Offered when a lab has not written its own list (reason codes, as labs report them).
DEFAULT_REFUND_REASONS = ("Test cancelled", "Sample rejected", "Duplicate payment",
                          "Billing error", "Test dropped from the bill", "Patient request")

# A refund form's token, made when the form renders; it becomes the refund's reference, so a
# double-click or a resubmitted form finds the refund it already made.
REFUND_KEY = re.compile(r"rfd_[0-9a-f]{24}")


class RefundNotAllowed(Exception):
    """The refund was refused before reaching the gateway; the message is for staff."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field  # the form field the message belongs to, when it is about one


def refund_reasons(lab: Lab) -> list[str]:
    return list(lab.refund_reasons or DEFAULT_REFUND_REASONS)


def new_refund_key() -> str:
    return new_reference("rfd")


def refundable(payment: Payment) -> int:
    """What may still be refunded: captured, minus refunded, minus refunds in flight."""
    in_flight = sum(r.amount for r in payment.refunds if r.status in OPEN_REFUND_STATES)
    return payment.amount - payment.amount_refunded - in_flight


def needs_approval(lab: Lab, amount: int, currency: str) -> bool:
    """Above the lab's threshold (in its own currency), a second admin must approve."""
    threshold = lab.refund_approval_threshold
    if threshold is None:
        return False
    return currency != lab.currency or amount > threshold


def gateway_refund_support(gateway: str) -> tuple[bool, bool]:
    """(refunds at all, partial refunds) for payments made through `gateway`."""
    cls = GATEWAYS.get(gateway)
    capabilities = cls.capabilities if cls is not None else frozenset()
    return Capability.REFUND in capabilities, Capability.PARTIAL_REFUND in capabilities


def request_refund(session: Session, config: Mapping[str, Any], payment_id: int, amount: int,
                   reason: str = "", *, user_id: int | None = None, ip: str | None = None,
                   key: str | None = None) -> Refund:
    """Records a refund within what remains refundable, then sends it (or holds it for
    approval). With `key`, a second request carrying the same key returns the first refund."""
    if key is not None and not REFUND_KEY.fullmatch(key):
        raise RefundNotAllowed("This refund form is not valid. Reload the page and try again.")
    link, payment = lock_link_and_payment(session, payment_id)
    if key is not None:
        existing = _refund_made_with(session, payment, key)
        if existing is not None:
            session.commit()
            return existing
    supported, partial = gateway_refund_support(payment.gateway)
    if payment.status not in SETTLED_PAYMENT_STATES:
        raise RefundNotAllowed("Only a succeeded payment can be refunded.")
    if not supported:
        raise RefundNotAllowed("A payment taken at the counter is refunded at the desk, "
                               "not through a gateway." if payment.gateway == COUNTER
                               else "This payment's gateway does not support refunds.")
    remaining = refundable(payment)
    if amount <= 0:
        raise RefundNotAllowed("The refund amount must be more than zero.", field="amount")
    if amount > remaining:
        raise RefundNotAllowed("The refund is more than what remains refundable.",
                               field="amount")
    if amount < remaining and not partial:
        raise RefundNotAllowed("This gateway only refunds the whole remaining amount.",
                               field="amount")
    held = needs_approval(link.lab, amount, payment.currency)
    refund = Refund(lab_id=payment.lab_id, payment=payment,
                    reference=key or new_reference("rfd"), amount=amount, reason=reason[:200],
                    status=RefundStatus.AWAITING_APPROVAL if held else RefundStatus.PENDING,
                    requested_by_id=user_id)
    session.add(refund)
    try:
        session.flush()
    except IntegrityError:  # the same form, submitted twice at once, without row locks (SQLite)
        session.rollback()
        link, payment = lock_link_and_payment(session, payment_id)
        existing = _refund_made_with(session, payment, key) if key else None
        if existing is None:
            raise
        session.commit()
        return existing
    audit(session, lab_id=payment.lab_id, user_id=user_id, action="refund.request",
          object_type="refund", object_id=refund.id, ip=ip, payment_id=payment.id,
          amount=amount, currency=payment.currency, reason=refund.reason,
          needs_approval=held)
    session.commit()
    if held:
        return refund
    return submit_refund(session, config, refund.id)


def _refund_made_with(session: Session, payment: Payment, key: str) -> Refund | None:
    refund = session.scalar(select(Refund).where(Refund.reference == key)
                            .execution_options(populate_existing=True))
    if refund is not None and refund.payment_id != payment.id:
        raise RefundNotAllowed("This refund form belongs to another payment.")
    return refund


def _decide(session: Session, lab_id: int, refund_id: int, user_id: int) -> Refund:
    """The refund, under its payment's row lock, if `user_id` may decide on it now."""
    payment_id = session.scalar(select(Refund.payment_id).where(Refund.id == refund_id,
                                                                Refund.lab_id == lab_id))
    if payment_id is None:
        raise RefundNotAllowed("No such refund.")
    lock_link_and_payment(session, payment_id)
    refund = session.scalars(select(Refund).where(Refund.id == refund_id)
                             .execution_options(populate_existing=True)).one()
    if refund.status != RefundStatus.AWAITING_APPROVAL:
        raise RefundNotAllowed(f"This refund is already {refund.status.value.replace('_', ' ')}.")
    reviewer = session.get(User, user_id)
    if reviewer is None or not reviewer.is_admin or not reviewer.active \
            or reviewer.lab_id != lab_id:
        raise RefundNotAllowed("Only an admin of the lab can approve or reject a refund.")
    return refund


def approve_refund(session: Session, config: Mapping[str, Any], lab_id: int, refund_id: int, *,
                   user_id: int, ip: str | None = None) -> Refund:
    """A second admin (never the requester) approves: the refund is sent to the gateway."""
    refund = _decide(session, lab_id, refund_id, user_id)
    if refund.requested_by_id == user_id:
        raise RefundNotAllowed("You asked for this refund: another admin must approve it.")
    events.approve_refund(refund, user_id=user_id)
    audit(session, lab_id=lab_id, user_id=user_id, action="refund.approve",
          object_type="refund", object_id=refund.id, ip=ip, payment_id=refund.payment_id,
          amount=refund.amount, currency=refund.payment.currency,
          requested_by=refund.requested_by_id)
    session.commit()
    return submit_refund(session, config, refund.id)


def reject_refund(session: Session, lab_id: int, refund_id: int, *, user_id: int,
                  ip: str | None = None) -> Refund:
    """Another admin rejects the refund, or its requester withdraws it; nothing is sent."""
    refund = _decide(session, lab_id, refund_id, user_id)
    withdrawn = refund.requested_by_id == user_id
    events.reject_refund(refund, user_id=user_id,
                         reason="Withdrawn by the requester." if withdrawn else "Rejected.")
    audit(session, lab_id=lab_id, user_id=user_id, action="refund.reject",
          object_type="refund", object_id=refund.id, ip=ip, payment_id=refund.payment_id,
          amount=refund.amount, currency=refund.payment.currency,
          requested_by=refund.requested_by_id, withdrawn=withdrawn)
    session.commit()
    return refund


def submit_refund(session: Session, config: Mapping[str, Any], refund_id: int, *,
                  schedule_retry: bool = True) -> Refund:
    """Sends a pending refund; a retry reuses its idempotency key, so it refunds once."""
    refund = session.get_one(Refund, refund_id)
    payment = refund.payment
    if refund.status != RefundStatus.PENDING or refund.gateway_refund_id:
        return refund
    try:
        gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    except GatewayError as exc:  # keys removed or disabled since the payment was made
        lock_link_and_payment(session, payment.id)
        refund = session.get_one(Refund, refund_id, populate_existing=True)
        fail_refund(refund, exc.message)
        session.commit()
        return refund
    call = GatewayCall(session, gateway, payment, ExchangeKind.REFUND_REQUESTED,
                       event_type="refund.request")
    request = RefundRequest(reference=payment.reference,
                            transaction_id=payment.gateway_transaction_id, amount=refund.amount,
                            currency=payment.currency, reason=refund.reason,
                            idempotency_key=f"refund-{refund.reference}")

    def not_accepted(payment: Payment, exc: GatewayError) -> None:
        refund = session.get_one(Refund, refund_id, populate_existing=True)
        if not exc.retryable:
            fail_refund(refund, call.mask(exc.message))
            return
        refund.failure_reason = call.mask(f"Will retry: {exc.message}")[:500]
        if schedule_retry:
            enqueue(session, "refund.submit", {"refund_id": refund.id}, lab_id=refund.lab_id,
                    run_at=utcnow() + timedelta(seconds=30), dedupe=f"refund-{refund.id}")

    try:
        result = call.send(lambda: gateway.refund(request),
                           failed=f"refund {refund.reference} not accepted",
                           on_failure=not_accepted)
    except GatewayError:
        return session.get_one(Refund, refund_id)
    _link, payment = call.lock()
    refund = session.get_one(Refund, refund_id, populate_existing=True)
    refund.gateway_refund_id = result.refund_id
    refund.failure_reason = None
    if result.status == EventStatus.REFUND_SUCCEEDED:
        outcome, _ = settle_refund(payment, refund)
    elif result.status == EventStatus.REFUND_FAILED:
        outcome, _ = fail_refund(refund, "the gateway refused the refund")
    else:
        outcome = f"refund {refund.reference} accepted, pending at the gateway"
    call.record(payment, outcome=outcome, payload=dict(result.raw))
    session.commit()
    return refund
