"""PhonePe PG v1 (salt key + X-VERIFY): Pay Page, callbacks confirmed by the status API, refunds.

The wire format lives in `wire.py`; protocol notes in docs/gateways/phonepe_v1.md. Neither the
browser's return nor the callback decides anything alone: the status API has the last word.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from ..base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    Gateway,
    GatewayError,
    GatewayEvent,
    MalformedPayload,
    RefundRequest,
    RefundResult,
    header,
    lookup_status,
)
from . import wire


class PhonePeV1Gateway(Gateway):
    name = "phonepe_v1"
    display_name = "PhonePe (PG v1, salt key)"
    credential_fields = (
        CredentialField("merchant_id", "Merchant ID"),
        CredentialField("salt_key", "Salt key", secret=True),
        CredentialField("salt_index", "Salt index",
                        help="The number issued with the salt key, usually 1."),
    )
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND})
    webhook_events = ()  # the callback URL travels with every request
    webhook_calls_api = True
    default_api_base = "https://api.phonepe.com/apis/hermes"
    sandbox_api_base = "https://api-preprod.phonepe.com/apis/pg-sandbox"
    status_check_delays = wire.polling_schedule()
    status_check_cutoff = 25 * 60
    return_check_delay = 20  # PhonePe: first status check 20-25 s after the return

    def configure(self) -> None:
        self.merchant_id = self.credentials["merchant_id"]
        self.salt_key = self.credentials["salt_key"]
        self.salt_index = self.credentials["salt_index"].strip()
        if not self.salt_index.isdigit():
            raise GatewayError("The PhonePe salt index must be a number.", code="not_configured")

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        decoded = wire.decode_response(wire.callback_response(raw_body))
        return wire.split_transaction_id(decoded["data"]["merchantTransactionId"])[0]

    # ---- calls ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, checksum_of: str, body: Any = None,
              answers: Collection[str] = frozenset()) -> dict[str, Any]:
        """One call; PhonePe's JSON answer, or GatewayError with PhonePe's own words.

        A code in `answers` is an answer about the transaction whatever the HTTP status.
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   wire.CHECKSUM_HEADER: wire.checksum(checksum_of, self.salt_key, self.salt_index)}
        if method == "GET":
            headers["X-MERCHANT-ID"] = self.merchant_id
        response = self.http.request(method, path, headers=headers,
                                     data=None if body is None else json.dumps(body))
        status = response.status_code
        try:
            answer: dict[str, Any] = response.json()
            code = answer.get("code")
        except (ValueError, AttributeError):
            raise GatewayError(f"PhonePe answered with an unreadable page (HTTP {status}).",
                               code="gateway_error", retryable=status >= 500,
                               http_status=status) from None
        if code in answers or (status < 400 and code not in wire.CALL_ERRORS):
            return answer
        message = f"PhonePe: {answer.get('message') or 'the request was refused'} ({code})"
        if code in wire.AUTH_ERRORS or status == 401:
            raise GatewayError(message, code="bad_credentials", http_status=status, raw=answer)
        raise GatewayError(message, code="gateway_error", http_status=status, raw=answer,
                           retryable=status >= 500 or code == "INTERNAL_SERVER_ERROR")

    def _post(self, path: str, payload: Mapping[str, Any],
              answers: Collection[str] = frozenset()) -> dict[str, Any]:
        encoded = wire.encode_payload(payload)
        return self._call("POST", path, checksum_of=encoded + path, body={"request": encoded},
                          answers=answers)

    def _status(self, transaction_id: str, answers: Collection[str]) -> dict[str, Any]:
        path = wire.status_path(self.merchant_id, transaction_id)
        answer = self._call("GET", path, checksum_of=path, answers={*answers, wire.NOT_FOUND})
        data = answer.get("data") or {}
        if answer.get("code") != wire.NOT_FOUND and (
                data.get("merchantTransactionId") != transaction_id
                or data.get("merchantId") != self.merchant_id):
            raise GatewayError("PhonePe answered about another transaction.",
                               code="unexpected_answer", raw=answer)
        return answer

    # ---- the interface -------------------------------------------------------------------

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        if request.currency != "INR":
            raise GatewayError("PhonePe takes payments in INR only.", code="unsupported_currency")
        if request.amount < wire.MIN_AMOUNT:
            raise GatewayError("PhonePe takes payments of at least ₹1.00.", code="amount_too_small")
        if not wire.TRANSACTION_ID.match(request.reference) or wire.split_transaction_id(
                request.reference)[1]:  # a refund's shape would mislead its callback
            raise GatewayError("PhonePe: the payment reference is not a valid transaction id.",
                               code="bad_reference")
        payload = wire.pay_payload(request, self.merchant_id,
                                   self.webhook_url or request.notify_url)
        answer = self._post(wire.PAY_PATH, payload)
        redirect = (((answer.get("data") or {}).get("instrumentResponse") or {})
                    .get("redirectInfo") or {})
        if answer.get("code") != "PAYMENT_INITIATED" or not redirect.get("url") \
                or redirect.get("method", "GET") != "GET":
            raise GatewayError(f"PhonePe did not open a pay page ({answer.get('code')}).",
                               code="unexpected_answer", raw=answer)
        return Checkout(checkout_id=request.reference, redirect_url=redirect["url"], raw=answer)

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        """Verifies the callback's checksum, then asks the status API what really happened."""
        response = wire.callback_response(raw_body)
        wire.verify_callback(response, header(headers, wire.CHECKSUM_HEADER), self.salt_key,
                        self.salt_index)
        callback = wire.decode_response(response)
        if callback["data"].get("merchantId") != self.merchant_id:
            raise MalformedPayload("the callback is for another merchant")
        transaction_id = callback["data"]["merchantTransactionId"]
        reference, is_refund = wire.split_transaction_id(transaction_id)
        event = (self.fetch_refund_status(reference, transaction_id) if is_refund
                 else self.fetch_status(reference))
        return replace(event, dedupe_id=f"{transaction_id}:{event.raw['code']}",
                       type=f"callback.{event.type}", raw={"callback": callback, **event.raw})

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        answer = self._status(reference, wire.PAYMENT_CODES)
        if answer.get("code") == wire.NOT_FOUND:
            raise GatewayError("PhonePe has no transaction for this payment.", code="not_found",
                               raw=answer)
        return wire.payment_event(answer, reference)

    def fetch_refund_status(self, reference: str, refund_transaction: str) -> GatewayEvent:
        answer = self._status(refund_transaction, wire.REFUND_CODES)
        if answer.get("code") == wire.NOT_FOUND:
            raise GatewayError("PhonePe has no such refund.", code="not_found", raw=answer)
        return wire.refund_event(answer, reference, refund_transaction)

    def refund(self, request: RefundRequest) -> RefundResult:
        if request.currency != "INR":
            raise GatewayError("PhonePe refunds INR only.", code="unsupported_currency")
        if request.amount < wire.MIN_AMOUNT:
            raise GatewayError("PhonePe refunds at least ₹1.00.", code="amount_too_small")
        transaction_id = wire.refund_transaction_id(request.reference, request.idempotency_key)
        # PhonePe: check the status before retrying a refund. A retry after a lost answer
        # finds the refund made then instead of asking twice.
        answer = self._status(transaction_id, wire.REFUND_CODES)
        if answer.get("code") == wire.NOT_FOUND:
            payload = wire.refund_payload(request, self.merchant_id, transaction_id,
                                     self.webhook_url)
            answer = self._post(wire.REFUND_PATH, payload, answers=frozenset(wire.REFUND_CODES))
        amount = wire.amount_of(answer.get("data") or {})
        if amount is not None and amount != request.amount:
            raise GatewayError(f"PhonePe reports {amount} paise for refund {transaction_id}, "
                               f"not {request.amount}.", code="unexpected_answer", raw=answer)
        return RefundResult(refund_id=transaction_id,
                            status=lookup_status(wire.REFUND_CODES, answer.get("code")),
                            amount=request.amount, raw=answer)

    def test_connection(self) -> str:
        """The status of a transaction that does not exist: only the right salt gets that far."""
        answer = self._status(wire.PROBE_TRANSACTION_ID, wire.PAYMENT_CODES)
        if answer.get("code") not in (wire.NOT_FOUND, *wire.PAYMENT_CODES):
            raise GatewayError(f"PhonePe answered {answer.get('code')}.",
                               code="unexpected_answer")
        return f"Connected to PhonePe as merchant {self.merchant_id}."
