"""Incoming gateway webhooks: find the lab, verify, record once, apply."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import GatewayError, MalformedPayload, SignatureError
from gateways.http import mask_secrets

from ..models import ExchangeKind, Payment
from .events import Applied, apply_gateway_event
from .keys import configured_gateway

log = logging.getLogger(__name__)


class WebhookRejected(Exception):
    """Answered 400 and nothing is changed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Received:
    applied: Applied
    reference: str


def receive_webhook(session: Session, config: Mapping, gateway_name: str,
                    headers: Mapping[str, str], raw_body: bytes) -> Received:
    cls = GATEWAYS.get(gateway_name)
    if cls is None:
        raise WebhookRejected("unknown_gateway", "No such gateway.")
    try:
        reference = cls.extract_reference(headers, raw_body)
    except MalformedPayload as exc:
        raise WebhookRejected("malformed_payload", exc.message) from None
    lab_id = session.scalar(select(Payment.lab_id).where(Payment.reference == reference,
                                                         Payment.gateway == gateway_name))
    if lab_id is None:
        raise WebhookRejected("unknown_reference", "No payment has this reference.")
    try:
        gateway = configured_gateway(session, config, lab_id, gateway_name)
        event = gateway.parse_webhook(headers, raw_body)
    except SignatureError as exc:
        log.warning("%s webhook for %s rejected: %s", gateway_name, reference, exc.message)
        raise WebhookRejected("bad_signature", "Signature verification failed.") from None
    except MalformedPayload as exc:
        raise WebhookRejected("malformed_payload", exc.message) from None
    except GatewayError as exc:  # not configured, or an unknown status value
        log.error("%s webhook for %s not applied: %s", gateway_name, reference, exc.message)
        raise WebhookRejected(exc.code, exc.message) from None
    if event.reference != reference:
        raise WebhookRejected("malformed_payload", "The reference changed under verification.")
    secrets = cls.secret_values(gateway.credentials)
    applied = apply_gateway_event(session, lab_id=lab_id, gateway=gateway_name, event=event,
                                  kind=ExchangeKind.WEBHOOK_RECEIVED, signature_valid=True,
                                  payload=mask_secrets(dict(event.raw), secrets))
    return Received(applied, reference)
