"""PhonePe PG v1 (salt key + X-VERIFY): Pay Page, callbacks confirmed by the status API, refunds.

Wire facts: ../shared/reference/gateways.md §3 and https://developer.phonepe.com/v1/reference/.
Our payment reference is PhonePe's `merchantTransactionId`. A refund gets a new one, the
payment's reference plus a short suffix, so its callback leads back to the payment. Neither the
browser's return nor the callback decides anything alone: the status API has the last word.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

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
    UnknownStatus,
    constant_time_equal,
)
from .http import HttpClient

PAY_PATH = "/pg/v1/pay"
REFUND_PATH = "/pg/v1/refund"
CHECKSUM_HEADER = "X-VERIFY"
MIN_AMOUNT = 100  # paise: "Amount should be greater than 100"
# merchantTransactionId: "less than 35 characters", letters, digits, "_" and "-" only.
TRANSACTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,34}$")
REFUND_SUFFIX_LENGTH = 5
REFUND_TRANSACTION_ID = re.compile(rf"^(?P<reference>[A-Za-z0-9_]+)-[A-Za-z0-9]"
                                   rf"{{{REFUND_SUFFIX_LENGTH}}}$")
BASE62 = string.digits + string.ascii_letters
PROBE_TRANSACTION_ID = "portal-connection-test"

# Transaction codes of the status API (and of callbacks, which carry the same body). Decide
# on `code`, as PhonePe says; anything else raises.
PAYMENT_CODES = {
    "PAYMENT_SUCCESS": EventStatus.SUCCEEDED,
    "PAYMENT_PENDING": EventStatus.PENDING,
    "PAYMENT_INITIATED": EventStatus.PENDING,  # the pay page is open, nothing paid yet
    "PAYMENT_ERROR": EventStatus.FAILED,
    "PAYMENT_DECLINED": EventStatus.FAILED,
    "PAYMENT_CANCELLED": EventStatus.FAILED,
    "TIMED_OUT": EventStatus.FAILED,
}
REFUND_CODES = {
    "PAYMENT_SUCCESS": EventStatus.REFUND_SUCCEEDED,
    "PAYMENT_PENDING": EventStatus.PENDING,
    # "Refund might get initiated" (refund API codes): never failed on our side.
    "TIMED_OUT": EventStatus.PENDING,
    "PAYMENT_ERROR": EventStatus.REFUND_FAILED,
    "PAYMENT_DECLINED": EventStatus.REFUND_FAILED,
    "REVERSAL_WINDOW_EXCEEDED": EventStatus.REFUND_FAILED,
}
NOT_FOUND = "TRANSACTION_NOT_FOUND"
AUTH_ERRORS = frozenset({"AUTHORIZATION_FAILED", "KEY_NOT_CONFIGURED"})
# Codes about the call, not the transaction (unless a caller expects NOT_FOUND).
CALL_ERRORS = AUTH_ERRORS | {"BAD_REQUEST", "INTERNAL_SERVER_ERROR", NOT_FOUND}


def polling_schedule() -> tuple[int, ...]:
    """Seconds after the start to check a pending payment, as PhonePe's reconciliation asks.

    https://developer.phonepe.com/v1/reference/check-status-api-1: first at 20-25 s, then every
    3 s for 30 s, 6 s for 60 s, 10 s for 60 s, 30 s for 60 s, then every minute until the
    timeout (15 min; 20 on the newer page). One last look at 25 min.
    """
    delays, at = [25], 25
    for step, span in ((3, 30), (6, 60), (10, 60), (30, 60)):
        for _ in range(span // step):
            at += step
            delays.append(at)
    while at + 60 <= 20 * 60:
        at += 60
        delays.append(at)
    return (*delays, 25 * 60)


def lookup(table: Mapping[str, EventStatus], value: Any) -> EventStatus:
    if value not in table:
        raise UnknownStatus(str(value))
    return table[value]


def checksum(message: str, salt_key: str, salt_index: str) -> str:
    """`SHA256(message + salt key) + "###" + salt index`, the X-VERIFY of every call."""
    return hashlib.sha256((message + salt_key).encode()).hexdigest() + "###" + salt_index


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The base64 `request` value. The checksum covers these exact characters."""
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(compact.encode()).decode()


def status_path(merchant_id: str, transaction_id: str) -> str:
    return f"/pg/v1/status/{merchant_id}/{transaction_id}"


