"""Stripe: hosted Checkout Sessions, signed webhooks, refunds and saved cards (the `stripe` SDK).

Wire facts: ../shared/reference/gateways.md §1. Checkout carries our reference as
`client_reference_id` and in the metadata of the session, the PaymentIntent and every refund,
so each webhook leads back to one of our payments without trusting anything unsigned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe

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
    SavedMethod,
    SavedMethodCharge,
    SignatureError,
    hmac_sha256_hex,
    lookup_status,
    unix_time,
)

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


def _id(value: Any) -> str | None:
    """An id from a field that may hold the id or the expanded object."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value or None


def _ts(value: Any) -> datetime | None:
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


def _load_event(raw_body: bytes) -> dict:
    try:
        event = json.loads(raw_body)
        event["data"]["object"]["object"]  # noqa: B018  the shape every event has
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise MalformedPayload("not a Stripe event") from None
    return event


def event_reference(obj: Mapping) -> str | None:
    metadata = obj.get("metadata") or {}
    return metadata.get("reference") or obj.get("client_reference_id")


def parse_event(event: Mapping) -> GatewayEvent:
    """Our view of one Stripe event; raises IgnoredEvent for events we do not act on."""
    kind = event.get("type")
    obj = event["data"]["object"]
    common = {"dedupe_id": event["id"], "type": kind, "reference": event_reference(obj) or "",
              "occurred_at": _ts(event.get("created")), "raw": dict(event)}
    if kind == "checkout.session.completed" or kind in SESSION_EVENTS:
        status = (lookup_status(SESSION_PAYMENT_STATUS, obj.get("payment_status"))
                  if kind == "checkout.session.completed" else SESSION_EVENTS[kind])
        return GatewayEvent(**common, status=status, amount=obj.get("amount_total"),
                            currency=(obj.get("currency") or "").upper() or None,
                            checkout_id=obj.get("id"),
                            transaction_id=_id(obj.get("payment_intent")), method="card")
    if kind in PAYMENT_INTENT_EVENTS:
        return payment_intent_event(obj, common, PAYMENT_INTENT_EVENTS[kind])
    if kind in REFUND_EVENTS:
        return refund_event(obj, common)
    if kind == "charge.refunded":
        # Cumulative: the refunds themselves arrive as refund.* events with our reference.
        return GatewayEvent(**common, status=EventStatus.REFUND_SUCCEEDED,
                            amount=obj.get("amount_refunded"),
                            currency=(obj.get("currency") or "").upper() or None,
                            transaction_id=_id(obj.get("payment_intent")))
    raise IgnoredEvent(f"Stripe event {kind} is not used")


def payment_intent_event(obj: Mapping, common: dict, status: EventStatus) -> GatewayEvent:
    error = obj.get("last_payment_error") or {}
    card = _card(obj.get("payment_method"))
    raw = dict(common["raw"])
    if error.get("message"):
        raw["failure_message"] = error["message"]
    return GatewayEvent(**{**common, "raw": raw}, status=status,
                        amount=obj.get("amount_received") or obj.get("amount"),
                        currency=(obj.get("currency") or "").upper() or None,
                        transaction_id=obj.get("id"), method="card",
                        card_brand=card.get("brand"), card_last4=card.get("last4"))


def refund_event(obj: Mapping, common: dict) -> GatewayEvent:
    metadata = obj.get("metadata") or {}
    return GatewayEvent(**common, status=lookup_status(REFUND_STATUS, obj.get("status")),
                        amount=obj.get("amount"),
                        currency=(obj.get("currency") or "").upper() or None,
                        transaction_id=_id(obj.get("payment_intent")), refund_id=obj.get("id"),
                        refund_reference=metadata.get("refund_reference"))


def _card(payment_method: Any) -> dict:
    if isinstance(payment_method, Mapping):
        return payment_method.get("card") or {}
    return {}


