"""Razorpay: Payment Links, signed returns and webhooks, status and refunds (the `razorpay` SDK).

The wire format lives in `wire.py`; protocol notes in docs/gateways/razorpay.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import razorpay
import requests

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
    SignatureError,
    header,
    lookup_status,
)
from . import wire


class _TimeoutSession(requests.Session):
    """The SDK takes no timeout: every request it makes gets ours."""

    def __init__(self, timeout: tuple[float, float]):
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


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
    webhook_events = wire.HANDLED_EVENTS
    default_api_base = "https://api.razorpay.com"

    def configure(self) -> None:
        self.client = razorpay.Client(
            session=_TimeoutSession(self.timeout),
            auth=(self.credentials["key_id"], self.credentials["key_secret"]),
            base_url=self.api_base)

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        body = wire.load_event(raw_body)
        if body["event"] not in wire.HANDLED_EVENTS:
            raise IgnoredEvent(f"Razorpay event {body['event']} is not used")
        return wire.event_reference(body)

    @classmethod
    def extract_transaction_id(cls, headers: Mapping[str, str], raw_body: bytes) -> str | None:
        payload = wire.load_event(raw_body)["payload"]
        return wire.entity(payload, "payment").get("id") or wire.entity(payload, "refund").get(
            "payment_id")

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = fn(*args, **kwargs)
        except (razorpay.errors.BadRequestError, razorpay.errors.ServerError,
                razorpay.errors.GatewayError, requests.RequestException, ValueError) as exc:
            raise wire.gateway_error(exc) from None
        return answer

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        link: dict[str, Any] | None
        try:
            link = self._call(self.client.payment_link.create,
                              wire.payment_link_params(request, datetime.now(UTC)))
        except GatewayError as exc:
            # A retry after a lost answer: reference_id is unique, so find the link made then.
            if "reference_id" not in exc.message:
                raise
            link = self._find_link(request.reference)
            if link is None:
                raise
        return Checkout(checkout_id=link["id"], redirect_url=link["short_url"], raw=link)

    def _find_link(self, reference: str) -> dict[str, Any] | None:
        found = self._call(self.client.payment_link.all, {"reference_id": reference})
        links = found.get("payment_links") or []
        return links[0] if links else None

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        signature = header(headers, wire.SIGNATURE_HEADER)
        if not signature:
            raise SignatureError("missing X-Razorpay-Signature header")
        try:
            self.client.utility.verify_webhook_signature(
                raw_body.decode("utf-8"), signature, self.credentials["webhook_secret"])
        except UnicodeDecodeError:
            raise SignatureError("body is not UTF-8") from None
        except razorpay.errors.SignatureVerificationError:
            raise SignatureError("Razorpay webhook signature mismatch") from None
        body = wire.load_event(raw_body)
        return wire.parse_event(body, wire.dedupe_id(headers, body))

    def verify_return(self, params: Mapping[str, str]) -> GatewayEvent | None:
        """Checks `razorpay_signature`, then reads the link's amount from Razorpay itself."""
        signature = params.get("razorpay_signature")
        if not signature:
            raise SignatureError("the return carries no razorpay_signature")
        try:
            self.client.utility.verify_signature(wire.return_message(params), signature,
                                                 self.credentials["key_secret"])
        except razorpay.errors.SignatureVerificationError:
            raise SignatureError("Razorpay return signature mismatch") from None
        return self.fetch_status(params.get("razorpay_payment_link_reference_id", ""),
                                 params.get("razorpay_payment_link_id"))

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        link = (self._call(self.client.payment_link.fetch, checkout_id) if checkout_id
                else self._find_link(reference))
        if link is None:
            raise GatewayError("Razorpay has no payment link for this payment", code="not_found")
        status = lookup_status(wire.LINK_STATUS, link.get("status"))
        details: dict[str, Any] = {}
        captured = [p for p in link.get("payments") or [] if p.get("status") == "captured"]
        if status == EventStatus.SUCCEEDED and captured:
            payment = self._call(self.client.payment.fetch, captured[-1]["payment_id"],
                                 {"expand[]": "card"})
            details = wire.payment_details(payment)
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
                            status=lookup_status(wire.REFUND_STATUS, refund["status"]),
                            amount=int(refund["amount"]), raw=refund)

    def cancel_checkout(self, reference: str, checkout_id: str | None) -> None:
        if not checkout_id:
            return
        link = self._call(self.client.payment_link.fetch, checkout_id)
        if link.get("status") in ("created", "partially_paid"):
            self._call(self.client.payment_link.cancel, checkout_id)

    def test_connection(self) -> str:
        self._call(self.client.payment_link.all, {"count": 1})
        mode = "live" if self.credentials["key_id"].startswith("rzp_live_") else "test"
        return f"Connected to Razorpay ({mode} mode)."
