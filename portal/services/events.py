"""The one place that moves link, payment and refund states, on rows under their row locks.

Locks are always taken in one order, the link's and then the payment's (`lock_link`,
`lock_link_and_payment`), so concurrent paths cannot deadlock. Gateway events are applied by
`apply_gateway_event`; the moves staff and sweeps make are the functions at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, contains_eager

from gateways.base import EventStatus, GatewayEvent

from .. import metrics
from ..models import (
    OPEN_LINK_STATES,
    SETTLED_PAYMENT_STATES,
    ExchangeKind,
    Lab,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    Refund,
    RefundStatus,
    insert_unless_exists,
    move_link,
    move_refund,
    utcnow,
)
from ..models import move_payment as _move_payment_row
from ..worker.queue import enqueue
from .notifications import queue_receipt
from .outhooks import emit, emit_for, has_endpoints_column, remember_endpoints

log = logging.getLogger(__name__)


def move_payment(payment: Payment, new: PaymentStatus) -> bool:
    """The model's move, counted in `portal_payments_total` by gateway and outcome."""
    moved = _move_payment_row(payment, new)
    if moved:
        metrics.PAYMENTS.labels(payment.gateway, new.value).inc()
    return moved


@dataclass(frozen=True)
class Applied:
    duplicate: bool
    outcome: str
    exchange_id: int | None = None


def record_exchange(session: Session, *, lab_id: int, gateway: str, kind: ExchangeKind,
                    payment: Payment | None = None, link_id: int | None = None,
                    event_id: str | None = None, event_type: str | None = None,
                    signature_valid: bool | None = None, success: bool = True,
                    outcome: str = "", error: str | None = None,
                    payload: dict[str, Any] | None = None) -> PaymentGatewayTransaction:
    exchange = PaymentGatewayTransaction(
        lab_id=lab_id, gateway=gateway, kind=kind,
        payment_id=payment.id if payment else None,
        online_payment_id=link_id or (payment.online_payment_id if payment else None),
        event_id=event_id, event_type=event_type, signature_valid=signature_valid,
        success=success, outcome=outcome[:500], error=(error or None) and error[:1000],
        payload=payload or {},
    )
    session.add(exchange)
    return exchange


def lock_link(session: Session, link_id: int) -> OnlinePayment:
    """The link under its row lock; its lab comes in the same round trip (receipts, messages
    and outgoing webhooks read it), with whether the lab has webhook endpoints at all."""
    link, _lab, has_endpoints = session.execute(
        select(OnlinePayment, Lab, has_endpoints_column(Lab.id))
        .join(OnlinePayment.lab).options(contains_eager(OnlinePayment.lab))
        .where(OnlinePayment.id == link_id)
        .with_for_update(of=OnlinePayment).execution_options(populate_existing=True)).one()
    remember_endpoints(session, link.lab_id, has_endpoints)
    return link


def lock_link_and_payment(session: Session, payment_id: int, *,
                          link_id: int | None = None) -> tuple[OnlinePayment, Payment]:
    """Row locks in one fixed order (link, then payment) so concurrent paths cannot deadlock."""
    if link_id is None:
        link_id = session.scalars(select(Payment.online_payment_id)
                                  .where(Payment.id == payment_id)).one()
    link = lock_link(session, link_id)
    payment = session.scalars(select(Payment).where(Payment.id == payment_id)
                              .with_for_update().execution_options(populate_existing=True)).one()
    return link, payment


