"""Razorpay: Payment Links, signed returns and webhooks, status and refunds (the `razorpay` SDK).

Wire facts: ../shared/reference/gateways.md §2. Our payment reference is the link's
`reference_id` and sits in the `notes` of the link and every refund.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import razorpay
import requests

from .base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    EventStatus,
    Gateway,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    RefundRequest,
    RefundResult,
    SignatureError,
    lookup_status,
    unix_time,
)

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


def return_message(params: Mapping[str, str]) -> str:
    """What Razorpay signs on the payer's redirect back to us."""
    return "|".join((params.get("razorpay_payment_link_id", ""),
                     params.get("razorpay_payment_link_reference_id", ""),
                     params.get("razorpay_payment_link_status", ""),
                     params.get("razorpay_payment_id", "")))


def _entity(payload: Mapping, name: str) -> dict:
    return ((payload.get(name) or {}).get("entity")) or {}


def _load_event(raw_body: bytes) -> dict:
    try:
        body = json.loads(raw_body)
        body["event"], body["payload"].items  # noqa: B018  the shape every event has
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise MalformedPayload("not a Razorpay event") from None
    return body


def event_reference(body: Mapping) -> str:
    payload = body["payload"]
    link = _entity(payload, "payment_link")
    if link.get("reference_id"):
        return link["reference_id"]
    for name in ("refund", "payment"):
        notes = _entity(payload, name).get("notes") or {}
        if isinstance(notes, Mapping) and notes.get("reference"):
            return notes["reference"]
    return ""


def dedupe_id(headers: Mapping[str, str], body: Mapping) -> str:
    event_id = headers.get(EVENT_ID_HEADER)
    if event_id:
        return event_id
    # Older deliveries without the header: the event, its entity and its state identify it.
    payload = body["payload"]
    entity = next((_entity(payload, n) for n in ("refund", "payment", "payment_link")
                   if _entity(payload, n)), {})
    seed = f"{body['event']}|{entity.get('id')}|{entity.get('status')}"
    return "derived_" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def payment_details(payment: Mapping) -> dict[str, Any]:
    card = payment.get("card") or {}
    return {"transaction_id": payment.get("id"), "method": payment.get("method"),
            "card_brand": card.get("network"), "card_last4": card.get("last4")}


def parse_event(body: Mapping, event_id: str) -> GatewayEvent:
    kind = body["event"]
    payload = body["payload"]
    common = {"dedupe_id": event_id, "type": kind, "reference": event_reference(body),
              "occurred_at": unix_time(body.get("created_at") or 0),
              "raw": dict(body)}
    payment = _entity(payload, "payment")
    if kind in LINK_EVENTS:
        link = _entity(payload, "payment_link")
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
        refund = _entity(payload, "refund")
        return GatewayEvent(**common, status=REFUND_EVENTS[kind], amount=refund.get("amount"),
                            currency=refund.get("currency"),
                            transaction_id=refund.get("payment_id"), refund_id=refund.get("id"),
                            refund_reference=(refund.get("notes") or {}).get("refund_reference"))
    raise IgnoredEvent(f"Razorpay event {kind} is not used")


class _TimeoutSession(requests.Session):
    """The SDK takes no timeout: every request it makes gets ours."""

    def __init__(self, timeout: tuple[float, float]):
        super().__init__()
        self.timeout = timeout

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


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


