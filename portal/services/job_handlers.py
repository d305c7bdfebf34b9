"""What the worker does for each kind of job."""

from __future__ import annotations

import time

import requests
from flask import current_app

from gateways import sandbox as sandbox_wire

from ..models import Job
from . import (  # noqa: F401  their handlers register on import
    cancellation,
    expiry,
    notifications,
    profiles,
    reconciliation,
    refunds,
)
from .checkout import fetch_and_apply
from .jobs import handler
from .keys import load_credentials


@handler("payment.fetch_status")
def fetch_status(app, session, job: Job) -> None:
    fetch_and_apply(session, app.config, job.payload["payment_id"])


@handler("sandbox.deliver_webhook")
def deliver_sandbox_webhook(app, session, job: Job) -> None:
    """POSTs the sandbox's event, signed afresh on every attempt as Stripe does."""
    credentials = load_credentials(session, app.config["PORTAL_ENCRYPTION_KEYS"],
                                   job.lab_id, "sandbox")
    if credentials is None:
        raise RuntimeError("the lab no longer has sandbox credentials")
    body = job.payload["body"].encode()
    notify_url = job.payload["notify_url"]
    session.commit()  # no transaction stays open across the HTTP call
    headers = {"Content-Type": "application/json",
               sandbox_wire.SIGNATURE_HEADER: sandbox_wire.sign(
                   credentials["webhook_secret"], body, int(time.time()))}
    response = requests.post(notify_url, data=body, headers=headers,
                             timeout=(5, 15))
    if response.status_code >= 300:
        raise RuntimeError(f"webhook endpoint answered HTTP {response.status_code}")
    current_app.logger.info("sandbox webhook %s delivered", job.payload.get("event_id"))
