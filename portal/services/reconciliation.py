"""Reconciliation: pending payments are asked about on a schedule, in case a webhook was lost.

Every pending payment carries `next_check_at` (the first is booked when its checkout is made).
The periodic scan queues a `payment.fetch_status` job for each one due and books the next check
further out, until the payment is final (the webhook path clears `next_check_at`) or its
polling deadline passes. Results go through `apply_gateway_event`, like webhooks.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import GATEWAYS, Gateway

from ..models import OnlinePayment, Payment, PaymentStatus, utcnow
from ..worker.queue import enqueue

log = logging.getLogger(__name__)

THEN_EVERY = timedelta(hours=1)
# Money may still land after the link expired (a payment begun just before): keep asking.
GRACE_AFTER_EXPIRY = timedelta(hours=24)
BATCH = 500


def checkpoints(gateway: str) -> tuple[timedelta, ...]:
    """When a pending payment is asked about, counted from its start: the gateway's schedule."""
    cls = GATEWAYS.get(gateway, Gateway)
    return tuple(timedelta(seconds=s) for s in cls.status_check_delays)


def next_check(started: datetime, now: datetime,
               offsets: tuple[timedelta, ...] = checkpoints("")) -> datetime:
    """The first checkpoint after `now`, for a payment started at `started`; then hourly."""
    for offset in offsets:
        if started + offset > now:
            return started + offset
    last = started + offsets[-1]
    return last + ((now - last) // THEN_EVERY + 1) * THEN_EVERY


def deadline(payment: Payment, link_expires_at: datetime) -> datetime:
    """After this the payment is no longer asked about.

    A gateway that settles every payment within a fixed time of its start (its cut-off, e.g.
    PhonePe's) need not be asked later; others are followed until the link's expiry + grace.
    """
    until = link_expires_at + GRACE_AFTER_EXPIRY
    cutoff = GATEWAYS.get(payment.gateway, Gateway).status_check_cutoff
    if cutoff is not None:
        until = min(until, payment.created_at + timedelta(seconds=cutoff))
    return until


def schedule_status_checks(session: Session, *, now: datetime | None = None,
                           batch: int = BATCH) -> int:
    """Queues a status check for every pending payment due one, books the next; commits.

    Returns how many checks were queued. Payment rows are taken with SKIP LOCKED on
    PostgreSQL (never waiting, so never deadlocking with the link-first locks of webhooks).
    """
    now = now or utcnow()
    query = (select(Payment, OnlinePayment.expires_at)
             .join(OnlinePayment, OnlinePayment.id == Payment.online_payment_id)
             .where(Payment.status == PaymentStatus.PENDING, Payment.next_check_at <= now)
             .order_by(Payment.next_check_at).limit(batch)
             .execution_options(populate_existing=True))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Payment, skip_locked=True)
    queued = 0
    for payment, link_expires_at in session.execute(query).all():
        until = deadline(payment, link_expires_at)
        if enqueue(session, "payment.fetch_status", {"payment_id": payment.id},
                   lab_id=payment.lab_id, max_attempts=3,
                   dedupe=f"fetch-status-{payment.id}") is not None:
            queued += 1
        following = next_check(payment.created_at, now, checkpoints(payment.gateway))
        if following <= until:
            payment.next_check_at = following
        elif now < until:
            payment.next_check_at = until  # one last look at the deadline
        else:
            payment.next_check_at = None
            log.info("payment %s still pending at its deadline: no more status checks",
                     payment.reference)
    session.commit()
    return queued