def session_status_event(session: Mapping) -> GatewayEvent:
    """A retrieved Checkout Session (with its PaymentIntent expanded) as an event."""
    if session.get("status") == "complete":
        status = lookup_status(SESSION_PAYMENT_STATUS, session.get("payment_status"))
    else:
        status = lookup_status(SESSION_STATUS, session.get("status"))
    intent = session.get("payment_intent")
    card = _card(intent.get("payment_method")) if isinstance(intent, Mapping) else {}
    return GatewayEvent(
        dedupe_id=None, type=f"checkout.session.{session.get('status')}",
        reference=event_reference(session) or "", status=status,
        amount=session.get("amount_total"),
        currency=(session.get("currency") or "").upper() or None,
        checkout_id=session.get("id"), transaction_id=_id(intent), method="card",
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


class StripeGateway(Gateway):
    name = "stripe"
    display_name = "Stripe"
    credential_fields = (
        CredentialField("secret_key", "Secret key", secret=True,
                        help="Starts with sk_test_ or sk_live_ (a restricted rk_ key works too)."),
        CredentialField("publishable_key", "Publishable key", required=False,
                        help="Starts with pk_test_ or pk_live_."),
        CredentialField("webhook_secret", "Webhook signing secret", secret=True,
                        help="Starts with whsec_; shown on the webhook endpoint in Stripe."),
    )
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND,
                              Capability.SAVED_METHODS, Capability.CANCEL_CHECKOUT})
    webhook_events = HANDLED_EVENTS
    default_api_base = "https://api.stripe.com"

    def __init__(self, credentials, *, api_base=None, timeout=(5.0, 20.0), webhook_url=""):
        super().__init__(credentials, api_base=api_base, timeout=timeout,
                         webhook_url=webhook_url)
        self.client = stripe.StripeClient(
            self.credentials["secret_key"], base_addresses={"api": self.api_base},
            http_client=stripe.RequestsClient(timeout=timeout), max_network_retries=0)

    @classmethod
    def extract_reference(cls, headers, raw_body):
        event = _load_event(raw_body)
        if event.get("type") not in HANDLED_EVENTS:
            raise IgnoredEvent(f"Stripe event {event.get('type')} is not used")
        return event_reference(event["data"]["object"]) or ""

    @classmethod
    def extract_transaction_id(cls, headers, raw_body):
        obj = _load_event(raw_body)["data"]["object"]
        return _id(obj.get("payment_intent")) or (
            obj.get("id") if obj.get("object") == "payment_intent" else None)

    def _call(self, fn, *args, **kwargs) -> dict:
        try:
            return fn(*args, **kwargs).to_dict()
        except stripe.StripeError as exc:
            raise gateway_error(exc) from None

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        session = self._call(self.client.v1.checkout.sessions.create,
                             params=session_params(request, datetime.now(UTC)),
                             options={"idempotency_key": request.idempotency_key})
        return Checkout(checkout_id=session["id"], redirect_url=session["url"], raw=session)

    def parse_webhook(self, headers, raw_body):
        verify_signature(self.credentials["webhook_secret"], raw_body,
                         headers.get(SIGNATURE_HEADER))
        return parse_event(_load_event(raw_body))

    def fetch_status(self, reference, checkout_id=None):
        if checkout_id:
            session = self._call(self.client.v1.checkout.sessions.retrieve, checkout_id,
                                 params={"expand": ["payment_intent.payment_method"]})
            return session_status_event(session)
        raise GatewayError("Stripe: no checkout session to ask about", code="no_checkout")

    def refund(self, request: RefundRequest) -> RefundResult:
        if not request.transaction_id:
            raise GatewayError("Stripe: this payment has no PaymentIntent to refund",
                               code="no_transaction")
        params: dict[str, Any] = {
            "payment_intent": request.transaction_id, "amount": request.amount,
            "metadata": {"reference": request.reference,
                         "refund_reference": request.idempotency_key.removeprefix("refund-")},
        }
        if request.reason in REFUND_REASONS:
            params["reason"] = request.reason
        refund = self._call(self.client.v1.refunds.create, params=params,
                            options={"idempotency_key": request.idempotency_key})
        return RefundResult(refund_id=refund["id"],
                            status=lookup_status(REFUND_STATUS, refund["status"]),
                            amount=int(refund["amount"]), raw=refund)

    def cancel_checkout(self, reference, checkout_id):
        if not checkout_id:
            return
        session = self._call(self.client.v1.checkout.sessions.retrieve, checkout_id)
        if session.get("status") == "open":
            self._call(self.client.v1.checkout.sessions.expire, checkout_id)

    def saved_method_from_payment(self, transaction_id: str) -> SavedMethod | None:
        intent = self._call(self.client.v1.payment_intents.retrieve, transaction_id,
                            params={"expand": ["payment_method"]})
        method = intent.get("payment_method")
        if isinstance(method, str):
            method = self._call(self.client.v1.payment_methods.retrieve, method)
        customer = _id(intent.get("customer")) or (_id(method.get("customer")) if method else None)
        if not method or not customer:
            return None
        card = method.get("card") or {}
        return SavedMethod(gateway_customer_id=customer, token=method["id"],
                           brand=card.get("brand"), last4=card.get("last4"),
                           exp_month=card.get("exp_month"), exp_year=card.get("exp_year"))

    def charge_saved_method(self, charge: SavedMethodCharge) -> GatewayEvent:
        """An off-session PaymentIntent on a saved card, confirmed at once."""
        params = {"amount": charge.amount, "currency": charge.currency.lower(),
                  "customer": charge.method.gateway_customer_id,
                  "payment_method": charge.method.token, "off_session": True, "confirm": True,
                  "metadata": {"reference": charge.reference}}
        try:
            intent = self.client.v1.payment_intents.create(
                params=params, options={"idempotency_key": charge.idempotency_key}).to_dict()
        except stripe.CardError as exc:
            # A decline still created a PaymentIntent: report it as a failed attempt.
            intent = (exc.json_body or {}).get("error", {}).get("payment_intent") or {}
            return GatewayEvent(
                dedupe_id=None, type="payment_intent.payment_failed",
                reference=charge.reference, status=EventStatus.FAILED, amount=charge.amount,
                currency=charge.currency, transaction_id=intent.get("id"), method="card",
                raw={"failure_message": exc.user_message or "declined", "error": exc.json_body})
        except stripe.StripeError as exc:
            raise gateway_error(exc) from None
        status = lookup_status(PAYMENT_INTENT_STATUS, intent.get("status"))
        return payment_intent_event(
            intent, {"dedupe_id": None, "type": f"payment_intent.{intent.get('status')}",
                     "reference": charge.reference, "occurred_at": _ts(intent.get("created")),
                     "raw": intent}, status)

    def delete_saved_method(self, method: SavedMethod) -> None:
        try:
            self.client.v1.payment_methods.detach(method.token)
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_missing" and "not attached" not in str(exc.user_message):
                raise gateway_error(exc) from None
        except stripe.StripeError as exc:
            raise gateway_error(exc) from None

    def test_connection(self) -> str:
        self._call(self.client.v1.checkout.sessions.list, params={"limit": 1})
        mode = "live" if self.credentials["secret_key"].startswith(("sk_live_", "rk_live_")) \
            else "test"
        return f"Connected to Stripe ({mode} mode)."


def sign(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value, as Stripe computes it (for tests and tools)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={hmac_sha256_hex(secret, str(timestamp).encode() + b'.' + payload)}"
