"""PhonePe v2 Standard Checkout on the wire: hosts, request bodies, answers, callback check.

Pure functions only; the class in `gateways.phonepe` ties them to HTTP.
Protocol notes: docs/gateways/phonepe.md, checked against PhonePe/phonepe-pg-sdk-python.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    constant_time_equal,
    json_object,
    lookup_status,
)

# ---- constants ----------------------------------------------------------------------------------

# Production splits OAuth (identity-manager) from the PG APIs; the sandbox serves both from
# one base, as does any PORTAL_PHONEPE_API_BASE override (a fake, a proxy, the sandbox).
PRODUCTION_PG_BASE = "https://api.phonepe.com/apis/pg"
PRODUCTION_OAUTH_BASE = "https://api.phonepe.com/apis/identity-manager"
SANDBOX_BASE = "https://api-preprod.phonepe.com/apis/pg-sandbox"

TOKEN_PATH = "/v1/oauth/token"  # nosec B105  # a URL path, not a password
PAY_PATH = "/checkout/v2/pay"
ORDER_STATUS_PATH = "/checkout/v2/order/{merchant_order_id}/status"
REFUND_PATH = "/payments/v2/refund"
REFUND_STATUS_PATH = "/payments/v2/refund/{merchant_refund_id}/status"

CURRENCY = "INR"  # Standard Checkout takes rupees only, in paise
MIN_AMOUNT = 100  # paise, for payments and refunds
# expireAfter for Standard Checkout: 300..3600 seconds (merchant checklist).
MIN_EXPIRE_AFTER = 300
MAX_EXPIRE_AFTER = 3600
MERCHANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
# Refresh a token this long before it expires (PhonePe's checklist: 3-5 minutes).
TOKEN_REFRESH_MARGIN = 300

ORDER_STATE = {
    "PENDING": EventStatus.PENDING,
    "COMPLETED": EventStatus.SUCCEEDED,
    "FAILED": EventStatus.FAILED,
    "EXPIRED": EventStatus.FAILED,  # seen in the SDK's callback samples
}
REFUND_STATE = {
    "PENDING": EventStatus.PENDING,
    "CONFIRMED": EventStatus.PENDING,  # accepted by PhonePe, money not yet back
    "COMPLETED": EventStatus.REFUND_SUCCEEDED,
    "FAILED": EventStatus.REFUND_FAILED,
}
# `pg.order.*` is what other PhonePe flows send for the same facts.
ORDER_EVENTS = ("checkout.order.completed", "checkout.order.failed",
                "pg.order.completed", "pg.order.failed")
REFUND_EVENTS = ("pg.refund.accepted", "pg.refund.completed", "pg.refund.failed")
SUBSCRIBE_TO = ("checkout.order.completed", "checkout.order.failed",
                "pg.refund.completed", "pg.refund.failed")

METHOD_BY_MODE = {"UPI_QR": "upi", "UPI_INTENT": "upi", "UPI_COLLECT": "upi",
                  "CARD": "card", "CREDIT_CARD": "card", "DEBIT_CARD": "card",
                  "NET_BANKING": "netbanking", "WALLET": "wallet"}


def _polling_schedule(first: int, steps: tuple[tuple[int, int], ...], every: int,
                      until: int) -> tuple[int, ...]:
    delays, at = [first], first
    for step, span in steps:
        for _ in range(span // step):
            at += step
            delays.append(at)
    while at + every <= until:
        at += every
        delays.append(at)
    return tuple(delays)


# PhonePe's check-status schedule: first at 20-25 s, then every 3 s for 30 s, 6 s for 60 s,
# 10 s for 60 s, 30 s for 60 s, then every minute until the order can no longer change (its
# expireAfter is at most an hour), plus ten minutes for late callbacks.
STATUS_CHECK_CUTOFF = MAX_EXPIRE_AFTER + 600
STATUS_CHECK_DELAYS = _polling_schedule(20, ((3, 30), (6, 60), (10, 60), (30, 60)), 60,
                                        STATUS_CHECK_CUTOFF)


# ---- wire format: hosts and tokens --------------------------------------------------------------

def oauth_base(api_base: str) -> str:
    return PRODUCTION_OAUTH_BASE if api_base == PRODUCTION_PG_BASE else api_base


def host_name(api_base: str) -> str:
    if api_base == PRODUCTION_PG_BASE:
        return "production"
    if api_base == SANDBOX_BASE:
        return "sandbox"
    return api_base


def token_form(credentials: Mapping[str, str]) -> dict[str, str]:
    """The `POST /v1/oauth/token` form (client-credentials grant)."""
    return {"client_id": credentials["client_id"],
            "client_version": credentials["client_version"],
            "client_secret": credentials["client_secret"],
            "grant_type": "client_credentials"}


@dataclass(frozen=True)
class AccessToken:
    header: str  # the whole Authorization value: "O-Bearer <token>"
    refresh_at: float  # our clock, epoch seconds


def parse_token(body: Any, now: float) -> AccessToken:
    """A token answer; its lifetime is read from PhonePe's own issued_at/expires_at."""
    try:
        access_token = str(body["access_token"])
        token_type = str(body.get("token_type") or "O-Bearer")
        issued, expires = body.get("issued_at"), body.get("expires_at")
        lifetime = (int(expires) - int(issued) if issued and expires else 0) \
            or int(body.get("expires_in") or 0)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise GatewayError("PhonePe answered the token request with something unreadable.",
                           code="gateway_error", retryable=True) from None
    if not access_token:
        raise GatewayError("PhonePe issued an empty token.", code="gateway_error", retryable=True)
    # Clock skew between us and PhonePe does not matter: only the lifetime is used.
    margin = min(TOKEN_REFRESH_MARGIN, max(lifetime, 0) / 2)
    return AccessToken(f"{token_type} {access_token}", now + lifetime - margin)


