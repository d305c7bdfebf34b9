"""The sandbox gateway: offline, keyless, with a wire format as fixed as any real gateway's.

Hosted page: `{api_base}/checkout/<reference>?...&sig=...` (the portal serves it under /sandbox/).
Webhook: JSON `{"id", "type", "created", "data": {"reference", "amount", "currency"}}` with
`Sandbox-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, Stripe's scheme, 300 s tolerance.
Status and refund: a small JSON API under `{api_base}/api/`, signed the same way.
Notes: docs/gateways/sandbox.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from .base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    EventStatus,
    Gateway,
    GatewayError,
    GatewayEvent,
    MalformedPayload,
    RefundRequest,
    RefundResult,
    SignatureError,
    constant_time_equal,
    header,
    hmac_sha256_hex,
    json_object,
    lookup_status,
    unix_time,
    whole_amount,
)

# ---- constants ----------------------------------------------------------------------------------

SIGNATURE_HEADER = "Sandbox-Signature"
TOLERANCE_SECONDS = 300

EVENT_STATUS = {
    "payment.succeeded": EventStatus.SUCCEEDED,
    "payment.failed": EventStatus.FAILED,
}
CHARGE_STATUS = {
    "open": EventStatus.PENDING,
    "succeeded": EventStatus.SUCCEEDED,
    "failed": EventStatus.FAILED,
}
REFUND_STATUS = {"succeeded": EventStatus.REFUND_SUCCEEDED, "failed": EventStatus.REFUND_FAILED}

CHECKOUT_PARAMS = ("amount", "currency", "merchant", "bill", "description", "return_url",
                   "notify_url", "expires")


# ---- wire format --------------------------------------------------------------------------------

def build_event(event_id: str, succeeded: bool, reference: str, amount: int, currency: str,
                created: int | None = None) -> bytes:
    """The exact webhook body the sandbox sends for an outcome."""
    return json.dumps({
        "id": event_id,
        "type": "payment.succeeded" if succeeded else "payment.failed",
        "created": int(time.time()) if created is None else created,
        "data": {"reference": reference, "amount": amount, "currency": currency},
    }, separators=(",", ":")).encode()


def parse_event(body: Mapping[str, Any]) -> GatewayEvent:
    try:
        data = body["data"]
        kind = body["type"]
        event = GatewayEvent(
            dedupe_id=str(body["id"]),
            type=kind,
            reference=str(data["reference"]),
            status=lookup_status(EVENT_STATUS, kind),
            amount=whole_amount(data["amount"]),
            currency=str(data["currency"]).upper(),
            transaction_id=f"sbx_{body['id']}",
            method="sandbox",
            occurred_at=unix_time(body["created"]),
            raw=body,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedPayload(f"malformed sandbox event: {exc}") from None
    return event


# ---- signatures ---------------------------------------------------------------------------------

def sign(secret: str, payload: bytes, timestamp: int) -> str:
    """The `Sandbox-Signature` header value for `payload` at `timestamp`."""
    digest = hmac_sha256_hex(secret, str(timestamp).encode() + b"." + payload)
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, payload: bytes, header: str | None, *,
                     now: float | None = None, tolerance: int = TOLERANCE_SECONDS) -> int:
    """Check a `Sandbox-Signature` header; returns its timestamp or raises SignatureError."""
    if not header:
        raise SignatureError("missing signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("bad timestamp") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("incomplete signature header")
    expected = hmac_sha256_hex(secret, str(timestamp).encode() + b"." + payload)
    if not any(constant_time_equal(expected, c) for c in candidates):
        raise SignatureError("signature mismatch")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise SignatureError("timestamp outside tolerance")
    return timestamp


def checkout_query(secret: str, params: Mapping[str, str]) -> str:
    """The signed query string of a hosted checkout URL."""
    canonical = urlencode(sorted((k, params[k]) for k in CHECKOUT_PARAMS))
    return canonical + "&sig=" + hmac_sha256_hex(secret, canonical.encode())


def verify_checkout_query(secret: str, args: Mapping[str, str]) -> dict[str, str]:
    """The checkout parameters from a hosted-page URL, once its signature holds."""
    try:
        params = {k: args[k] for k in CHECKOUT_PARAMS}
    except KeyError:
        raise SignatureError("incomplete checkout URL") from None
    canonical = urlencode(sorted(params.items()))
    if not constant_time_equal(hmac_sha256_hex(secret, canonical.encode()), args.get("sig", "")):
        raise SignatureError("checkout URL signature mismatch")
    return params


# ---- the class ----------------------------------------------------------------------------------

class SandboxGateway(Gateway):
    name = "sandbox"
    display_name = "Sandbox (offline test gateway)"
    credential_fields = (
        CredentialField("webhook_secret", "Webhook signing secret", secret=True,
                        help="Signs the sandbox's webhooks, status answers and checkout URLs."),
    )
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND})
    webhook_events = ("payment.succeeded", "payment.failed")

    def configure(self) -> None:
        if not self.api_base:
            raise GatewayError("the sandbox needs its API base URL", code="not_configured")
        self.secret = self.credentials["webhook_secret"]

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        try:
            return str(json_object(raw_body, "a sandbox event")["data"]["reference"])
        except (KeyError, TypeError):
            raise MalformedPayload("no reference in event") from None

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        params = {
            "amount": str(request.amount),
            "currency": request.currency,
            "merchant": request.merchant_name,
            "bill": request.bill_reference,
            "description": request.description,
            "return_url": request.return_url,
            "notify_url": request.notify_url,
            "expires": str(int(request.expires_at.timestamp())),
        }
        url = f"{self.api_base}/checkout/{request.reference}?{checkout_query(self.secret, params)}"
        return Checkout(checkout_id=f"sbx_cs_{request.reference}", redirect_url=url,
                        raw={"checkout_url": url})

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        verify_signature(self.secret, raw_body, header(headers, SIGNATURE_HEADER))
        return parse_event(json_object(raw_body, "a sandbox event"))

    def _signed_headers(self, payload: bytes) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(self.secret, payload, int(time.time())),
                "Content-Type": "application/json"}

    def _call(self, method: str, path: str, payload: bytes = b"") -> dict[str, Any]:
        response = self.http.request(method, path, headers=self._signed_headers(payload),
                                     data=payload or None)
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.status_code >= 400:
            message = (body.get("error") or {}).get("message") or f"HTTP {response.status_code}"
            raise GatewayError(f"Sandbox: {message}", code="gateway_error",
                               retryable=response.status_code >= 500,
                               http_status=response.status_code, raw=body)
        return body

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        path = f"/api/checkouts/{reference}"
        body = self._call("GET", path, path.encode())
        status = body.get("status", "")
        return GatewayEvent(
            dedupe_id=None, type=f"status.{status}", reference=reference,
            status=lookup_status(CHARGE_STATUS, status), amount=body.get("amount"),
            currency=(body.get("currency") or "").upper() or None,
            transaction_id=body.get("transaction_id"), method="sandbox", raw=body,
        )

    def refund(self, request: RefundRequest) -> RefundResult:
        payload = json.dumps({"reference": request.reference, "amount": request.amount,
                              "currency": request.currency,
                              "idempotency_key": request.idempotency_key}).encode()
        body = self._call("POST", "/api/refunds", payload)
        status = lookup_status(REFUND_STATUS, body.get("status", ""))
        return RefundResult(refund_id=body["id"], status=status, amount=int(body["amount"]),
                            raw=body)

    def test_connection(self) -> str:
        return "The sandbox runs inside the portal: there is nothing to connect to."
