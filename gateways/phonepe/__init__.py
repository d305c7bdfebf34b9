"""PhonePe v2 Standard Checkout over plain HTTP (the SDK pins vulnerable `requests`).

OAuth client-credentials token (`O-Bearer`), cached per API base and client id until shortly
before it expires and fetched again once on a 401. The callback's `Authorization` header is a
static hash, so it only lets the callback in: every fact comes from PhonePe's status APIs.

Hosts: production (OAuth at identity-manager, the rest at /apis/pg) for keys marked live, the
sandbox (one base for every path) for keys marked test; `PORTAL_PHONEPE_API_BASE` (a proxy or a
fake) overrides both and then serves every path. Protocol notes: docs/gateways/phonepe.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from ..base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    Gateway,
    GatewayError,
    GatewayEvent,
    RefundRequest,
    RefundResult,
    SignatureError,
    header,
    lookup_status,
)
from ..http import HttpClient
from . import wire


class TokenCache:
    """Tokens shared by every gateway object in the process; one fetch at a time per key."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._tokens: dict[tuple[str, str], wire.AccessToken] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def header(self, key: tuple[str, str], fetch: Callable[[], wire.AccessToken], *,
               rejected: str | None = None) -> str:
        """A usable `Authorization` value; `rejected` is one PhonePe just answered 401 to."""
        token = self._usable(key, rejected)
        if token is not None:
            return token.header
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # the others wait for this fetch instead of making their own
            token = self._usable(key, rejected)
            if token is None:
                token = fetch()
                self._tokens[key] = token
            return token.header

    def _usable(self, key: tuple[str, str], rejected: str | None) -> wire.AccessToken | None:
        token = self._tokens.get(key)
        if token is None or token.header == rejected or self.clock() >= token.refresh_at:
            return None
        return token

    def refresh(self, key: tuple[str, str], fetch: Callable[[], wire.AccessToken]) -> str:
        """Always fetches: for checking credentials, whatever is cached."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            token = self._tokens[key] = fetch()
            return token.header

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


TOKENS = TokenCache()


def answer_error(response: requests.Response, what: str, hint: str = "") -> GatewayError:
    """A non-2xx PhonePe answer as a message staff can act on; `hint` follows a refusal."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if body is None:
        return GatewayError(f"PhonePe answered {what} with an unreadable error (HTTP {status}).",
                            code="gateway_error", retryable=True, http_status=status)
    message, phonepe_code = wire.error_message(body, status)
    if status in (401, 403) or (hint and status == 400):
        code = "bad_credentials"
        message = f"{message}. {hint}" if hint else message
    elif status == 404 or (phonepe_code or "").endswith("NOT_FOUND"):
        code = "not_found"
    elif status == 429:
        code = "rate_limited"
    else:
        code = "gateway_error"
    return GatewayError(f"PhonePe: {message}", code=code,
                        retryable=status >= 500 or status == 429, http_status=status, raw=body)