# ---- wire format: requests ----------------------------------------------------------------------

def expire_after(link_expires_at: datetime, now: datetime) -> int:
    """Seconds until the link expires, within what Standard Checkout accepts."""
    seconds = int((link_expires_at - now).total_seconds())
    return max(MIN_EXPIRE_AFTER, min(MAX_EXPIRE_AFTER, seconds))


def check_currency(currency: str) -> None:
    if currency != CURRENCY:
        raise GatewayError(f"PhonePe takes payments in INR only; this bill is in {currency}.",
                           code="unsupported_currency")


def check_payable(amount: int, currency: str) -> None:
    check_currency(currency)
    if amount < MIN_AMOUNT:
        raise GatewayError("PhonePe takes payments of ₹1.00 or more.", code="amount_too_small")


def check_merchant_id(value: str, what: str) -> None:
    if not MERCHANT_ID_PATTERN.match(value):
        raise GatewayError(f"PhonePe: {what} {value!r} is not 1-63 letters, digits, _ or -.",
                           code="gateway_error")


def pay_request(request: CheckoutRequest, now: datetime) -> dict[str, Any]:
    """The `POST /checkout/v2/pay` body for one payment of ours."""
    check_payable(request.amount, request.currency)
    check_merchant_id(request.reference, "merchantOrderId")
    return {
        "merchantOrderId": request.reference,
        "amount": request.amount,
        "expireAfter": expire_after(request.expires_at, now),
        "metaInfo": {"udf1": request.bill_reference[:256]},
        "paymentFlow": {
            "type": "PG_CHECKOUT",
            "message": f"{request.merchant_name}: bill {request.bill_reference}"[:256],
            "merchantUrls": {"redirectUrl": request.return_url},
        },
    }


def refund_request(merchant_refund_id: str, reference: str, amount: int) -> dict[str, Any]:
    """The `POST /payments/v2/refund` body; a partial amount is allowed."""
    check_merchant_id(merchant_refund_id, "merchantRefundId")
    if amount < MIN_AMOUNT:
        raise GatewayError("PhonePe refunds ₹1.00 or more.", code="amount_too_small")
    return {"merchantRefundId": merchant_refund_id, "originalMerchantOrderId": reference,
            "amount": amount}


# ---- wire format: answers -----------------------------------------------------------------------

def error_message(body: Any, status: int) -> tuple[str, str | None]:
    """(message, PhonePe's code) from an error answer of any shape."""
    if isinstance(body, Mapping):
        code = body.get("code") or body.get("errorCode") or body.get("error")
        message = body.get("message") or body.get("error_description") or code
        if message:
            return (f"{message} ({code})" if code and code != message else str(message),
                    str(code) if code else None)
    return f"HTTP {status}", None