def apply_gateway_event(session: Session, *, lab_id: int, gateway: str, event: GatewayEvent,
                        kind: ExchangeKind, signature_valid: bool | None = True,
                        payload: dict[str, Any] | None = None,
                        payment: tuple[int, int] | None = None) -> Applied:
    """Records `event` once (unique on gateway + event id) and applies it; the caller commits.

    `payment` is (payment id, link id) when the caller has found the payment already.
    """
    if payment is None:
        found = session.execute(select(Payment.id, Payment.online_payment_id).where(
            Payment.lab_id == lab_id, Payment.reference == event.reference,
            Payment.gateway == gateway)).first()
        payment = (found[0], found[1]) if found else None
    payment_id, link_id = payment if payment else (None, None)
    # The row locks come before the exchange's INSERT, whose foreign keys share-lock the link
    # and the payment: the other order deadlocks two events for one payment on PostgreSQL.
    locked = (lock_link_and_payment(session, payment_id, link_id=link_id)
              if payment_id is not None else None)
    exchange_id = _record_first(session, lab_id=lab_id, gateway=gateway, kind=kind,
                                event=event, signature_valid=signature_valid,
                                payment_id=payment_id, link_id=link_id,
                                payload=payload if payload is not None else dict(event.raw))
    if exchange_id is None:
        log.info("duplicate %s event %s ignored", gateway, event.dedupe_id)
        # Kept for the webhook inbox without an event id, so (gateway, event id) stays unique.
        duplicate = record_exchange(
            session, lab_id=lab_id, gateway=gateway, kind=kind, event_type=event.type,
            signature_valid=signature_valid, outcome=f"duplicate of {event.dedupe_id}: ignored",
            payload={"duplicate_of": event.dedupe_id}, link_id=link_id)
        duplicate.payment_id = payment_id
        session.flush()
        return Applied(duplicate=True, outcome="duplicate", exchange_id=duplicate.id)
    if locked is None:
        outcome = f"no {gateway} payment with reference {event.reference}"
        _finish_exchange(session, exchange_id, outcome, False)
        return Applied(duplicate=False, outcome=outcome, exchange_id=exchange_id)

    link, locked_payment = locked
    outcome, ok = apply_event(session, link, locked_payment, event)
    _finish_exchange(session, exchange_id, outcome, ok)
    log.info("%s %s on %s: %s", gateway, event.type, locked_payment.reference, outcome)
    return Applied(duplicate=False, outcome=outcome, exchange_id=exchange_id)


def _record_first(session: Session, *, lab_id: int, gateway: str, kind: ExchangeKind,
                  event: GatewayEvent, signature_valid: bool | None, payment_id: int | None,
                  link_id: int | None, payload: dict[str, Any]) -> int | None:
    """The exchange's id, or None when this gateway's event id is recorded already (one
    INSERT ... ON CONFLICT DO NOTHING: no savepoint, no second look)."""
    insert = insert_unless_exists(session, PaymentGatewayTransaction, "gateway", "event_id")
    return session.execute(insert.values(
        lab_id=lab_id, gateway=gateway, kind=kind, payment_id=payment_id,
        online_payment_id=link_id, event_id=event.dedupe_id, event_type=event.type,
        signature_valid=signature_valid, success=True, outcome="", payload=payload)
        .returning(PaymentGatewayTransaction.id)).scalar()


def _finish_exchange(session: Session, exchange_id: int, outcome: str, success: bool) -> None:
    session.execute(update(PaymentGatewayTransaction)
                    .where(PaymentGatewayTransaction.id == exchange_id)
                    .values(outcome=outcome[:500], success=success)
                    .execution_options(synchronize_session=False))


def apply_event(session: Session, link: OnlinePayment, payment: Payment,
                event: GatewayEvent) -> tuple[str, bool]:
    """Applies `event` to a locked payment and its link, with what follows a change: the
    receipt when the link turns paid, fetching a method the patient agreed to save, and the
    lab's own webhooks (outhooks: their outbox rows commit with the change too)."""
    was_settled = payment.status in SETTLED_PAYMENT_STATES
    was_paid = link.status == LinkStatus.PAID
    link_before, payment_before = link.status, payment.status
    outcome, ok = _apply(link, payment, event)
    if link.status == LinkStatus.PAID and not was_paid:
        queue_receipt(session, link)  # the outbox row commits with the change (notifications)
    if payment.status == PaymentStatus.FAILED and payment_before != PaymentStatus.FAILED:
        emit(session, link, "payment.failed")
    if link.status != link_before and link.status in LINK_EVENTS:
        emit(session, link, LINK_EVENTS[link.status])
    if payment.save_method_consent and not was_settled \
            and payment.status in SETTLED_PAYMENT_STATES:
        _queue_save_method(session, payment, event)
    return outcome, ok


