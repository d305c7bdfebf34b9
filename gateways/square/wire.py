"""Square on the wire, in pure functions: payment link bodies, events, errors, signatures.

Protocol notes: docs/gateways/square.md. A quick-pay link takes no reference of ours, so it
rides in `payment_note`, which Square copies onto the resulting Payment's `note`. Our checkout
id keeps the link id (to delete the link) and its order id (to read the status).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
from square.core.api_error import ApiError
from square.utils.webhooks_helper import verify_signature as sdk_verify_signature

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    RefundRequest,
    SignatureError,
    json_object,
    lookup_status,
)

# ---- constants ----------------------------------------------------------------------------------

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
NOTE_REFERENCE = re.compile(r"^Ref (\S+?):")
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
REFUND_KEY_MAX = 45  # RefundPayment limits idempotency keys to 45 characters
NO_RETRIES = {"max_retries": 0}  # the SDK otherwise sleeps and retries 5xx/429 itself

PAYMENT_STATUS = {
    "APPROVED": EventStatus.PENDING,  # authorised, not yet captured
    "PENDING": EventStatus.PENDING,
    "COMPLETED": EventStatus.SUCCEEDED,
    "CANCELED": EventStatus.FAILED,
    "FAILED": EventStatus.FAILED,
}
REFUND_STATUS = {
    "PENDING": EventStatus.PENDING,
    "COMPLETED": EventStatus.REFUND_SUCCEEDED,
    "REJECTED": EventStatus.REFUND_FAILED,
    "FAILED": EventStatus.REFUND_FAILED,
}
# A payment link's order: DRAFT until paid, then OPEN; CANCELED once the link is deleted.
ORDER_STATE = {"DRAFT": EventStatus.PENDING, "OPEN": EventStatus.PENDING,
               "COMPLETED": EventStatus.PENDING, "CANCELED": EventStatus.FAILED}
PAYMENT_EVENTS = ("payment.created", "payment.updated")
REFUND_EVENTS = ("refund.created", "refund.updated")
HANDLED_EVENTS = (*PAYMENT_EVENTS, *REFUND_EVENTS)
CURRENCY_CODES = {"CURRENCY_MISMATCH", "UNSUPPORTED_CURRENCY"}


# ---- wire format --------------------------------------------------------------------------------

def payment_note(request: CheckoutRequest) -> str:
    """Copied by Square onto the Payment: how a webhook leads back to our payment."""
    return f"Ref {request.reference}: {request.merchant_name}, bill {request.bill_reference}"[:500]


def note_reference(note: Any) -> str:
    match = NOTE_REFERENCE.match(note) if isinstance(note, str) else None
    return match.group(1) if match else ""


def payment_link_body(request: CheckoutRequest, location_id: str) -> dict[str, Any]:
    """The `POST /v2/online-checkout/payment-links` body for one payment of ours."""
    title = f"{request.merchant_name}: bill {request.bill_reference}"
    body: dict[str, Any] = {
        "idempotency_key": request.idempotency_key,
        "description": f"{title} ({request.reference})"[:4096],
        "quick_pay": {"name": title[:255], "location_id": location_id,
                      "price_money": {"amount": request.amount, "currency": request.currency}},
        "checkout_options": {"redirect_url": request.return_url, "allow_tipping": False,
                             "ask_for_shipping_address": False},
        "payment_note": payment_note(request),
    }
    buyer = {}
    if "@" in request.customer_email:
        buyer["buyer_email"] = request.customer_email
    if E164.match(request.customer_phone):  # Square refuses the link for a malformed number
        buyer["buyer_phone_number"] = request.customer_phone
    if buyer:
        body["pre_populated_data"] = buyer
    return body


def refund_body(request: RefundRequest) -> dict[str, Any]:
    key = request.idempotency_key
    if len(key) > REFUND_KEY_MAX:
        key = "refund-" + hashlib.sha256(key.encode()).hexdigest()[:REFUND_KEY_MAX - 7]
    body: dict[str, Any] = {
        "idempotency_key": key, "payment_id": request.transaction_id,
        "amount_money": {"amount": request.amount, "currency": request.currency}}
    if request.reason:
        body["reason"] = request.reason[:192]
    return body


def checkout_id(link_id: str, order_id: str) -> str:
    return f"{link_id}:{order_id}"


def split_checkout_id(value: str | None) -> tuple[str, str]:
    link_id, _, order_id = (value or "").partition(":")
    return link_id, order_id


def load_event(raw_body: bytes) -> dict[str, Any]:
    event = json_object(raw_body, "a Square event")
    try:
        data = event["data"]
        data.setdefault("object", {})  # test notifications carry none
        if not isinstance(event["type"], str) or not isinstance(data["object"], dict):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise MalformedPayload("not a Square event") from None
    return event


def entity(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    return value if isinstance(value, dict) else {}


def from_iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def money_of(obj: Mapping[str, Any], field: str = "amount_money") -> tuple[int | None, str | None]:
    money = obj.get(field) or {}
    return money.get("amount"), money.get("currency")


def payment_event(payment: Mapping[str, Any], common: dict[str, Any]) -> GatewayEvent:
    status = lookup_status(PAYMENT_STATUS, payment.get("status"))
    card = (payment.get("card_details") or {}).get("card") or {}
    raw = dict(common.pop("raw"))
    errors = (payment.get("card_details") or {}).get("errors") or []
    if status == EventStatus.FAILED:
        raw["failure_message"] = next((e.get("detail") for e in errors if e.get("detail")),
                                      f"Square: payment {payment.get('status', '').lower()}")
    amount, currency = money_of(payment)
    return GatewayEvent(**common, status=status, amount=amount, currency=currency, raw=raw,
                        transaction_id=payment.get("id"),
                        method=(payment.get("source_type") or "").lower() or None,
                        card_brand=card.get("card_brand"), card_last4=card.get("last_4"))


def refund_event(refund: Mapping[str, Any], common: dict[str, Any]) -> GatewayEvent:
    status = lookup_status(REFUND_STATUS, refund.get("status"))
    raw = dict(common.pop("raw"))
    if status == EventStatus.REFUND_FAILED:
        raw["failure_message"] = f"Square: refund {refund.get('status', '').lower()}"
    amount, currency = money_of(refund)
    return GatewayEvent(**common, status=status, amount=amount, currency=currency, raw=raw,
                        transaction_id=refund.get("payment_id"), refund_id=refund.get("id"))


def parse_event(event: Mapping[str, Any]) -> GatewayEvent:
    """Our view of one verified Square event; raises IgnoredEvent for events we do not use."""
    kind = event["type"]
    obj = event["data"]["object"]
    common: dict[str, Any] = {"dedupe_id": event.get("event_id"), "type": kind,
                              "occurred_at": from_iso(event.get("created_at")), "raw": dict(event)}
    if not common["dedupe_id"]:
        raise MalformedPayload("Square event without event_id")
    if kind in PAYMENT_EVENTS:
        payment = entity(obj, "payment")
        return payment_event(payment, {**common, "reference": note_reference(payment.get("note"))})
    if kind in REFUND_EVENTS:
        return refund_event(entity(obj, "refund"), {**common, "reference": ""})
    raise IgnoredEvent(f"Square event {kind} is not used")


def order_status_event(reference: str, order: Mapping[str, Any],
                       payments: Sequence[Mapping[str, Any]]) -> GatewayEvent:
    """A link's order and the payments on it, as one event: a completed payment wins."""
    state = lookup_status(ORDER_STATE, order.get("state"))
    statuses = [(lookup_status(PAYMENT_STATUS, p.get("status")), p) for p in payments]
    common: dict[str, Any] = {"dedupe_id": None, "reference": reference,
                              "raw": {"order": dict(order), "payments": payments}}
    completed = [p for status, p in statuses if status == EventStatus.SUCCEEDED]
    if completed:
        payment = completed[-1]
        return payment_event(payment, {**common, "type": "payment.completed",
                                       "occurred_at": from_iso(payment.get("updated_at"))})
    amount, currency = money_of(order, "total_money")
    status = state if state == EventStatus.FAILED else EventStatus.PENDING
    if status == EventStatus.FAILED:
        common["raw"]["failure_message"] = "Square: the payment link was closed unpaid"
    return GatewayEvent(**common, type=f"order.{str(order.get('state')).lower()}",
                        status=status, amount=amount, currency=currency,
                        occurred_at=from_iso(order.get("updated_at")))