class PhonePeGateway(Gateway):
    name = "phonepe"
    display_name = "PhonePe"
    credential_fields = (
        CredentialField("client_id", "Client ID",
                        help="Sandbox keys: choose the Test mode below."),
        CredentialField("client_secret", "Client secret", secret=True),
        CredentialField("client_version", "Client version",
                        help="Issued with the client id (1 on the sandbox)."),
        CredentialField("callback_username", "Webhook username",
                        help="The username you set on the webhook in the PhonePe dashboard."),
        CredentialField("callback_password", "Webhook password", secret=True),
    )
    # No cancel API for Standard Checkout orders: they lapse after `expireAfter`.
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND})
    webhook_events = wire.SUBSCRIBE_TO
    webhook_calls_api = True
    default_api_base = wire.PRODUCTION_PG_BASE
    sandbox_api_base = wire.SANDBOX_BASE
    status_check_delays = wire.STATUS_CHECK_DELAYS
    status_check_cutoff = wire.STATUS_CHECK_CUTOFF
    return_check_delay = 20  # PhonePe: first status check 20-25 s after the return

    def configure(self) -> None:
        self.oauth = HttpClient(wire.oauth_base(self.api_base), timeout=self.timeout,
                                error_class=GatewayError)
        self._token_key = (self.api_base, self.credentials["client_id"])

    @classmethod
    def secret_values(cls, credentials: Mapping[str, str]) -> list[str]:
        """The callback hash is as good as the password: scrub it too."""
        values = super().secret_values(credentials)
        if credentials.get("callback_username") and credentials.get("callback_password"):
            values.append(wire.callback_authorization(credentials["callback_username"],
                                                      credentials["callback_password"]))
        return values

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        return wire.parse_callback(raw_body).reference

    # ---- HTTP ------------------------------------------------------------------------------

    def _fetch_token(self) -> wire.AccessToken:
        response = self.oauth.request("POST", wire.TOKEN_PATH,
                                      data=wire.token_form(self.credentials),
                                      headers={"Accept": "application/json"})
        if response.status_code >= 300:
            raise answer_error(response, "the token request",
                               f"Check the client id, secret and version for PhonePe "
                               f"{wire.host_name(self.api_base)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        return wire.parse_token(body, TOKENS.clock())

    def _call(self, method: str, path: str, what: str, *, body: Any = None,
              params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """An authorised PG call; a 401 fetches a fresh token and tries once more."""
        authorization = TOKENS.header(self._token_key, self._fetch_token)
        response = self._send(method, path, authorization, body, params)
        if response.status_code == 401:
            authorization = TOKENS.header(self._token_key, self._fetch_token,
                                          rejected=authorization)
            response = self._send(method, path, authorization, body, params)
        if response.status_code >= 300:
            raise answer_error(response, what)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise GatewayError(f"PhonePe answered {what} with something unreadable.",
                               code="gateway_error", retryable=True,
                               http_status=response.status_code)
        return answer

    def _send(self, method: str, path: str, authorization: str, body: Any,
              params: Mapping[str, str] | None) -> requests.Response:
        headers = {"Authorization": authorization, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.http.request(method, path, headers=headers, json=body, params=params)

    def _order(self, reference: str) -> dict[str, Any]:
        path = wire.ORDER_STATUS_PATH.format(merchant_order_id=quote(reference, safe=""))
        return self._call("GET", path, "the order status request", params={"details": "false"})

    def _refund_status(self, merchant_refund_id: str) -> dict[str, Any]:
        path = wire.REFUND_STATUS_PATH.format(
            merchant_refund_id=quote(merchant_refund_id, safe=""))
        return self._call("GET", path, "the refund status request")

    # ---- the interface ---------------------------------------------------------------------

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        body = wire.pay_request(request, datetime.now(UTC))  # refuses non-INR before any call
        order = self._call("POST", wire.PAY_PATH, "the payment request", body=body)
        if not order.get("redirectUrl") or not order.get("orderId"):
            raise GatewayError("PhonePe created no checkout page for this payment.",
                               code="gateway_error", retryable=True, raw=order)
        return Checkout(checkout_id=order["orderId"], redirect_url=order["redirectUrl"],
                        raw=order)

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        """Lets in a callback carrying our `Authorization` hash, then asks PhonePe what is true."""
        if not wire.callback_is_authentic(header(headers, "Authorization"),
                                          self.credentials["callback_username"],
                                          self.credentials["callback_password"]):
            raise SignatureError("PhonePe callback Authorization mismatch")
        callback = wire.parse_callback(raw_body)
        if callback.merchant_refund_id is None:
            event = wire.order_event(self._order(callback.reference), callback.reference,
                                     event=callback.event)
        else:
            refund = self._refund_status(callback.merchant_refund_id)
            if refund.get("originalMerchantOrderId") != callback.reference:
                raise SignatureError("the refund callback names another order than PhonePe")
            event = wire.refund_event(refund, callback.reference, callback.merchant_refund_id,
                                      event=callback.event)
        return replace(event, raw={**event.raw, "callback": dict(callback.body)})

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        return wire.order_event(self._order(reference), reference)

    def refund(self, request: RefundRequest) -> RefundResult:
        wire.check_currency(request.currency)
        merchant_refund_id = request.idempotency_key.removeprefix("refund-")
        body = wire.refund_request(merchant_refund_id, request.reference, request.amount)
        answer: dict[str, Any] | None
        try:
            answer = self._call("POST", wire.REFUND_PATH, "the refund request", body=body)
        except GatewayError as exc:
            # A retry after a lost answer: the first attempt may have made the refund.
            answer = self._earlier_refund(merchant_refund_id, body) if exc.http_status and \
                400 <= exc.http_status < 500 and exc.code != "bad_credentials" else None
            if answer is None:
                raise
        status = lookup_status(wire.REFUND_STATE, answer.get("state"))
        return RefundResult(refund_id=str(answer.get("refundId") or ""), status=status,
                            amount=int(answer.get("amount") or request.amount), raw=answer)

    def _earlier_refund(self, merchant_refund_id: str,
                        body: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            found = self._refund_status(merchant_refund_id)
        except GatewayError:
            return None
        same = (found.get("originalMerchantOrderId") == body["originalMerchantOrderId"]
                and found.get("amount") == body["amount"])
        return found if same and found.get("refundId") else None

    def test_connection(self) -> str:
        """A fresh token proves the client id, secret and version."""
        TOKENS.refresh(self._token_key, self._fetch_token)
        return f"Connected to PhonePe ({wire.host_name(self.api_base)}): token issued."


__all__ = ["TOKENS", "PhonePeGateway", "TokenCache"]