def _queue_save_method(session: Session, payment: Payment, event: GatewayEvent) -> None:
    """The patient agreed to save the method: fetched from the gateway by the worker."""
    enqueue(session, "payment.save_method",
            {"payment_id": payment.id, "transaction_id": event.transaction_id},
            lab_id=payment.lab_id, dedupe=f"save-method-{payment.id}")


def _apply(link: OnlinePayment, payment: Payment, event: GatewayEvent) -> tuple[str, bool]:
    if event.refund_id or event.status in REFUND_EVENT_STATES:
        return _apply_refund(link, payment, event)
    if event.status == EventStatus.SUCCEEDED:
        return _succeeded(link, payment, event)
    if event.status == EventStatus.FAILED:
        if payment.status in SETTLED_PAYMENT_STATES:
            return "ignored as out of order: the payment already succeeded", True
        if move_payment(payment, PaymentStatus.FAILED):
            payment.failure_reason = (event.raw.get("failure_message") if event.raw else None) \
                or "declined at the gateway"
            payment.next_check_at = None
            return "payment failed", True
        return "no change: the payment had already failed", True
    if event.status == EventStatus.PENDING:
        return "no change: still pending at the gateway", True
    return f"no change: {event.status} is applied by refunds", True


def _succeeded(link: OnlinePayment, payment: Payment, event: GatewayEvent) -> tuple[str, bool]:
    if payment.status in SETTLED_PAYMENT_STATES:
        return "no change: the payment had already succeeded", True
    if event.amount != payment.amount or (event.currency or "").upper() != payment.currency:
        link.needs_attention = True
        link.attention_reason = (
            f"Gateway reported {event.amount} {event.currency} for payment {payment.reference}, "
            f"expected {payment.amount} {payment.currency}; not marked paid.")
        return "amount or currency mismatch: not marked paid", False

    move_payment(payment, PaymentStatus.SUCCEEDED)
    now = utcnow()
    payment.succeeded_at = now
    payment.next_check_at = None
    payment.failure_reason = None
    payment.gateway_transaction_id = event.transaction_id or payment.gateway_transaction_id
    payment.method = event.method or payment.method
    payment.card_brand = event.card_brand or payment.card_brand
    payment.card_last4 = event.card_last4 or payment.card_last4
    link.amount_paid += payment.amount

    if link.status not in OPEN_LINK_STATES:
        # Money is never dropped: it is recorded and the link is flagged for staff.
        link.needs_attention = True
        link.attention_reason = {
            LinkStatus.EXPIRED: "Paid after the link expired.",
            LinkStatus.CANCELLED: "Paid after the link was cancelled.",
            LinkStatus.PAID: "Paid twice: this link was already paid.",
        }[link.status]
        return f"payment succeeded on a {link.status} link: flagged for staff", True

    if link.amount_paid >= link.amount:
        move_link(link, LinkStatus.PAID)
        link.paid_at = now
        if link.amount_paid > link.amount:  # e.g. a whole-bill checkout left open, then a part
            link.needs_attention = True
            link.attention_reason = (f"Paid {link.amount_paid} {link.currency} on a bill of "
                                     f"{link.amount}: more than was owed.")
            return "payment succeeded; link paid, more than owed: flagged for staff", True
        return "payment succeeded; link paid", True
    move_link(link, LinkStatus.PARTIALLY_PAID)
    return "payment succeeded; link partially paid", True


LINK_EVENTS = {LinkStatus.PAID: "link.paid", LinkStatus.PARTIALLY_PAID: "link.partially_paid"}
REFUND_EVENT_STATES = frozenset({EventStatus.REFUND_SUCCEEDED, EventStatus.REFUND_FAILED})


