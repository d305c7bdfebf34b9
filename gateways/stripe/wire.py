"""Stripe on the wire, in pure functions: Checkout Session bodies, events, signatures.

Protocol notes: docs/gateways/stripe.md. Checkout carries our reference as `client_reference_id`
and in the metadata of the session, the PaymentIntent and every refund, so each webhook leads
back to one of our payments without trusting anything unsigned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import stripe

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    SignatureError,
    hmac_sha256_hex,
    json_object,
    lookup_status,
    unix_time,
)

# ---- constants ----------------------------------------------------------------------------------

SIGNATURE_HEADER = "Stripe-Signature"
TOLERANCE_SECONDS = 300
# Stripe allows a Checkout Session to live between 30 minutes and 24 hours.
SESSION_MIN_LIFETIME = timedelta(minutes=31)
SESSION_MAX_LIFETIME = timedelta(hours=23, minutes=59)

SESSION_EVENTS = {
    "checkout.session.async_payment_succeeded": EventStatus.SUCCEEDED,
    "checkout.session.async_payment_failed": EventStatus.FAILED,
    "checkout.session.expired": EventStatus.FAILED,
}
PAYMENT_INTENT_EVENTS = {
    "payment_intent.succeeded": EventStatus.SUCCEEDED,
    "payment_intent.payment_failed": EventStatus.FAILED,
    "payment_intent.canceled": EventStatus.FAILED,
}
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
HANDLED_EVENTS = ("checkout.session.completed", *SESSION_EVENTS, *PAYMENT_INTENT_EVENTS,
                  "charge.refunded", *REFUND_EVENTS)

SESSION_PAYMENT_STATUS = {
    "paid": EventStatus.SUCCEEDED,
    "unpaid": EventStatus.PENDING,  # a delayed method (bank debit) is still settling
}
SESSION_STATUS = {"open": EventStatus.PENDING, "expired": EventStatus.FAILED}
PAYMENT_INTENT_STATUS = {
    "succeeded": EventStatus.SUCCEEDED,
    "processing": EventStatus.PENDING,
    "requires_payment_method": EventStatus.PENDING,
    "requires_confirmation": EventStatus.PENDING,
    "requires_action": EventStatus.PENDING,
    "requires_capture": EventStatus.PENDING,
    "canceled": EventStatus.FAILED,
}
REFUND_STATUS = {
    "pending": EventStatus.PENDING,
    "requires_action": EventStatus.PENDING,
    "succeeded": EventStatus.REFUND_SUCCEEDED,
    "failed": EventStatus.REFUND_FAILED,
    "canceled": EventStatus.REFUND_FAILED,
}
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


# ---- wire format --------------------------------------------------------------------------------

def object_id(value: Any) -> str | None:
    """An id from a field that may hold the id or the expanded object."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value or None


def from_unix(value: Any) -> datetime | None:
    return unix_time(value) if value else None


def session_expires_at(link_expires_at: datetime, now: datetime) -> int:
    """No later than the link's expiry, within what Stripe accepts."""
    latest = min(link_expires_at, now + SESSION_MAX_LIFETIME)
    return int(max(latest, now + SESSION_MIN_LIFETIME).timestamp())


def session_params(request: CheckoutRequest, now: datetime) -> dict[str, Any]:
    """The `POST /v1/checkout/sessions` body for one payment of ours."""
    metadata = {"reference": request.reference, "bill_reference": request.bill_reference}
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [{
            "quantity": 1,
            "price_data": {
                "currency": request.currency.lower(),
                "unit_amount": request.amount,
                "product_data": {"name": f"{request.merchant_name}: bill "
                                         f"{request.bill_reference}"[:250]},
            },
        }],
        "client_reference_id": request.reference,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata,
                                "description": request.description[:1000]},
        "success_url": _with_param(request.return_url, "session_id={CHECKOUT_SESSION_ID}"),
        "cancel_url": request.cancel_url,
        "expires_at": session_expires_at(request.expires_at, now),
    }
    if request.gateway_customer_id:
        params["customer"] = request.gateway_customer_id
    elif request.customer_email:
        params["customer_email"] = request.customer_email
    if request.save_method:
        params["payment_intent_data"]["setup_future_usage"] = "off_session"
        if not request.gateway_customer_id:
            params["customer_creation"] = "always"
    return params


def _with_param(url: str, param: str) -> str:
    return url + ("&" if "?" in url else "?") + param


def load_event(raw_body: bytes) -> dict[str, Any]:
    event = json_object(raw_body, "a Stripe event")
    try:
        event["data"]["object"]["object"]  # noqa: B018  the shape every event has
    except (KeyError, TypeError):
        raise MalformedPayload("not a Stripe event") from None
    return event


