"""One request to a lab's gateway about a payment, and its record in the exchange log.

The sequence every such request follows: commit (no transaction or row lock stays open across
the call), call the gateway, then under the link's and the payment's row locks apply what
came back and record the exchange with the gateway's secrets masked, and commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from gateways import Gateway
from gateways.base import GatewayError, GatewayEvent
from gateways.http import mask_secrets

from .. import metrics
from ..models import ExchangeKind, OnlinePayment, Payment, PaymentGatewayTransaction
from .events import Applied, apply_gateway_event, lock_link_and_payment, record_exchange

T = TypeVar("T")
Masked = TypeVar("Masked", str, dict[str, Any])


class GatewayCall:
    """A call to `gateway` about the payment `payment_id`, recorded as an exchange of `kind`."""

    def __init__(self, session: Session, gateway: Gateway, payment: Payment, kind: ExchangeKind,
                 *, event_type: str | None = None) -> None:
        self.session = session
        self.gateway = gateway
        self.payment_id = payment.id
        self.lab_id = payment.lab_id
        self.gateway_name = payment.gateway
        self.kind = kind
        self.event_type = event_type
        self.secrets = type(gateway).secret_values(gateway.credentials)

    def mask(self, value: Masked) -> Masked:
        masked: Masked = mask_secrets(value, self.secrets)
        return masked

    def send(self, request: Callable[[], T], *, failed: str,
             on_failure: Callable[[Payment, GatewayError], object] | None = None) -> T:
        """Commits, then calls; a GatewayError is recorded, committed and raised again.

        `on_failure` changes the payment (under its row locks) before the record is written.
        """
        self.session.commit()
        kind = str(self.kind.value)
        started = time.perf_counter()
        try:
            return request()
        except GatewayError as exc:
            metrics.GATEWAY_CALL_ERRORS.labels(self.gateway_name, kind, exc.code).inc()
            _link, payment = self.lock()
            if on_failure is not None:
                on_failure(payment, exc)
            self.record(payment, success=False, outcome=failed, error=exc.message,
                        payload={"code": exc.code, "raw": exc.raw})
            self.session.commit()
            raise
        except Exception:
            metrics.GATEWAY_CALL_ERRORS.labels(self.gateway_name, kind, "unexpected").inc()
            raise
        finally:
            metrics.GATEWAY_CALL_SECONDS.labels(self.gateway_name, kind).observe(
                time.perf_counter() - started)

    def lock(self) -> tuple[OnlinePayment, Payment]:
        """The link's and the payment's row locks, in the fixed order, for what came back."""
        return lock_link_and_payment(self.session, self.payment_id)

    def record(self, payment: Payment, *, outcome: str, success: bool = True,
               error: str | None = None, payload: dict[str, Any] | None = None,
               event_type: str | None = None) -> PaymentGatewayTransaction:
        """The exchange, its error and payload masked; the caller commits."""
        return record_exchange(
            self.session, lab_id=self.lab_id, gateway=self.gateway_name, kind=self.kind,
            payment=payment, event_type=event_type or self.event_type, success=success,
            outcome=outcome, error=None if error is None else self.mask(error),
            payload=self.mask(payload or {}))

    def apply(self, event: GatewayEvent, *, signature_valid: bool | None = None) -> Applied:
        """The gateway's answer, applied like a webhook (once per event id); commits.

        `signature_valid` is None for the answer to our own request, True for a signed return.
        """
        applied = apply_gateway_event(self.session, lab_id=self.lab_id,
                                      gateway=self.gateway_name, event=event, kind=self.kind,
                                      signature_valid=signature_valid,
                                      payload=self.mask(dict(event.raw)))
        self.session.commit()
        return applied
