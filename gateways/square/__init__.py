"""Square: Checkout API payment links, signed webhooks, order/payment status, refunds (`squareup`).

The wire format lives in `wire.py`; protocol notes in docs/gateways/square.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from square import Square
from square.core.api_error import ApiError

from ..base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    Gateway,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    RefundRequest,
    RefundResult,
    header,
    lookup_status,
)
from . import wire


class _BoundedClient(httpx.Client):
    """The SDK passes one float as every request's timeout: ours (connect, read) replaces it."""

    def __init__(self, timeout: tuple[float, float]):
        connect, read = timeout
        super().__init__(timeout=httpx.Timeout(read, connect=connect), follow_redirects=False)

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        kwargs["timeout"] = self.timeout
        return super().request(*args, **kwargs)


class SquareGateway(Gateway):
    name = "square"
    display_name = "Square"
    credential_fields = (
        CredentialField("access_token", "Access token", secret=True,
                        help="The application's production (or sandbox) access token."),
        CredentialField("location_id", "Location ID",
                        help="The location that takes the payments; its currency is the only "
                             "one Square accepts."),
        CredentialField("webhook_signature_key", "Webhook signature key", secret=True,
                        help="Shown on the webhook subscription whose notification URL is "
                             "exactly the webhook URL above."),
    )
    # Payment links cannot save cards, so the portal offers no saved methods for Square.
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND,
                              Capability.CANCEL_CHECKOUT})
    webhook_events = wire.HANDLED_EVENTS
    default_api_base = "https://connect.squareup.com"
    sandbox_api_base = "https://connect.squareupsandbox.com"

    def configure(self) -> None:
        self.client = Square(token=self.credentials["access_token"], base_url=self.api_base,
                             httpx_client=_BoundedClient(self.timeout))

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        event = wire.load_event(raw_body)
        if event["type"] not in wire.HANDLED_EVENTS:
            raise IgnoredEvent(f"Square event {event['type']} is not used")
        payment = wire.entity(event["data"]["object"], "payment")
        return wire.note_reference(payment.get("note"))

    @classmethod
    def extract_transaction_id(cls, headers: Mapping[str, str], raw_body: bytes) -> str | None:
        obj = wire.load_event(raw_body)["data"]["object"]
        return wire.entity(obj, "payment").get("id") or wire.entity(obj, "refund").get("payment_id")

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result = fn(*args, **kwargs, request_options=wire.NO_RETRIES)
        except (ApiError, httpx.HTTPError) as exc:
            raise wire.gateway_error(exc) from None
        answer: dict[str, Any] = result.model_dump(mode="json", exclude_none=True)
        return answer

    def _get(self, fn: Callable[..., Any], *args: Any, key: str,
             **kwargs: Any) -> dict[str, Any]:
        """The one object a call answers with, e.g. {"order": {...}} -> {...}."""
        answer = self._call(fn, *args, **kwargs)
        value = answer.get(key)
        if not isinstance(value, dict):
            raise GatewayError(f"Square answered without the {key.replace('_', ' ')}.",
                               retryable=True, raw=answer)
        return value

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        created = self._call(self.client.checkout.payment_links.create,
                             **wire.payment_link_body(request, self.credentials["location_id"]))
        link = created.get("payment_link") or {}
        if not link.get("id") or not link.get("url") or not link.get("order_id"):
            raise GatewayError("Square returned a payment link without an id, URL or order.",
                               retryable=True, raw=created)
        return Checkout(checkout_id=wire.checkout_id(link["id"], link["order_id"]),
                        redirect_url=link["url"], raw=created)

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        wire.verify_signature(self.credentials["webhook_signature_key"], self.webhook_url, raw_body,
                         header(headers, wire.SIGNATURE_HEADER))
        return wire.parse_event(wire.load_event(raw_body))

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        """The link's order and each payment tendered on it (Square's return is unsigned)."""
        link_id, order_id = wire.split_checkout_id(checkout_id)
        if not order_id and link_id:
            order_id = str(self._get(self.client.checkout.payment_links.get, link_id,
                                     key="payment_link").get("order_id") or "")
        if not order_id:
            raise GatewayError("Square: no payment link to ask about", code="no_checkout")
        order = self._get(self.client.orders.get, order_id, key="order")
        payment_ids = [t.get("payment_id") or t.get("id") for t in order.get("tenders") or []]
        payments = [self._get(self.client.payments.get, pid, key="payment")
                    for pid in payment_ids if pid]
        if any(p.get("order_id") != order_id for p in payments):
            raise GatewayError("Square: a payment on the order belongs to another order",
                               raw={"order": order})
        return wire.order_status_event(reference, order, payments)

    def refund(self, request: RefundRequest) -> RefundResult:
        if not request.transaction_id:
            raise GatewayError("Square: this payment has no payment id to refund",
                               code="no_transaction")
        refund = self._get(self.client.refunds.refund_payment, **wire.refund_body(request),
                           key="refund")
        amount, _currency = wire.money_of(refund)
        return RefundResult(refund_id=str(refund.get("id") or ""),
                            status=lookup_status(wire.REFUND_STATUS, refund.get("status")),
                            amount=int(amount if amount is not None else request.amount),
                            raw=refund)

    def cancel_checkout(self, reference: str, checkout_id: str | None) -> None:
        """Deletes the link (Square cancels its order) unless a payment is already on it."""
        link_id, order_id = wire.split_checkout_id(checkout_id)
        if not link_id:
            return
        if order_id and self._get(self.client.orders.get, order_id, key="order").get("tenders"):
            return  # paid meanwhile: the payment's own events settle it
        try:
            self._call(self.client.checkout.payment_links.delete, link_id)
        except GatewayError as exc:
            if exc.code != "not_found":  # deleted before: nothing left to close
                raise

    def test_connection(self) -> str:
        location_id = self.credentials["location_id"]
        location = self._get(self.client.locations.get, location_id, key="location")
        if location.get("status") != "ACTIVE":
            raise GatewayError(f"Square: location {location_id} is {location.get('status')}.",
                               code="not_configured")
        where = " sandbox" if "squareupsandbox" in self.api_base else ""
        return (f"Connected to Square{where}: location {location.get('name') or location_id}, "
                f"payments in {location.get('currency')}.")