class RazorpayGateway(Gateway):
    name = "razorpay"
    display_name = "Razorpay"
    credential_fields = (
        CredentialField("key_id", "Key ID", help="Starts with rzp_test_ or rzp_live_."),
        CredentialField("key_secret", "Key secret", secret=True),
        CredentialField("webhook_secret", "Webhook secret", secret=True,
                        help="The secret you typed when adding the webhook in Razorpay."),
    )
    # Saved cards at Razorpay need its own Checkout with customer tokens; Payment Links
    # cannot save or charge them, so the portal does not offer it for Razorpay.
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND,
                              Capability.CANCEL_CHECKOUT, Capability.SIGNED_RETURN})
    webhook_events = HANDLED_EVENTS
    default_api_base = "https://api.razorpay.com"

    def __init__(self, credentials, *, api_base=None, timeout=(5.0, 20.0), webhook_url=""):
        super().__init__(credentials, api_base=api_base, timeout=timeout,
                         webhook_url=webhook_url)
        self.client = razorpay.Client(
            session=_TimeoutSession(timeout),
            auth=(self.credentials["key_id"], self.credentials["key_secret"]),
            base_url=self.api_base)

    @classmethod
    def extract_reference(cls, headers, raw_body):
        body = _load_event(raw_body)
        if body["event"] not in HANDLED_EVENTS:
            raise IgnoredEvent(f"Razorpay event {body['event']} is not used")
        return event_reference(body)

    @classmethod
    def extract_transaction_id(cls, headers, raw_body):
        payload = _load_event(raw_body)["payload"]
        return _entity(payload, "payment").get("id") or _entity(payload, "refund").get(
            "payment_id")

    def _call(self, fn, *args, **kwargs) -> dict:
        try:
            return fn(*args, **kwargs)
        except (razorpay.errors.BadRequestError, razorpay.errors.ServerError,
                razorpay.errors.GatewayError, requests.RequestException, ValueError) as exc:
            raise gateway_error(exc) from None

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        try:
            link = self._call(self.client.payment_link.create,
                              payment_link_params(request, datetime.now(UTC)))
        except GatewayError as exc:
            # A retry after a lost answer: reference_id is unique, so find the link made then.
            if "reference_id" not in exc.message:
                raise
            link = self._find_link(request.reference)
            if link is None:
                raise
        return Checkout(checkout_id=link["id"], redirect_url=link["short_url"], raw=link)

    def _find_link(self, reference: str) -> dict | None:
        found = self._call(self.client.payment_link.all, {"reference_id": reference})
        links = found.get("payment_links") or []
        return links[0] if links else None

    def parse_webhook(self, headers, raw_body):
        signature = headers.get(SIGNATURE_HEADER)
        if not signature:
            raise SignatureError("missing X-Razorpay-Signature header")
        try:
            self.client.utility.verify_webhook_signature(
                raw_body.decode("utf-8"), signature, self.credentials["webhook_secret"])
        except UnicodeDecodeError:
            raise SignatureError("body is not UTF-8") from None
        except razorpay.errors.SignatureVerificationError:
            raise SignatureError("Razorpay webhook signature mismatch") from None
        body = _load_event(raw_body)
        return parse_event(body, dedupe_id(headers, body))

    def verify_return(self, params):
        """Checks `razorpay_signature`, then reads the link's amount from Razorpay itself."""
        signature = params.get("razorpay_signature")
        if not signature:
            raise SignatureError("the return carries no razorpay_signature")
        try:
            self.client.utility.verify_signature(return_message(params), signature,
                                                 self.credentials["key_secret"])
        except razorpay.errors.SignatureVerificationError:
            raise SignatureError("Razorpay return signature mismatch") from None
        return self.fetch_status(params.get("razorpay_payment_link_reference_id", ""),
                                 params.get("razorpay_payment_link_id"))

    def fetch_status(self, reference, checkout_id=None):
        link = (self._call(self.client.payment_link.fetch, checkout_id) if checkout_id
                else self._find_link(reference))
        if link is None:
            raise GatewayError("Razorpay has no payment link for this payment", code="not_found")
        status = lookup_status(LINK_STATUS, link.get("status"))
        details: dict[str, Any] = {}
        captured = [p for p in link.get("payments") or [] if p.get("status") == "captured"]
        if status == EventStatus.SUCCEEDED and captured:
            payment = self._call(self.client.payment.fetch, captured[-1]["payment_id"],
                                 {"expand[]": "card"})
            details = payment_details(payment)
        return GatewayEvent(
            dedupe_id=None, type=f"payment_link.{link.get('status')}",
            reference=link.get("reference_id") or reference, status=status,
            amount=link.get("amount_paid") if status == EventStatus.SUCCEEDED
            else link.get("amount"), currency=link.get("currency"),
            checkout_id=link.get("id"), raw=link, **details)

    def refund(self, request: RefundRequest) -> RefundResult:
        if not request.transaction_id:
            raise GatewayError("Razorpay: this payment has no payment id to refund",
                               code="no_transaction")
        refund_reference = request.idempotency_key.removeprefix("refund-")
        data = {"amount": request.amount, "speed": "normal", "receipt": refund_reference[:40],
                "notes": {"reference": request.reference, "refund_reference": refund_reference,
                          "reason": request.reason[:250]}}
        refund = self._call(self.client.payment.refund, request.transaction_id, data,
                            headers={"X-Refund-Idempotency": request.idempotency_key[:40]})
        return RefundResult(refund_id=refund["id"],
                            status=lookup_status(REFUND_STATUS, refund["status"]),
                            amount=int(refund["amount"]), raw=refund)

    def cancel_checkout(self, reference, checkout_id):
        if not checkout_id:
            return
        link = self._call(self.client.payment_link.fetch, checkout_id)
        if link.get("status") in ("created", "partially_paid"):
            self._call(self.client.payment_link.cancel, checkout_id)

    def test_connection(self) -> str:
        self._call(self.client.payment_link.all, {"count": 1})
        mode = "live" if self.credentials["key_id"].startswith("rzp_live_") else "test"
        return f"Connected to Razorpay ({mode} mode)."
