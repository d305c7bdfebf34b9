"""Incoming gateway webhooks: find the lab, verify, record once, apply."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import (
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    SignatureError,
)
from gateways.http import mask_secrets

from ..extensions import reads_only
from ..models import ExchangeKind, Payment, PaymentGatewayKeys
from .events import Applied, apply_gateway_event
from .keys import STORED_COLUMNS, StoredKeys, gateway_from_stored

log = logging.getLogger(__name__)


class WebhookRejected(Exception):
    """Answered 400 (or 503 when a retry may succeed) and nothing is changed."""

    def __init__(self, code: str, message: str, *, retry: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = 503 if retry else 400  # 503: the gateway should send it again later


@dataclass(frozen=True)
class Received:
    applied: Applied
    reference: str


def receive_webhook(session: Session, config: Mapping[str, Any], gateway_name: str,
                    headers: Mapping[str, str], raw_body: bytes) -> Received:
    """Raises WebhookRejected (400, nothing changed) or IgnoredEvent (acknowledged, ignored)."""
    cls = GATEWAYS.get(gateway_name)
    if cls is None:
        raise WebhookRejected("unknown_gateway", "No such gateway.")
    try:
        reference = cls.extract_reference(headers, raw_body)
        transaction_id = None if reference else cls.extract_transaction_id(headers, raw_body)
    except MalformedPayload as exc:
        raise WebhookRejected("malformed_payload", exc.message) from None
    with reads_only():  # on SQLite, finding the lab's secret waits for no writer
        found = _find_payment(session, gateway_name, reference, transaction_id)
        if found is None and not reference:
            raise IgnoredEvent("the event is about no payment of ours")
        if found is None:
            raise WebhookRejected("unknown_reference", "No payment has this reference.")
        lab_id, reference, payment_id, link_id, stored = found
        try:
            gateway = gateway_from_stored(config, gateway_name, stored)
            if cls.webhook_calls_api or session.get_bind().dialect.name == "sqlite":
                # Nothing written yet. No transaction stays open across a gateway's API, and
                # a SQLite read cannot safely become a write; on PostgreSQL the one
                # transaction goes on into the apply (a BEGIN and COMMIT fewer).
                session.commit()
            event = gateway.parse_webhook(headers, raw_body)
        except SignatureError as exc:
            log.warning("%s webhook for %s rejected: %s", gateway_name, reference, exc.message)
            raise WebhookRejected("bad_signature", "Signature verification failed.") from None
        except MalformedPayload as exc:
            raise WebhookRejected("malformed_payload", exc.message) from None
        except IgnoredEvent:
            raise
        except GatewayError as exc:  # not configured, an unknown status, or confirmation failed
            log.error("%s webhook for %s not applied: %s", gateway_name, reference, exc.message)
            raise WebhookRejected(exc.code, exc.message, retry=exc.retryable) from None
    problem = _unstorable(event)
    if problem:
        log.warning("%s webhook for %s refused: %s", gateway_name, reference, problem)
        raise WebhookRejected("malformed_payload", problem)
    if not event.reference:
        event = replace(event, reference=reference)
    if event.reference != reference:
        raise WebhookRejected("malformed_payload", "The reference changed under verification.")
    secrets = cls.secret_values(gateway.credentials)
    applied = apply_gateway_event(session, lab_id=lab_id, gateway=gateway_name, event=event,
                                  kind=ExchangeKind.WEBHOOK_RECEIVED, signature_valid=True,
                                  payload=mask_secrets(dict(event.raw), secrets),
                                  payment=(payment_id, link_id))
    return Received(applied, reference)


# The widest column each event field is stored in (models.py); a signed event is still data.
EVENT_TEXT_LIMITS = {"dedupe_id": 255, "type": 100, "reference": 40, "currency": 3,
                     "checkout_id": 255, "transaction_id": 255, "refund_id": 255,
                     "refund_reference": 40, "method": 50, "card_brand": 30, "card_last4": 4}


def _unstorable(event: GatewayEvent) -> str | None:
    """Why a parsed event cannot be recorded as it is, or None."""
    for name, limit in EVENT_TEXT_LIMITS.items():
        value = getattr(event, name)
        if value is not None and len(str(value)) > limit:
            return f"{name} is not text of at most {limit} characters"
    amount = event.amount
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)
                               or not 0 <= amount < 2**63):
        return "amount is not a whole number of minor units"
    return None


def _find_payment(session: Session, gateway: str, reference: str, transaction_id: str | None
                  ) -> tuple[int, str, int, int, StoredKeys | None] | None:
    """(lab id, reference, payment id, link id, the lab's stored keys for the gateway) of the
    payment an unverified event names, to pick the secret: one statement."""
    query = (select(Payment.lab_id, Payment.reference, Payment.id, Payment.online_payment_id,
                    *STORED_COLUMNS)
             .outerjoin(PaymentGatewayKeys,
                        (PaymentGatewayKeys.lab_id == Payment.lab_id)
                        & (PaymentGatewayKeys.gateway == Payment.gateway)))
    if reference:
        query = query.where(Payment.reference == reference, Payment.gateway == gateway)
    elif transaction_id:
        query = query.where(Payment.gateway == gateway,
                            Payment.gateway_transaction_id == transaction_id)
    else:
        return None
    row = session.execute(query.limit(1)).first()
    if row is None:
        return None
    stored = None if row.enabled is None else StoredKeys(*row[4:])
    return row.lab_id, row.reference, row.id, row.online_payment_id, stored
