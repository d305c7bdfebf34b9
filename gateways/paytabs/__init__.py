"""PayTabs (PT2): Hosted Payment Page, signed return and IPN, query, refunds, saved cards.

Plain HTTP: PayTabs publishes no Python SDK. The wire format lives in `wire.py`; facts in
docs/gateways/paytabs.md. Our payment reference is the `cart_id` of the sale; a
refund's `cart_id` is our refund reference and its `previous_tran_ref` names the sale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    EventStatus,
    Gateway,
    GatewayError,
    GatewayEvent,
    RefundRequest,
    RefundResult,
    SavedMethod,
    SavedMethodCharge,
    SignatureError,
    header,
)
from . import wire
from .wire import REGION_HOSTS, REGION_NAMES

__all__ = ["PayTabsGateway"]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class PayTabsGateway(Gateway):
    name = "paytabs"
    display_name = "PayTabs"
    credential_fields = (
        CredentialField("profile_id", "Profile ID",
                        help="Digits only. Test and live profiles have different IDs."),
        CredentialField("server_key", "Server key", secret=True,
                        help="Developers → Key management: the server key, not the client key."),
        CredentialField("region", "Region", choices=tuple(REGION_HOSTS),
                        help="Where the PayTabs account lives: "
                             + ", ".join(f"{code} = {name}" for code, name
                                         in REGION_NAMES.items()) + "."),
    )
    # No CANCEL_CHECKOUT: a Hosted Payment Page cannot be closed through the API.
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND,
                              Capability.SIGNED_RETURN, Capability.SAVED_METHODS})
    # Each payment names our endpoint as its `callback`; nothing to subscribe to.
    webhook_events = ()

    @classmethod
    def api_base_for(cls, credentials: Mapping[str, str]) -> str:
        return REGION_HOSTS.get(str(credentials.get("region") or "").upper(), "")

    def configure(self) -> None:
        if not self.api_base:
            raise GatewayError("Choose the PayTabs region of the account.", code="not_configured")
        profile_id = self.credentials["profile_id"].strip()
        if not profile_id.isdigit():
            raise GatewayError("The PayTabs profile ID is a number.", code="not_configured")
        self.profile_id = int(profile_id)
        self.server_key = self.credentials["server_key"]

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        return wire.ipn_reference(wire.load_ipn(raw_body))

    @classmethod
    def extract_transaction_id(cls, headers: Mapping[str, str], raw_body: bytes) -> str | None:
        return str(wire.load_ipn(raw_body).get("previous_tran_ref") or "") or None

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        response = self.http.request(
            "POST", path, data=wire.encode_body(body),
            headers={"authorization": self.server_key, "Content-Type": "application/json"})
        try:
            answer = wire.load_json(response.content)
        except GatewayError:
            raise GatewayError(
                f"PayTabs answered with an unreadable response (HTTP {response.status_code}).",
                code="gateway_error", retryable=True, http_status=response.status_code) from None
        failure = wire.api_failure(response.status_code, answer)
        if failure is not None:
            raise failure
        return answer

    def _transaction(self, tran_ref: str) -> dict[str, Any]:
        answer = self._post("/payment/query", {"profile_id": self.profile_id,
                                               "tran_ref": tran_ref})
        if not isinstance(answer, dict) or answer.get("tran_ref") != tran_ref:
            raise GatewayError("PayTabs answered the query with another transaction.",
                               code="gateway_error", raw=answer)
        return answer

    def _cart(self, cart_id: str) -> list[dict[str, Any]]:
        answer = self._post("/payment/query", {"profile_id": self.profile_id,
                                               "cart_id": cart_id})
        if isinstance(answer, dict):
            answer = [answer] if answer.get("tran_ref") else []
        if not isinstance(answer, list):
            raise GatewayError("PayTabs answered the query with something else.",
                               code="gateway_error", raw=answer)
        return [t for t in answer if isinstance(t, dict) and t.get("cart_id") == cart_id]

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        body = wire.payment_request(self.profile_id, request,
                                    self.webhook_url or request.notify_url)
        page = self._post("/payment/request", body)
        if not isinstance(page, dict) or not page.get("redirect_url") or not page.get("tran_ref"):
            raise GatewayError("PayTabs did not return a payment page.", code="gateway_error",
                               raw=page)
        # The page's tran_ref is the sale's: refunds and queries name it (as PayTabs' Odoo does).
        return Checkout(checkout_id=page["tran_ref"], redirect_url=page["redirect_url"], raw=page)

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        wire.verify_ipn_signature(self.server_key, raw_body,
                                  header(headers, wire.SIGNATURE_HEADER))
        body = wire.load_ipn(raw_body)
        profile = body.get("profile_id", body.get("profileId"))
        if profile is not None and str(profile) != str(self.profile_id):
            raise SignatureError("the IPN is for another PayTabs profile")
        return wire.transaction_event(body, dedupe=True)

    def verify_return(self, params: Mapping[str, str]) -> GatewayEvent | None:
        """Checks the signed form PayTabs posts back, then reads the sale (the form carries
        no amount) from PayTabs itself. A return without PayTabs' fields is not signed:
        the portal then polls."""
        if "signature" not in params and "tranRef" not in params:
            return None
        wire.verify_return_signature(self.server_key, params)
        event = wire.status_event(self._transaction(str(params.get("tranRef") or "")))
        if event.reference != params.get("cartId"):
            raise GatewayError("PayTabs: the return and the transaction name different carts.",
                               code="mismatch")
        return event

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        """Every attempt on our cart; an authorised one wins, then one still pending."""
        events = [wire.status_event(t) for t in self._cart(reference)
                  if wire.tran_kind(t) in wire.PAYMENT_TYPES]
        if not events and checkout_id:
            events = [wire.status_event(self._transaction(checkout_id))]
        event = wire.pick_sale(events)
        if event is None:  # the page was made but nothing was tried on it yet
            return GatewayEvent(dedupe_id=None, type="sale.none", reference=reference,
                                status=EventStatus.PENDING, amount=None, currency=None,
                                transaction_id=checkout_id)
        return event

    def refund(self, request: RefundRequest) -> RefundResult:
        if not request.transaction_id:
            raise GatewayError("PayTabs: this payment has no transaction to refund.",
                               code="no_transaction")
        body = wire.refund_request(self.profile_id, request)
        try:
            answer = self._post("/payment/request", body)
        except GatewayError as exc:
            if exc.code != "duplicate":
                raise
            # A retry after a lost answer: the first request went through, so read it back.
            answer = next((t for t in self._cart(body["cart_id"])
                           if wire.tran_kind(t) == "refund"
                           and t.get("previous_tran_ref") == request.transaction_id), None)
            if answer is None:
                raise
        if not isinstance(answer, dict) or wire.tran_kind(answer) != "refund":
            raise GatewayError("PayTabs did not confirm the refund.", code="gateway_error",
                               raw=answer)
        event = wire.transaction_event(answer, dedupe=False)
        return RefundResult(refund_id=answer["tran_ref"], status=event.status,
                            amount=event.amount if event.amount is not None else request.amount,
                            raw=answer)

    def saved_method_from_payment(self, transaction_id: str) -> SavedMethod | None:
        sale = self._transaction(transaction_id)
        if not sale.get("token"):
            return None
        info = sale.get("payment_info") or {}
        details = wire.card_details(sale)
        # PayTabs has no customer object: a token is charged together with the tran_ref of
        # the sale that created it, which is kept where other gateways keep their customer id.
        return SavedMethod(gateway_customer_id=transaction_id, token=str(sale["token"]),
                           brand=details["card_brand"], last4=details["card_last4"],
                           exp_month=_int_or_none(info.get("expiryMonth")),
                           exp_year=_int_or_none(info.get("expiryYear")))

    def charge_saved_method(self, charge: SavedMethodCharge) -> GatewayEvent:
        """A recurring sale on the token, answered at once with its result."""
        answer = self._post("/payment/request",
                            wire.recurring_request(self.profile_id, charge))
        if not isinstance(answer, dict) or "payment_result" not in answer:
            raise GatewayError("PayTabs would need the patient to confirm this card, so it "
                               "cannot be charged now.", code="declined", raw=answer)
        event = wire.transaction_event(answer, dedupe=False)
        if event.reference and event.reference != charge.reference:
            raise GatewayError("PayTabs answered the charge with another cart.",
                               code="mismatch", raw=answer)
        return replace(event, reference=charge.reference)

    def delete_saved_method(self, method: SavedMethod) -> None:
        self._post("/payment/token/delete", {"profile_id": self.profile_id,
                                             "token": method.token})

    def test_connection(self) -> str:
        """A query for a cart that does not exist: only a key PayTabs accepts gets an answer."""
        try:
            self._cart("portal-connection-test")
        except GatewayError as exc:
            # PayTabs checked the key and then refused the query itself: the keys work.
            accepted = isinstance(exc.raw, dict) and "code" in exc.raw \
                and exc.code != "bad_credentials" and not exc.retryable
            if not accepted:
                raise
        region = str(self.credentials.get("region") or "").upper()
        return f"Connected to PayTabs ({REGION_NAMES.get(region, self.api_base)})."
