"""The sandbox gateway's server side: what a real gateway would keep on its own machines."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import sandbox as wire

from ..models import Payment, SandboxCharge
from ..worker.queue import enqueue
from .keys import load_credentials

log = logging.getLogger(__name__)


class SandboxError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Merchant:
    lab_id: int
    secret: str


def merchant_for(session: Session, encryption_keys: list[str], reference: str) -> Merchant:
    """Whose checkout this is, found the way a gateway finds its merchant: by the reference."""
    lab_id = session.scalar(select(Payment.lab_id).where(Payment.reference == reference,
                                                         Payment.gateway == "sandbox"))
    credentials = load_credentials(session, encryption_keys, lab_id, "sandbox") if lab_id else None
    if lab_id is None or credentials is None:
        raise SandboxError("Unknown checkout.", 404)
    return Merchant(lab_id, credentials["webhook_secret"])


def record_outcome(session: Session, merchant: Merchant, reference: str,
                   params: Mapping[str, str], succeeded: bool) -> SandboxCharge:
    """The patient paid or declined: remember it and queue the signed webhook."""
    charge = session.get(SandboxCharge, reference, with_for_update=True)
    if charge is not None and charge.status == "succeeded":
        return charge  # a second press never charges twice
    event_id = "evt_" + secrets.token_hex(12)
    status = "succeeded" if succeeded else "failed"
    if charge is None:
        charge = SandboxCharge(reference=reference, status=status, amount=int(params["amount"]),
                               currency=params["currency"], event_id=event_id)
        session.add(charge)
    else:
        charge.status, charge.event_id = status, event_id
    body = wire.build_event(event_id, succeeded, reference, charge.amount, charge.currency)
    enqueue(session, "sandbox.deliver_webhook",
            {"notify_url": params["notify_url"], "body": body.decode(), "event_id": event_id},
            lab_id=merchant.lab_id)
    return charge


def status_answer(charge: SandboxCharge | None) -> dict[str, Any]:
    if charge is None:
        return {"status": "open"}
    return {"status": charge.status, "amount": charge.amount, "currency": charge.currency,
            "transaction_id": f"sbx_{charge.event_id}", "amount_refunded": charge.amount_refunded}


def refund(session: Session, reference: str, amount: int,
           idempotency_key: str) -> dict[str, Any]:
    charge = session.get(SandboxCharge, reference, with_for_update=True)
    if charge is None or charge.status != "succeeded":
        raise SandboxError("No successful charge to refund.", 400)
    if idempotency_key in charge.refunds:
        answered: dict[str, Any] = charge.refunds[idempotency_key]
        return answered
    if amount <= 0 or amount > charge.amount - charge.amount_refunded:
        raise SandboxError("The refund is more than what remains refundable.", 400)
    charge.amount_refunded += amount
    answer = {"id": "rf_" + secrets.token_hex(10), "status": "succeeded", "amount": amount}
    charge.refunds = {**charge.refunds, idempotency_key: answer}
    return answer


def deliver_webhook(session: Session, config: Mapping[str, Any], lab_id: int, notify_url: str,
                    body: bytes, event_id: str | None) -> None:
    """POSTs the sandbox's event, signed afresh on every attempt as Stripe does."""
    credentials = load_credentials(session, config["PORTAL_ENCRYPTION_KEYS"], lab_id, "sandbox")
    if credentials is None:
        raise RuntimeError("the lab no longer has sandbox credentials")
    session.commit()  # no transaction stays open across the HTTP call
    headers = {"Content-Type": "application/json",
               wire.SIGNATURE_HEADER: wire.sign(credentials["webhook_secret"], body,
                                                int(time.time()))}
    response = requests.post(notify_url, data=body, headers=headers, timeout=(5, 15))
    if response.status_code >= 300:
        raise RuntimeError(f"webhook endpoint answered HTTP {response.status_code}")
    log.info("sandbox webhook %s delivered", event_id)
