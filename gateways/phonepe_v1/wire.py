"""PhonePe PG v1 on the wire, in pure functions: payloads, X-VERIFY checksums, status answers.

Protocol notes: docs/gateways/phonepe_v1.md. Our payment reference is PhonePe's
`merchantTransactionId`. A refund gets a new one, the payment's reference plus a short suffix,
so its callback leads back to the payment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import string
from collections.abc import Mapping
from typing import Any

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    MalformedPayload,
    RefundRequest,
    SignatureError,
    constant_time_equal,
    json_object,
    lookup_status,
)

# ---- constants ----------------------------------------------------------------------------------

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


# ---- wire format --------------------------------------------------------------------------------

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


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The base64 `request` value. The checksum covers these exact characters."""
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(compact.encode()).decode()


def status_path(merchant_id: str, transaction_id: str) -> str:
    return f"/pg/v1/status/{merchant_id}/{transaction_id}"


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


def callback_response(raw_body: bytes) -> str:
    """The base64 `response` string of a callback body, as sent."""
    response = json_object(raw_body, "a PhonePe callback").get("response")
    if not isinstance(response, str):
        raise MalformedPayload("not a PhonePe callback")
    return response


def decode_response(response: str) -> dict[str, Any]:
    try:
        decoded: dict[str, Any] = json.loads(base64.b64decode(response, validate=True))
        decoded["data"]["merchantTransactionId"].strip  # noqa: B018  the shape every one has
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError,
            AttributeError, RecursionError):  # read before any checksum: anyone can send it
        raise MalformedPayload("the callback's response is not PhonePe's base64 JSON") from None
    return decoded


def amount_of(data: Mapping[str, Any]) -> int | None:
    value = data.get("amount")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def payment_event(body: Mapping[str, Any], reference: str) -> GatewayEvent:
    """A status answer (or a callback body) about one payment, in our words."""
    code = body.get("code")
    status = lookup_status(PAYMENT_CODES, code)
    data = body.get("data") or {}
    instrument = data.get("paymentInstrument") or {}
    raw = dict(body)
    if status == EventStatus.FAILED:
        raw["failure_message"] = f"{body.get('message') or code} ({data.get('responseCode')})"
    return GatewayEvent(
        dedupe_id=None, type=str(code), reference=reference, status=status,
        amount=amount_of(data), currency="INR", checkout_id=reference,
        transaction_id=data.get("transactionId"),
        method=(instrument.get("type") or "").lower() or None, raw=raw)


def refund_event(body: Mapping[str, Any], reference: str, refund_transaction: str) -> GatewayEvent:
    code = body.get("code")
    status = lookup_status(REFUND_CODES, code)
    data = body.get("data") or {}
    raw = dict(body)
    if status == EventStatus.REFUND_FAILED:
        raw["failure_message"] = f"{body.get('message') or code} ({data.get('responseCode')})"
    return GatewayEvent(
        dedupe_id=None, type=f"refund.{code}", reference=reference, status=status,
        amount=amount_of(data), currency="INR", refund_id=refund_transaction, raw=raw)


# ---- signatures ---------------------------------------------------------------------------------

def checksum(message: str, salt_key: str, salt_index: str) -> str:
    """`SHA256(message + salt key) + "###" + salt index`, the X-VERIFY of every call."""
    return hashlib.sha256((message + salt_key).encode()).hexdigest() + "###" + salt_index


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
