"""Razorpay on the wire, in pure functions: Payment Link bodies, events, what the return signs.

Protocol notes: docs/gateways/razorpay.md. Our payment reference is the link's `reference_id`
and sits in the `notes` of the link and every refund.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import razorpay
import requests

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    header,
    json_object,
    unix_time,
)

# ---- constants ----------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Razorpay-Signature"
EVENT_ID_HEADER = "X-Razorpay-Event-Id"
# Razorpay wants expire_by at least 15 minutes ahead.
LINK_MIN_LIFETIME = timedelta(minutes=16)

LINK_STATUS = {
    "created": EventStatus.PENDING,
    "partially_paid": EventStatus.PENDING,  # we never ask for part payments at Razorpay
    "paid": EventStatus.SUCCEEDED,
    "expired": EventStatus.FAILED,
    "cancelled": EventStatus.FAILED,
}
LINK_EVENTS = {
    "payment_link.paid": EventStatus.SUCCEEDED,
    "payment_link.partially_paid": EventStatus.PENDING,
    "payment_link.expired": EventStatus.FAILED,
    "payment_link.cancelled": EventStatus.FAILED,
}
PAYMENT_EVENTS = {"payment.captured": EventStatus.SUCCEEDED, "payment.failed": EventStatus.FAILED}
REFUND_EVENTS = {"refund.processed": EventStatus.REFUND_SUCCEEDED,
                 "refund.failed": EventStatus.REFUND_FAILED}
REFUND_STATUS = {"pending": EventStatus.PENDING, "processed": EventStatus.REFUND_SUCCEEDED,
                 "failed": EventStatus.REFUND_FAILED}
HANDLED_EVENTS = (*LINK_EVENTS, *PAYMENT_EVENTS, *REFUND_EVENTS)


# ---- wire format --------------------------------------------------------------------------------

def link_expire_by(link_expires_at: datetime, now: datetime) -> int:
    return int(max(link_expires_at, now + LINK_MIN_LIFETIME).timestamp())


def payment_link_params(request: CheckoutRequest, now: datetime) -> dict[str, Any]:
    """The `POST /v1/payment_links` body for one payment of ours."""
    customer = {k: v for k, v in (("name", request.customer_name),
                                  ("email", request.customer_email),
                                  ("contact", request.customer_phone)) if v}
    params: dict[str, Any] = {
        "amount": request.amount,
        "currency": request.currency,
        "accept_partial": False,
        "reference_id": request.reference,
        "description": f"{request.merchant_name}: bill {request.bill_reference}"[:2048],
        "expire_by": link_expire_by(request.expires_at, now),
        "notify": {"sms": False, "email": False},  # the portal sends its own messages
        "reminder_enable": False,
        "notes": {"reference": request.reference, "bill_reference": request.bill_reference},
        "callback_url": request.return_url,
        "callback_method": "get",
    }
    if customer:
        params["customer"] = customer
    return params


def entity(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    return ((payload.get(name) or {}).get("entity")) or {}


def load_event(raw_body: bytes) -> dict[str, Any]:
    body = json_object(raw_body, "a Razorpay event")
    try:
        body["event"], body["payload"].items  # noqa: B018  the shape every event has
    except (KeyError, TypeError, AttributeError):
        raise MalformedPayload("not a Razorpay event") from None
    return body


def event_reference(body: Mapping[str, Any]) -> str:
    payload = body["payload"]
    link = entity(payload, "payment_link")
    if link.get("reference_id"):
        return str(link["reference_id"])
    for name in ("refund", "payment"):
        notes = entity(payload, name).get("notes") or {}
        if isinstance(notes, Mapping) and notes.get("reference"):
            return str(notes["reference"])
    return ""


def dedupe_id(headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    event_id = header(headers, EVENT_ID_HEADER)
    if event_id:
        return event_id
    # Older deliveries without the header: the event, its entity and its state identify it.
    payload = body["payload"]
    entity = next((entity(payload, n) for n in ("refund", "payment", "payment_link")
                   if entity(payload, n)), {})
    seed = f"{body['event']}|{entity.get('id')}|{entity.get('status')}"
    return "derived_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def payment_details(payment: Mapping[str, Any]) -> dict[str, Any]:
    card = payment.get("card") or {}
    return {"transaction_id": payment.get("id"), "method": payment.get("method"),
            "card_brand": card.get("network"), "card_last4": card.get("last4")}


def parse_event(body: Mapping[str, Any], event_id: str) -> GatewayEvent:
    kind = body["event"]
    payload = body["payload"]
    common = {"dedupe_id": event_id, "type": kind, "reference": event_reference(body),
              "occurred_at": unix_time(body.get("created_at") or 0),
              "raw": dict(body)}
    payment = entity(payload, "payment")
    if kind in LINK_EVENTS:
        link = entity(payload, "payment_link")
        return GatewayEvent(**common, status=LINK_EVENTS[kind],
                            amount=link.get("amount_paid") if kind == "payment_link.paid"
                            else link.get("amount"),
                            currency=link.get("currency"), checkout_id=link.get("id"),
                            **payment_details(payment))
    if kind in PAYMENT_EVENTS:
        raw = dict(body)
        if payment.get("error_description"):
            raw["failure_message"] = payment["error_description"]
        return GatewayEvent(**{**common, "raw": raw}, status=PAYMENT_EVENTS[kind],
                            amount=payment.get("amount"), currency=payment.get("currency"),
                            **payment_details(payment))
    if kind in REFUND_EVENTS:
        refund = entity(payload, "refund")
        return GatewayEvent(**common, status=REFUND_EVENTS[kind], amount=refund.get("amount"),
                            currency=refund.get("currency"),
                            transaction_id=refund.get("payment_id"), refund_id=refund.get("id"),
                            refund_reference=(refund.get("notes") or {}).get("refund_reference"))
    raise IgnoredEvent(f"Razorpay event {kind} is not used")


def gateway_error(exc: Exception) -> GatewayError:
    if isinstance(exc, requests.Timeout):
        return GatewayError("Razorpay did not answer in time.", code="timeout", retryable=True)
    if isinstance(exc, requests.RequestException):
        return GatewayError("Razorpay could not be reached.", code="unreachable", retryable=True)
    if isinstance(exc, ValueError):  # an error page instead of JSON
        return GatewayError("Razorpay answered with an unreadable error.", code="gateway_error",
                            retryable=True)
    message = str(exc) or "the request was refused"
    if isinstance(exc, razorpay.errors.BadRequestError):
        code = "bad_credentials" if "authentication" in message.lower() else "gateway_error"
        return GatewayError(f"Razorpay: {message}", code=code)
    return GatewayError(f"Razorpay: {message}", code="gateway_error", retryable=True)


# ---- signatures ---------------------------------------------------------------------------------

def return_message(params: Mapping[str, str]) -> str:
    """What Razorpay signs on the payer's redirect back to us."""
    return "|".join((params.get("razorpay_payment_link_id", ""),
                     params.get("razorpay_payment_link_reference_id", ""),
                     params.get("razorpay_payment_link_status", ""),
                     params.get("razorpay_payment_id", "")))
