"""Stripe: hosted Checkout Sessions, signed webhooks, refunds and saved cards (the `stripe` SDK).

The wire format lives in `wire.py`; protocol notes in docs/gateways/stripe.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import stripe
from stripe.params import PaymentIntentCreateParams

from ..base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    EventStatus,
    Gateway,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    RefundRequest,
    RefundResult,
    SavedMethod,
    SavedMethodCharge,
    header,
    lookup_status,
)
from . import wire


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
    webhook_events = wire.HANDLED_EVENTS
    default_api_base = "https://api.stripe.com"

    def configure(self) -> None:
        self.client = stripe.StripeClient(
            self.credentials["secret_key"], base_addresses={"api": self.api_base},
            http_client=stripe.RequestsClient(timeout=self.timeout), max_network_retries=0)

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        event = wire.load_event(raw_body)
        if event.get("type") not in wire.HANDLED_EVENTS:
            raise IgnoredEvent(f"Stripe event {event.get('type')} is not used")
        return wire.event_reference(event["data"]["object"]) or ""

    @classmethod
    def extract_transaction_id(cls, headers: Mapping[str, str], raw_body: bytes) -> str | None:
        obj = wire.load_event(raw_body)["data"]["object"]
        return wire.object_id(obj.get("payment_intent")) or (
            obj.get("id") if obj.get("object") == "payment_intent" else None)

    def _call(self, fn: Callable[..., stripe.StripeObject], *args: Any,
              **kwargs: Any) -> dict[str, Any]:
        try:
            return fn(*args, **kwargs).to_dict()
        except stripe.StripeError as exc:
            raise wire.gateway_error(exc) from None

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        session = self._call(self.client.v1.checkout.sessions.create,
                             params=wire.session_params(request, datetime.now(UTC)),
                             options={"idempotency_key": request.idempotency_key})
        return Checkout(checkout_id=session["id"], redirect_url=session["url"], raw=session)

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        wire.verify_signature(self.credentials["webhook_secret"], raw_body,
                         header(headers, wire.SIGNATURE_HEADER))
        return wire.parse_event(wire.load_event(raw_body))

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        if checkout_id:
            session = self._call(self.client.v1.checkout.sessions.retrieve, checkout_id,
                                 params={"expand": ["payment_intent.payment_method"]})
            return wire.session_status_event(session)
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
        if request.reason in wire.REFUND_REASONS:
            params["reason"] = request.reason
        refund = self._call(self.client.v1.refunds.create, params=params,
                            options={"idempotency_key": request.idempotency_key})
        return RefundResult(refund_id=refund["id"],
                            status=lookup_status(wire.REFUND_STATUS, refund["status"]),
                            amount=int(refund["amount"]), raw=refund)

    def cancel_checkout(self, reference: str, checkout_id: str | None) -> None:
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
        customer = wire.object_id(intent.get("customer")) or (
            wire.object_id(method.get("customer")) if method else None)
        if not method or not customer:
            return None
        card = method.get("card") or {}
        return SavedMethod(gateway_customer_id=customer, token=method["id"],
                           brand=card.get("brand"), last4=card.get("last4"),
                           exp_month=card.get("exp_month"), exp_year=card.get("exp_year"))

    def charge_saved_method(self, charge: SavedMethodCharge) -> GatewayEvent:
        """An off-session PaymentIntent on a saved card, confirmed at once."""
        params: PaymentIntentCreateParams = {
            "amount": charge.amount, "currency": charge.currency.lower(),
            "customer": charge.method.gateway_customer_id,
            "payment_method": charge.method.token, "off_session": True, "confirm": True,
            "metadata": {"reference": charge.reference}}
        try:
            intent = self.client.v1.payment_intents.create(
                params=params, options={"idempotency_key": charge.idempotency_key}).to_dict()
        except stripe.CardError as exc:
            # A decline still created a PaymentIntent: report it as a failed attempt.
            failed = wire.declined_intent(exc.json_body)
            return GatewayEvent(
                dedupe_id=None, type="payment_intent.payment_failed",
                reference=charge.reference, status=EventStatus.FAILED, amount=charge.amount,
                currency=charge.currency, transaction_id=failed.get("id"), method="card",
                raw={"failure_message": exc.user_message or "declined", "error": exc.json_body})
        except stripe.StripeError as exc:
            raise wire.gateway_error(exc) from None
        status = lookup_status(wire.PAYMENT_INTENT_STATUS, intent.get("status"))
        return wire.payment_intent_event(
            intent, {"dedupe_id": None, "type": f"payment_intent.{intent.get('status')}",
                     "reference": charge.reference,
                     "occurred_at": wire.from_unix(intent.get("created")),
                     "raw": intent}, status)

    def delete_saved_method(self, method: SavedMethod) -> None:
        try:
            self.client.v1.payment_methods.detach(method.token)
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_missing" and "not attached" not in str(exc.user_message):
                raise wire.gateway_error(exc) from None
        except stripe.StripeError as exc:
            raise wire.gateway_error(exc) from None

    def test_connection(self) -> str:
        self._call(self.client.v1.checkout.sessions.list, params={"limit": 1})
        mode = "live" if self.credentials["secret_key"].startswith(("sk_live_", "rk_live_")) \
            else "test"
        return f"Connected to Stripe ({mode} mode)."