def event_reference(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata") or {}
    return metadata.get("reference") or obj.get("client_reference_id")


def parse_event(event: Mapping[str, Any]) -> GatewayEvent:
    """Our view of one Stripe event; raises IgnoredEvent for events we do not act on."""
    kind = event.get("type")
    obj = event["data"]["object"]
    common = {"dedupe_id": event["id"], "type": kind, "reference": event_reference(obj) or "",
              "occurred_at": from_unix(event.get("created")), "raw": dict(event)}
    if kind == "checkout.session.completed" or kind in SESSION_EVENTS:
        status = (lookup_status(SESSION_PAYMENT_STATUS, obj.get("payment_status"))
                  if kind == "checkout.session.completed" else SESSION_EVENTS[kind])
        return GatewayEvent(**common, status=status, amount=obj.get("amount_total"),
                            currency=(obj.get("currency") or "").upper() or None,
                            checkout_id=obj.get("id"),
                            transaction_id=object_id(obj.get("payment_intent")), method="card")
    if kind in PAYMENT_INTENT_EVENTS:
        return payment_intent_event(obj, common, PAYMENT_INTENT_EVENTS[kind])
    if kind in REFUND_EVENTS:
        return refund_event(obj, common)
    if kind == "charge.refunded":
        # Cumulative: the refunds themselves arrive as refund.* events with our reference.
        return GatewayEvent(**common, status=EventStatus.REFUND_SUCCEEDED,
                            amount=obj.get("amount_refunded"),
                            currency=(obj.get("currency") or "").upper() or None,
                            transaction_id=object_id(obj.get("payment_intent")))
    raise IgnoredEvent(f"Stripe event {kind} is not used")


def payment_intent_event(obj: Mapping[str, Any], common: dict[str, Any],
                         status: EventStatus) -> GatewayEvent:
    error = obj.get("last_payment_error") or {}
    card = card_of(obj.get("payment_method"))
    raw = dict(common["raw"])
    if error.get("message"):
        raw["failure_message"] = error["message"]
    return GatewayEvent(**{**common, "raw": raw}, status=status,
                        amount=obj.get("amount_received") or obj.get("amount"),
                        currency=(obj.get("currency") or "").upper() or None,
                        transaction_id=obj.get("id"), method="card",
                        card_brand=card.get("brand"), card_last4=card.get("last4"))


def refund_event(obj: Mapping[str, Any], common: dict[str, Any]) -> GatewayEvent:
    metadata = obj.get("metadata") or {}
    return GatewayEvent(**common, status=lookup_status(REFUND_STATUS, obj.get("status")),
                        amount=obj.get("amount"),
                        currency=(obj.get("currency") or "").upper() or None,
                        transaction_id=object_id(obj.get("payment_intent")),
                        refund_id=obj.get("id"),
                        refund_reference=metadata.get("refund_reference"))


def card_of(payment_method: Any) -> dict[str, Any]:
    if isinstance(payment_method, Mapping):
        return payment_method.get("card") or {}
    return {}


def declined_intent(error_body: object) -> dict[str, Any]:
    """The PaymentIntent a card error carries: a decline still creates one."""
    error = error_body.get("error") if isinstance(error_body, Mapping) else None
    intent = error.get("payment_intent") if isinstance(error, Mapping) else None
    return dict(intent) if isinstance(intent, Mapping) else {}


def session_status_event(session: Mapping[str, Any]) -> GatewayEvent:
    """A retrieved Checkout Session (with its PaymentIntent expanded) as an event."""
    if session.get("status") == "complete":
        status = lookup_status(SESSION_PAYMENT_STATUS, session.get("payment_status"))
    else:
        status = lookup_status(SESSION_STATUS, session.get("status"))
    intent = session.get("payment_intent")
    card = card_of(intent.get("payment_method")) if isinstance(intent, Mapping) else {}
    return GatewayEvent(
        dedupe_id=None, type=f"checkout.session.{session.get('status')}",
        reference=event_reference(session) or "", status=status,
        amount=session.get("amount_total"),
        currency=(session.get("currency") or "").upper() or None,
        checkout_id=session.get("id"), transaction_id=object_id(intent), method="card",
        card_brand=card.get("brand"), card_last4=card.get("last4"), raw=dict(session))


def gateway_error(exc: stripe.StripeError) -> GatewayError:
    """A Stripe SDK error as a message staff can act on."""
    status = exc.http_status
    if isinstance(exc, stripe.APIConnectionError):
        return GatewayError("Stripe could not be reached or did not answer in time.",
                            code="unreachable", retryable=True)
    message = exc.user_message or "Stripe refused the request."
    if isinstance(exc, stripe.AuthenticationError):
        code = "bad_credentials"
    elif isinstance(exc, stripe.CardError):
        code = "declined"
    elif isinstance(exc, stripe.RateLimitError):
        code = "rate_limited"
    else:
        code = "gateway_error"
    retryable = status is None or status >= 500 or status == 429
    return GatewayError(f"Stripe: {message}", code=code, retryable=retryable,
                        http_status=status, raw=exc.json_body)


# ---- signatures ---------------------------------------------------------------------------------

def verify_signature(secret: str, payload: bytes, header: str | None, *,
                     tolerance: int = TOLERANCE_SECONDS) -> None:
    """`Stripe-Signature` on the raw bytes: any `v1` may match, timestamps age out after 300 s."""
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), header, secret,
                                              tolerance=tolerance)
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    except stripe.SignatureVerificationError as exc:
        raise SignatureError(f"Stripe signature: {exc.user_message}") from None


def sign(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value, as Stripe computes it (for tests and tools)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={hmac_sha256_hex(secret, str(timestamp).encode() + b'.' + payload)}"
