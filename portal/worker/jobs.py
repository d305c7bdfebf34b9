"""Every kind of job the worker runs, and what runs it: one table, nothing registered on import.

A handler gets the app, a session and its claimed job; what it writes commits with "done"
(`queue.complete`), and an exception makes the job retry with backoff until it is dead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from flask import Flask
from sqlalchemy.orm import Session

from ..models import Job, RefundStatus
from ..services import (
    cancellation,
    checkout,
    expiry,
    notifications,
    outhooks,
    profiles,
    reconciliation,
    refunds,
    sandbox,
)
from .queue import Batched, Handler, Periodic, prune


def fetch_status(app: Flask, session: Session, job: Job) -> None:
    checkout.fetch_and_apply(session, app.config, job.payload["payment_id"])


def cancel_checkout(app: Flask, session: Session, job: Job) -> None:
    cancellation.cancel_checkout(session, app.config, job.payload["payment_id"])


def save_method(app: Flask, session: Session, job: Job) -> None:
    profiles.save_method_from_payment(session, app.config, job.payload["payment_id"],
                                      job.payload.get("transaction_id"))


def submit_refund(app: Flask, session: Session, job: Job) -> None:
    refund = refunds.submit_refund(session, app.config, job.payload["refund_id"],
                                   schedule_retry=False)
    if refund.status == RefundStatus.PENDING and not refund.gateway_refund_id:
        raise RuntimeError(refund.failure_reason or "refund not yet accepted")


def deliver_sandbox_webhook(app: Flask, session: Session, job: Job) -> None:
    if job.lab_id is None:
        raise RuntimeError("a sandbox webhook job names no lab")
    sandbox.deliver_webhook(session, app.config, job.lab_id, job.payload["notify_url"],
                            job.payload["body"].encode(), job.payload.get("event_id"))


def deliver_lab_webhook(app: Flask, session: Session, job: Job) -> None:
    """One attempt of an event to one of the lab's endpoints; a failure is recorded, not raised:
    the delivery schedules its own retry (three days of backoff, not the queue's)."""
    outhooks.deliver(session, app.config, job.payload["delivery_id"])


def resume_lab_webhooks(app: Flask, session: Session, job: Job) -> None:
    outhooks.resume_stalled(session)


def scan_pending_payments(app: Flask, session: Session, job: Job) -> None:
    reconciliation.schedule_status_checks(session)


def sweep_expired_links(app: Flask, session: Session, job: Job) -> None:
    expiry.expire_links(session)


def prune_jobs(app: Flask, session: Session, job: Job) -> None:
    prune(session)


# Tests add their own kinds with monkeypatch.setitem(HANDLERS, ...).
HANDLERS: Final[dict[str, Handler]] = {
    "payment.fetch_status": fetch_status,
    "payment.cancel_checkout": cancel_checkout,
    "payment.save_method": save_method,
    "refund.submit": submit_refund,
    "notification.send": notifications.send_notification,
    "notification.reminder": notifications.send_reminder,
    "sandbox.deliver_webhook": deliver_sandbox_webhook,
    outhooks.JOB_KIND: deliver_lab_webhook,
    "webhook.resume": resume_lab_webhooks,
    "reconciliation.scan": scan_pending_payments,
    "expiry.sweep": sweep_expired_links,
    "jobs.prune": prune_jobs,
}

# Kinds the runner runs a batch at a time: one read for the batch's rows, one commit for many
# "done"s (an email is a few milliseconds of work; a statement and a commit each cost as much).
BATCHED: Final[dict[str, Batched]] = {
    "notification.send": Batched(
        prepare=notifications.prepare_sends, run=notifications.deliver,
        record=notifications.record_sent, failed=notifications.record_failure,
        release=notifications.release_sends),
}

# Enqueued by the runner once per interval, whatever the number of workers.
PERIODIC: Final[dict[str, Periodic]] = {task.kind: task for task in (
    Periodic("jobs.prune", every=timedelta(hours=6)),
    Periodic("expiry.sweep", every=timedelta(minutes=1)),
    Periodic("reconciliation.scan", every=timedelta(seconds=30)),
    Periodic("webhook.resume", every=timedelta(minutes=5)),
)}