def _ms(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None
    except (TypeError, ValueError, OverflowError):
        return None


def _amount(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _completed_attempt(order: Mapping[str, Any]) -> Mapping[str, Any]:
    attempts = [a for a in order.get("paymentDetails") or [] if isinstance(a, Mapping)]
    done = [a for a in attempts if a.get("state") == "COMPLETED"]
    return (done or attempts or [{}])[-1]


def order_event(order: Mapping[str, Any], reference: str, *,
                event: str | None = None) -> GatewayEvent:
    """An order-status answer as an event; `event` names the callback it confirms."""
    if not isinstance(order, Mapping):
        raise MalformedPayload("PhonePe order status is not an object")
    state = order.get("state")
    status = lookup_status(ORDER_STATE, state)
    attempt = _completed_attempt(order)
    raw = dict(order)
    if status == EventStatus.FAILED:
        raw["failure_message"] = " / ".join(
            str(v) for v in (order.get("errorCode"), order.get("detailedErrorCode")) if v) \
            or f"order {str(state).lower()} at PhonePe"
    mode = attempt.get("paymentMode")
    return GatewayEvent(
        dedupe_id=dedupe_id(event, reference, state) if event else None,
        type=event or f"order.{str(state).lower()}", reference=reference, status=status,
        amount=_amount(order.get("amount")), currency=CURRENCY,
        checkout_id=order.get("orderId"),
        transaction_id=attempt.get("transactionId") if status == EventStatus.SUCCEEDED else None,
        method=METHOD_BY_MODE.get(mode, str(mode).lower()) if mode else None,
        occurred_at=_ms(attempt.get("timestamp")), raw=raw)


def refund_event(refund: Mapping[str, Any], reference: str, merchant_refund_id: str, *,
                 event: str | None = None) -> GatewayEvent:
    """A refund-status answer as an event about payment `reference`."""
    if not isinstance(refund, Mapping):
        raise MalformedPayload("PhonePe refund status is not an object")
    state = refund.get("state")
    status = lookup_status(REFUND_STATE, state)
    raw = dict(refund)
    if status == EventStatus.REFUND_FAILED:
        raw["failure_message"] = str(refund.get("errorCode") or "refund failed at PhonePe")
    return GatewayEvent(
        dedupe_id=dedupe_id(event, merchant_refund_id, state) if event else None,
        type=event or f"refund.{str(state).lower()}", reference=reference, status=status,
        amount=_amount(refund.get("amount")), currency=CURRENCY,
        refund_id=refund.get("refundId"), refund_reference=merchant_refund_id,
        occurred_at=_ms(refund.get("timestamp")), raw=raw)


# ---- wire format: callbacks ---------------------------------------------------------------------

def dedupe_id(event: str, merchant_id: str, state: Any) -> str:
    """PhonePe callbacks carry no id: the event, our id and the (confirmed) state name one."""
    return f"phonepe:{event}:{merchant_id}:{state}"


@dataclass(frozen=True)
class Callback:
    event: str
    reference: str  # our payment: merchantOrderId, or originalMerchantOrderId for refunds
    merchant_refund_id: str | None
    body: Mapping[str, Any]


def parse_callback(raw_body: bytes) -> Callback:
    """What an (unverified) callback claims; IgnoredEvent for events the portal does not use."""
    body = json_object(raw_body, "a PhonePe callback")
    try:
        event, payload = body["event"], body["payload"]
        payload.get  # noqa: B018  the shape every callback has
    except (KeyError, TypeError, AttributeError):
        raise MalformedPayload("not a PhonePe callback") from None
    if event in ORDER_EVENTS:
        reference, refund_id = payload.get("merchantOrderId"), None
    elif event in REFUND_EVENTS:
        reference, refund_id = payload.get("originalMerchantOrderId"), \
            payload.get("merchantRefundId")
        if not isinstance(refund_id, str) or not refund_id:
            raise MalformedPayload("refund callback without merchantRefundId")
    else:
        raise IgnoredEvent(f"PhonePe event {event} is not used")
    if not isinstance(reference, str) or not reference:
        raise MalformedPayload("callback without our order id")
    return Callback(event, reference, refund_id, body)


# ---- signatures ---------------------------------------------------------------------------------

def callback_authorization(username: str, password: str) -> str:
    """The `Authorization` value PhonePe sends with every callback: SHA-256 hex of user:pass."""
    return hashlib.sha256(f"{username}:{password}".encode()).hexdigest()


def callback_is_authentic(header: str | None, username: str, password: str) -> bool:
    """A first gate only: the value is static, not a signature over the body."""
    if not header:
        return False
    return constant_time_equal(header.strip(), callback_authorization(username, password))