def verify_callback(response: str, header: str | None, salt_key: str, salt_index: str) -> None:
    """Checks a callback's X-VERIFY: SHA256(base64 response + salt) ### index; raises otherwise.

    The index after `###` names the salt; only the lab's configured one is accepted.
    """
    if not header:
        raise SignatureError("missing X-VERIFY header")
    digest, separator, index = header.strip().rpartition("###")
    if not separator or not digest:
        raise SignatureError("malformed X-VERIFY header")
    if index != salt_index:
        raise SignatureError(f"X-VERIFY names salt index {index[:8]!r}, not the configured one")
    expected = hashlib.sha256((response + salt_key).encode()).hexdigest()
    if not constant_time_equal(digest.lower(), expected):
        raise SignatureError("X-VERIFY checksum mismatch")


def indian_mobile(phone: str) -> str | None:
    """The ten digits PhonePe can prefill, for an Indian mobile number only."""
    digits = re.sub(r"\D", "", phone or "")
    if len(digits) == 12 and digits.startswith("91"):
        digits = digits[2:]
    return digits if len(digits) == 10 and digits[0] in "6789" else None


def pay_payload(request: CheckoutRequest, merchant_id: str, callback_url: str) -> dict[str, Any]:
    """The JSON inside `POST /pg/v1/pay`'s base64 `request`; null values are left out."""
    payload: dict[str, Any] = {
        "merchantId": merchant_id,
        "merchantTransactionId": request.reference,
        # Required for the pay page; PhonePe asks for no email or phone here: one id per attempt.
        "merchantUserId": request.reference,
        "amount": request.amount,
        "redirectUrl": request.return_url,
        # A plain GET back to our return page (POST mode would post an unsigned form to it).
        "redirectMode": "REDIRECT",
        "callbackUrl": callback_url,
        "mobileNumber": indian_mobile(request.customer_phone),
        "paymentInstrument": {"type": "PAY_PAGE"},
    }
    return {k: v for k, v in payload.items() if v is not None}


def refund_transaction_id(reference: str, idempotency_key: str) -> str:
    """A new merchantTransactionId for a refund, the same on every retry of that refund."""
    number = int.from_bytes(hashlib.sha256(idempotency_key.encode()).digest()[:8], "big")
    suffix = "".join(BASE62[number // 62 ** i % 62] for i in range(REFUND_SUFFIX_LENGTH))
    transaction_id = f"{reference}-{suffix}"
    if not (TRANSACTION_ID.match(transaction_id) and REFUND_TRANSACTION_ID.match(transaction_id)):
        raise GatewayError("PhonePe: the payment reference is too long to refund",
                           code="bad_reference")
    return transaction_id


def refund_payload(request: RefundRequest, merchant_id: str, transaction_id: str,
                   callback_url: str) -> dict[str, Any]:
    return {
        "merchantId": merchant_id,
        "originalTransactionId": request.reference,
        "merchantTransactionId": transaction_id,
        "amount": request.amount,
        "callbackUrl": callback_url,
    }


def split_transaction_id(transaction_id: str) -> tuple[str, bool]:
    """(our payment reference, whether it is a refund's id)."""
    match = REFUND_TRANSACTION_ID.match(transaction_id)
    return (match["reference"], True) if match else (transaction_id, False)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers.items() if k.lower() == name), None)


def callback_response(raw_body: bytes) -> str:
    """The base64 `response` string of a callback body, as sent."""
    try:
        response = json.loads(raw_body)["response"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise MalformedPayload("not a PhonePe callback") from None
    if not isinstance(response, str):
        raise MalformedPayload("not a PhonePe callback")
    return response


def decode_response(response: str) -> dict:
    try:
        decoded = json.loads(base64.b64decode(response, validate=True))
        decoded["data"]["merchantTransactionId"].strip  # noqa: B018  the shape every one has
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError,
            AttributeError, RecursionError):  # read before any checksum: anyone can send it
        raise MalformedPayload("the callback's response is not PhonePe's base64 JSON") from None
    return decoded