def _apply_refund(link: OnlinePayment, payment: Payment, event: GatewayEvent) -> tuple[str, bool]:
    """A refund's final state, matched by the gateway's refund id or our refund reference."""
    refund = next((r for r in payment.refunds
                   if (event.refund_id and r.gateway_refund_id == event.refund_id)
                   or (event.refund_reference and r.reference == event.refund_reference)), None)
    if refund is None and event.refund_id is None and event.status == EventStatus.REFUND_SUCCEEDED:
        return _settle_up_to(payment, event.amount or 0)
    if refund is None:
        if event.status == EventStatus.PENDING:
            return "no change: a refund is pending at the gateway", True
        link.needs_attention = True
        link.attention_reason = (f"A refund of {event.amount} {event.currency} on payment "
                                 f"{payment.reference} was made outside the portal.")
        return "refund not made through the portal: flagged for staff", False
    if refund.gateway_refund_id is None and event.refund_id:
        refund.gateway_refund_id = event.refund_id
    if event.status == EventStatus.PENDING:
        return "no change: the refund is still pending", True
    if event.status == EventStatus.REFUND_SUCCEEDED:
        return settle_refund(payment, refund)
    return fail_refund(refund, (event.raw.get("failure_message") if event.raw else None)
                       or "the gateway could not refund")


def settle_refund(payment: Payment, refund: Refund) -> tuple[str, bool]:
    if refund.status == RefundStatus.SUCCEEDED:
        return "no change: the refund had already succeeded", True
    move_refund(refund, RefundStatus.SUCCEEDED)
    payment.amount_refunded += refund.amount
    move_payment(payment, PaymentStatus.REFUNDED if payment.amount_refunded >= payment.amount
                 else PaymentStatus.PARTIALLY_REFUNDED)
    emit_for(payment, payment.online_payment, "refund.succeeded")
    return f"refund {refund.reference} succeeded", True


def fail_refund(refund: Refund, reason: str) -> tuple[str, bool]:
    if refund.status == RefundStatus.FAILED:
        return "no change: the refund had already failed", True
    if refund.status == RefundStatus.SUCCEEDED:
        return "ignored as out of order: the refund already succeeded", True
    move_refund(refund, RefundStatus.FAILED)
    refund.failure_reason = reason[:500]
    emit_for(refund, refund.payment.online_payment, "refund.failed")
    return f"refund {refund.reference} failed", True


def _settle_up_to(payment: Payment, refunded_total: int) -> tuple[str, bool]:
    """A cumulative 'refunded so far' (Stripe's charge.refunded): settles pending refunds."""
    settled = []
    for refund in payment.refunds:
        if (refund.status == RefundStatus.PENDING
                and payment.amount_refunded + refund.amount <= refunded_total):
            settle_refund(payment, refund)
            settled.append(refund.reference)
    if not settled:
        return "no change: the refunds were already recorded", True
    return f"refunds {', '.join(settled)} succeeded", True


# --- moves made by people, sweeps and our own requests, on rows the caller has locked ----------

def fail_payment(payment: Payment, reason: str) -> bool:
    """The gateway refused the payment before taking money; a settled one stays settled."""
    if payment.status != PaymentStatus.PENDING:
        return False
    move_payment(payment, PaymentStatus.FAILED)
    payment.failure_reason = reason[:500]
    payment.next_check_at = None
    emit_for(payment, payment.online_payment, "payment.failed")
    return True


def cancel_link(link: OnlinePayment, *, user_id: int | None) -> None:
    move_link(link, LinkStatus.CANCELLED)
    link.cancelled_at = utcnow()
    link.cancelled_by_id = user_id
    emit_for(link, link, "link.cancelled")


def expire_link(link: OnlinePayment) -> None:
    move_link(link, LinkStatus.EXPIRED)
    emit_for(link, link, "link.expired")


def approve_refund(refund: Refund, *, user_id: int) -> None:
    """A refund held for approval goes to the gateway."""
    move_refund(refund, RefundStatus.PENDING)
    refund.approved_by_id = user_id


def reject_refund(refund: Refund, *, user_id: int, reason: str) -> None:
    move_refund(refund, RefundStatus.REJECTED)
    refund.approved_by_id = user_id  # who decided
    refund.failure_reason = reason