def gateway_error(exc: ApiError | httpx.HTTPError) -> GatewayError:
    """An SDK or transport failure as a message staff can act on, with Square's own words."""
    if isinstance(exc, httpx.TimeoutException):
        return GatewayError("Square did not answer in time.", code="timeout", retryable=True)
    if isinstance(exc, httpx.HTTPError):
        return GatewayError("Square could not be reached.", code="unreachable", retryable=True)
    status, body = exc.status_code, exc.body
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, list) or not errors:
        return GatewayError(f"Square answered with an unreadable error (HTTP {status}).",
                            code="gateway_error", retryable=True, http_status=status)
    errors = [e for e in errors if isinstance(e, Mapping)]
    codes = {e.get("code") for e in errors}
    categories = {e.get("category") for e in errors}
    words = "; ".join(str(e.get("detail") or e.get("code") or "error") for e in errors)
    if codes & CURRENCY_CODES or any("currency" in str(e.get("field")) for e in errors):
        # Not retryable and not the patient's doing: the link's currency is not the seller's.
        return GatewayError(f"Square: {words} Square takes payments only in the currency of "
                            "the seller's location.", code="not_configured",
                            http_status=status, raw=body)
    if "AUTHENTICATION_ERROR" in categories or status == 401:
        code = "bad_credentials"
    elif "RATE_LIMIT_ERROR" in categories or status == 429:
        code = "rate_limited"
    elif "NOT_FOUND" in codes or status == 404:
        code = "not_found"
    else:
        code = "gateway_error"
    retryable = status is None or status >= 500 or status == 429
    return GatewayError(f"Square: {words}", code=code, retryable=retryable, http_status=status,
                        raw=body)


# ---- signatures ---------------------------------------------------------------------------------

def signature(signature_key: str, notification_url: str, body: bytes) -> str:
    """`x-square-hmacsha256-signature`: base64 HMAC-SHA256 of URL + body (for tests and tools)."""
    digest = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def verify_signature(signature_key: str, notification_url: str, raw_body: bytes,
                     header: str | None) -> None:
    """Square signs the exact notification URL of the subscription followed by the raw body."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not notification_url:
        raise GatewayError("Square: the portal's webhook URL is unknown (PORTAL_BASE_URL)",
                           code="not_configured")
    try:
        body = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    if not sdk_verify_signature(request_body=body, signature_header=header,
                                signature_key=signature_key, notification_url=notification_url):
        raise SignatureError("Square webhook signature mismatch")