def _amount(data: Mapping) -> int | None:
    value = data.get("amount")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def payment_event(body: Mapping, reference: str) -> GatewayEvent:
    """A status answer (or a callback body) about one payment, in our words."""
    code = body.get("code")
    status = lookup(PAYMENT_CODES, code)
    data = body.get("data") or {}
    instrument = data.get("paymentInstrument") or {}
    raw = dict(body)
    if status == EventStatus.FAILED:
        raw["failure_message"] = f"{body.get('message') or code} ({data.get('responseCode')})"
    return GatewayEvent(
        dedupe_id=None, type=str(code), reference=reference, status=status,
        amount=_amount(data), currency="INR", checkout_id=reference,
        transaction_id=data.get("transactionId"),
        method=(instrument.get("type") or "").lower() or None, raw=raw)


def refund_event(body: Mapping, reference: str, refund_transaction: str) -> GatewayEvent:
    code = body.get("code")
    status = lookup(REFUND_CODES, code)
    data = body.get("data") or {}
    raw = dict(body)
    if status == EventStatus.REFUND_FAILED:
        raw["failure_message"] = f"{body.get('message') or code} ({data.get('responseCode')})"
    return GatewayEvent(
        dedupe_id=None, type=f"refund.{code}", reference=reference, status=status,
        amount=_amount(data), currency="INR", refund_id=refund_transaction, raw=raw)


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
    default_api_base = "https://api.phonepe.com/apis/hermes"
    sandbox_api_base = "https://api-preprod.phonepe.com/apis/pg-sandbox"
    status_check_delays = polling_schedule()
    status_check_cutoff = 25 * 60
    return_check_delay = 20  # PhonePe: first status check 20-25 s after the return

    def __init__(self, credentials, *, api_base=None, timeout=(5.0, 20.0), webhook_url=""):
        super().__init__(credentials, api_base=api_base, timeout=timeout,
                         webhook_url=webhook_url)
        self.merchant_id = self.credentials["merchant_id"]
        self.salt_key = self.credentials["salt_key"]
        self.salt_index = self.credentials["salt_index"].strip()
        if not self.salt_index.isdigit():
            raise GatewayError("The PhonePe salt index must be a number.", code="not_configured")
        self.http = HttpClient(self.api_base, timeout=timeout, error_class=GatewayError)

    @classmethod
    def extract_reference(cls, headers, raw_body):
        decoded = decode_response(callback_response(raw_body))
        return split_transaction_id(decoded["data"]["merchantTransactionId"])[0]

    # ---- calls ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, checksum_of: str, body: Any = None,
              answers: frozenset[str] | set[str] = frozenset()) -> dict:
        """One call; PhonePe's JSON answer, or GatewayError with PhonePe's own words.

        A code in `answers` is an answer about the transaction whatever the HTTP status.
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   CHECKSUM_HEADER: checksum(checksum_of, self.salt_key, self.salt_index)}
        if method == "GET":
            headers["X-MERCHANT-ID"] = self.merchant_id
        response = self.http.request(method, path, headers=headers,
                                     data=None if body is None else json.dumps(body))
        status = response.status_code
        try:
            answer = response.json()
            code = answer.get("code")
        except (ValueError, AttributeError):
            raise GatewayError(f"PhonePe answered with an unreadable page (HTTP {status}).",
                               code="gateway_error", retryable=status >= 500,
                               http_status=status) from None
        if code in answers or (status < 400 and code not in CALL_ERRORS):
            return answer
        message = f"PhonePe: {answer.get('message') or 'the request was refused'} ({code})"
        if code in AUTH_ERRORS or status == 401:
            raise GatewayError(message, code="bad_credentials", http_status=status, raw=answer)
        raise GatewayError(message, code="gateway_error", http_status=status, raw=answer,
                           retryable=status >= 500 or code == "INTERNAL_SERVER_ERROR")

    def _post(self, path: str, payload: Mapping[str, Any], answers=frozenset()) -> dict:
        encoded = encode_payload(payload)
        return self._call("POST", path, checksum_of=encoded + path, body={"request": encoded},
                          answers=answers)

    def _status(self, transaction_id: str, answers) -> dict:
        path = status_path(self.merchant_id, transaction_id)
        answer = self._call("GET", path, checksum_of=path, answers={*answers, NOT_FOUND})
        data = answer.get("data") or {}
        if answer.get("code") != NOT_FOUND and (
                data.get("merchantTransactionId") != transaction_id
                or data.get("merchantId") != self.merchant_id):
            raise GatewayError("PhonePe answered about another transaction.",
                               code="unexpected_answer", raw=answer)
        return answer

    # ---- the interface -------------------------------------------------------------------

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        if request.currency != "INR":
            raise GatewayError("PhonePe takes payments in INR only.", code="unsupported_currency")
        if request.amount < MIN_AMOUNT:
            raise GatewayError("PhonePe takes payments of at least ₹1.00.", code="amount_too_small")
        if not TRANSACTION_ID.match(request.reference) or split_transaction_id(
                request.reference)[1]:  # a refund's shape would mislead its callback
            raise GatewayError("PhonePe: the payment reference is not a valid transaction id.",
                               code="bad_reference")
        payload = pay_payload(request, self.merchant_id, self.webhook_url or request.notify_url)
        answer = self._post(PAY_PATH, payload)
        redirect = (((answer.get("data") or {}).get("instrumentResponse") or {})
                    .get("redirectInfo") or {})
        if answer.get("code") != "PAYMENT_INITIATED" or not redirect.get("url") \
                or redirect.get("method", "GET") != "GET":
            raise GatewayError(f"PhonePe did not open a pay page ({answer.get('code')}).",
                               code="unexpected_answer", raw=answer)
        return Checkout(checkout_id=request.reference, redirect_url=redirect["url"], raw=answer)

    def parse_webhook(self, headers, raw_body):
        """Verifies the callback's checksum, then asks the status API what really happened."""
        response = callback_response(raw_body)
        verify_callback(response, _header(headers, CHECKSUM_HEADER), self.salt_key,
                        self.salt_index)
        callback = decode_response(response)
        if callback["data"].get("merchantId") != self.merchant_id:
            raise MalformedPayload("the callback is for another merchant")
        transaction_id = callback["data"]["merchantTransactionId"]
        reference, is_refund = split_transaction_id(transaction_id)
        event = (self.fetch_refund_status(reference, transaction_id) if is_refund
                 else self.fetch_status(reference))
        return replace(event, dedupe_id=f"{transaction_id}:{event.raw['code']}",
                       type=f"callback.{event.type}", raw={"callback": callback, **event.raw})

    def fetch_status(self, reference, checkout_id=None):
        answer = self._status(reference, PAYMENT_CODES)
        if answer.get("code") == NOT_FOUND:
            raise GatewayError("PhonePe has no transaction for this payment.", code="not_found",
                               raw=answer)
        return payment_event(answer, reference)

    def fetch_refund_status(self, reference: str, refund_transaction: str) -> GatewayEvent:
        answer = self._status(refund_transaction, REFUND_CODES)
        if answer.get("code") == NOT_FOUND:
            raise GatewayError("PhonePe has no such refund.", code="not_found", raw=answer)
        return refund_event(answer, reference, refund_transaction)

    def refund(self, request: RefundRequest) -> RefundResult:
        if request.currency != "INR":
            raise GatewayError("PhonePe refunds INR only.", code="unsupported_currency")
        if request.amount < MIN_AMOUNT:
            raise GatewayError("PhonePe refunds at least ₹1.00.", code="amount_too_small")
        transaction_id = refund_transaction_id(request.reference, request.idempotency_key)
        # PhonePe: check the status before retrying a refund. A retry after a lost answer
        # finds the refund made then instead of asking twice.
        answer = self._status(transaction_id, REFUND_CODES)
        if answer.get("code") == NOT_FOUND:
            payload = refund_payload(request, self.merchant_id, transaction_id,
                                     self.webhook_url)
            answer = self._post(REFUND_PATH, payload, answers=frozenset(REFUND_CODES))
        amount = _amount(answer.get("data") or {})
        if amount is not None and amount != request.amount:
            raise GatewayError(f"PhonePe reports {amount} paise for refund {transaction_id}, "
                               f"not {request.amount}.", code="unexpected_answer", raw=answer)
        return RefundResult(refund_id=transaction_id,
                            status=lookup(REFUND_CODES, answer.get("code")),
                            amount=request.amount, raw=answer)

    def test_connection(self) -> str:
        """The status of a transaction that does not exist: only the right salt gets that far."""
        answer = self._status(PROBE_TRANSACTION_ID, PAYMENT_CODES)
        if answer.get("code") not in (NOT_FOUND, *PAYMENT_CODES):
            raise GatewayError(f"PhonePe answered {answer.get('code')}.",
                               code="unexpected_answer")
        return f"Connected to PhonePe as merchant {self.merchant_id}."
