"""PesoPay (AsiaPay) on the wire, in pure functions: the hosted form, the datafeed, the
merchant API's answers and the secure hash.

Protocol notes: docs/gateways/pesopay.md. Our payment reference is the form's `orderRef`; the
datafeed brings it back as `Ref`, with AsiaPay's payment id as `PayRef`.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ElementTree  # nosec B405  # see query_records
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import requests
import urllib3

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    MalformedPayload,
    SignatureError,
    UnknownStatus,
    constant_time_equal,
    lookup_status,
)
from ..currency import AmountError, to_major, to_minor

# ---- constants ----------------------------------------------------------------------------------

PAY_FORM_PATH = "/payment/payForm.jsp"
API_PATH = "/merchant/api/orderApi.jsp"

HASH_FUNCTIONS = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
DEFAULT_HASH_FUNCTION = "SHA-1"
ORDER_REF_MAX = 35  # AsiaPay's limit on orderRef (Odoo's payment_asiapay)
PAY_TYPE = "N"  # a sale; "H" would only hold (authorise) the money
LANGUAGE = "E"
PAY_METHOD = "ALL"

# ISO 4217 numeric code of each currency AsiaPay takes (AsiaPay's own plugins); the exponents
# are ISO's (gateways/currency.py).
CURRENCY_CODES = {
    "AED": "784", "AUD": "036", "BND": "096", "CAD": "124", "CNY": "156", "EUR": "978",
    "GBP": "826", "HKD": "344", "IDR": "360", "INR": "356", "JPY": "392", "KRW": "410",
    "MOP": "446", "MYR": "458", "NZD": "554", "PHP": "608", "SAR": "682", "SGD": "702",
    "THB": "764", "TWD": "901", "USD": "840", "VND": "704",
}
CURRENCY_BY_CODE = {code: alpha for alpha, code in CURRENCY_CODES.items()}

# The datafeed's `secureHash` covers these fields, in this order, then the secret.
DATAFEED_SIGNED = ("src", "prc", "successcode", "Ref", "PayRef", "Cur", "Amt", "payerAuth")
SUCCESS_CODES = {"0": EventStatus.SUCCEEDED, "1": EventStatus.FAILED}
CARD_BRANDS = frozenset({"VISA", "Master", "AMEX", "JCB", "Diners", "CUP"})

# `orderStatus` of the merchant API, as PayDollar's merchant help lists them
# (https://www.paydollar.com/b2c2/eng/merchant/help/f_onlinehelp_orderstatus.htm). Statuses after
# a capture (refunds, chargebacks) still mean the money was taken: the payment succeeded.
ORDER_STATUS = {
    "Pending": EventStatus.PENDING,
    "Pending_3D": EventStatus.PENDING,
    "Authorized": EventStatus.PENDING,  # held, not captured: never asked for (payType N)
    "Capturing": EventStatus.PENDING,
    "Accepted": EventStatus.SUCCEEDED,
    "Accepted_Adj": EventStatus.SUCCEEDED,
    "Request Refund": EventStatus.SUCCEEDED,
    "RequestPartialRefund": EventStatus.SUCCEEDED,
    "Refunded": EventStatus.SUCCEEDED,
    "Partial Refunded": EventStatus.SUCCEEDED,
    "ChargeBack": EventStatus.SUCCEEDED,
    "Partial ChargeBack": EventStatus.SUCCEEDED,
    "Reversal-CB": EventStatus.SUCCEEDED,
    "Rejected": EventStatus.FAILED,
    "Cancelled": EventStatus.FAILED,
    "Voided": EventStatus.FAILED,
    "Reversal Void": EventStatus.FAILED,
    "Reverse Auth": EventStatus.FAILED,
}
PREFERENCE = (EventStatus.SUCCEEDED, EventStatus.PENDING, EventStatus.FAILED)
API_OK = "0"
API_REFUSED = "-1"


# ---- wire format --------------------------------------------------------------------------------

def currency_code(currency: str) -> str:
    if currency.upper() not in CURRENCY_CODES:
        raise GatewayError(f"PesoPay does not take payments in {currency}.",
                           code="unsupported_currency")
    return CURRENCY_CODES[currency.upper()]


def currency_alpha(code: str) -> str | None:
    """`Cur` as ISO alpha: AsiaPay sends the numeric code; Odoo's test vector uses alpha."""
    return CURRENCY_BY_CODE.get(code) or (code if code in CURRENCY_CODES else None)


def major_amount(minor: int, currency: str) -> str:
    """123450 PHP -> '1234.50'; 1000 JPY -> '1000': the currency's exact exponent."""
    currency_code(currency)
    return to_major(minor, currency)


def minor_amount(text: str | None, currency: str | None) -> int | None:
    """'1234.50' PHP -> 123450; None when it is no exact amount of that currency."""
    if currency not in CURRENCY_CODES:
        return None
    try:
        return to_minor(text or "", currency)
    except AmountError:
        return None


def payment_form_fields(request: CheckoutRequest, merchant_id: str, secret: str,
                        function: str) -> dict[str, str]:
    """The fields the patient's browser posts to `payForm.jsp`, `secureHash` last."""
    if len(request.reference) > ORDER_REF_MAX:
        raise GatewayError("PesoPay: the payment reference is too long.", code="bad_request")
    fields = {
        "merchantId": merchant_id,
        "orderRef": request.reference,
        "currCode": currency_code(request.currency),
        "amount": major_amount(request.amount, request.currency),
        "payType": PAY_TYPE,
        "payMethod": PAY_METHOD,
        "lang": LANGUAGE,
        "successUrl": request.return_url,
        "failUrl": request.return_url,  # the return page shows the outcome, failed included
        "cancelUrl": request.cancel_url,
    }
    fields["secureHash"] = secure_hash(function, [fields[k] for k in (
        "merchantId", "orderRef", "currCode", "amount", "payType")], secret)
    return fields


def parse_form(raw_body: bytes) -> dict[str, str]:
    """A form-encoded body; a repeated field is refused, so no value can hide behind another."""
    try:
        # Signed fields are ASCII; a stray byte elsewhere (a card holder's name) is replaced.
        pairs = parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True,
                          strict_parsing=bool(raw_body), encoding="utf-8", errors="replace")
    except ValueError:
        raise MalformedPayload("not a form-encoded PesoPay datafeed") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise MalformedPayload("a datafeed field appears twice")
    return fields


def datafeed_event(fields: Mapping[str, str]) -> GatewayEvent:
    """A verified datafeed as our event; dedupe on PayRef + successcode."""
    reference, pay_ref = fields.get("Ref", ""), fields.get("PayRef", "")
    if not reference or not pay_ref:
        raise MalformedPayload("the datafeed has no Ref or PayRef")
    success_code = fields.get("successcode")
    status = lookup_status(SUCCESS_CODES, success_code)
    prc, src = fields.get("prc", ""), fields.get("src", "")
    if status == EventStatus.SUCCEEDED and (prc, src) != ("0", "0"):
        raise UnknownStatus(f"successcode 0 with prc {prc!r} and src {src!r}")
    raw = dict(fields)
    if status == EventStatus.FAILED:
        raw["failure_message"] = f"Declined by the bank (response codes {prc}/{src})."
    cur = fields.get("Cur", "")
    currency = currency_alpha(cur)
    method = fields.get("payMethod") or None
    return GatewayEvent(
        dedupe_id=f"{pay_ref}:{success_code}",
        type="datafeed.accepted" if status == EventStatus.SUCCEEDED else "datafeed.rejected",
        reference=reference, status=status, amount=minor_amount(fields.get("Amt"), currency),
        currency=currency or cur, transaction_id=pay_ref, method=method,
        card_brand=method if method in CARD_BRANDS else None,
        card_last4=fields.get("panLast4") or None, raw=raw)


def api_answer(text: str) -> dict[str, str]:
    """The merchant API's `resultCode=...&errMsg=...` answer."""
    return dict(parse_qsl(text.strip(), keep_blank_values=True))


def query_records(text: str) -> list[dict[str, str]]:
    """The `<record>` children of a Query answer, each as {tag: text}."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise GatewayError("PesoPay answered the status query with unexpected XML.",
                           code="gateway_error", retryable=True)
    try:
        # B314: DTDs are refused above, so no entity expansion; the stdlib fetches nothing.
        root = ElementTree.fromstring(text.strip())  # nosec B314
    except ElementTree.ParseError:
        raise GatewayError("PesoPay answered the status query with unreadable XML.",
                           code="gateway_error", retryable=True) from None
    return [{child.tag: (child.text or "").strip() for child in record}
            for record in root.iter("record")]


def query_event(records: list[dict[str, str]], reference: str) -> GatewayEvent:
    """The payment's state from its Query records: a captured one wins over a failed retry."""
    mine = [r for r in records if r.get("ref", reference) == reference]
    if not mine:
        return GatewayEvent(dedupe_id=None, type="query.none", reference=reference,
                            status=EventStatus.PENDING, amount=None, currency=None,
                            raw={"records": []})
    rated = [(lookup_status(ORDER_STATUS, r.get("orderStatus")), r) for r in mine]
    status, record = min(rated, key=lambda pair: PREFERENCE.index(pair[0]))
    raw: dict[str, Any] = {"records": mine}
    if status == EventStatus.FAILED:
        raw["failure_message"] = f"PesoPay reports the payment {record['orderStatus']}."
    currency = currency_alpha(record.get("cur", ""))
    return GatewayEvent(
        dedupe_id=None, type=f"query.{record['orderStatus']}", reference=reference,
        status=status, amount=minor_amount(record.get("amt"), currency),
        currency=currency or record.get("cur"), transaction_id=record.get("payRef") or None,
        method=record.get("payMethod") or None, raw=raw)


def never_sent(exc: GatewayError) -> bool:
    """Whether a failed call cannot have reached PesoPay (refused or timed out connecting)."""
    cause = exc.__cause__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    reason = getattr(cause.args[0], "reason", None) if (
        isinstance(cause, requests.ConnectionError) and cause.args) else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


# ---- signatures ---------------------------------------------------------------------------------

def secure_hash(function: str, values: list[str], secret: str) -> str:
    """hex(hash("v1|v2|...|secret")) with the account's hash function."""
    name = HASH_FUNCTIONS.get(function)
    if name is None:
        raise GatewayError(f"PesoPay: unknown hash function {function!r}", code="not_configured")
    return hashlib.new(name, "|".join([*values, secret]).encode()).hexdigest()


def datafeed_hash(fields: Mapping[str, str], secret: str, function: str) -> str:
    return secure_hash(function, [fields.get(k, "") for k in DATAFEED_SIGNED], secret)


def verify_datafeed(fields: Mapping[str, str], secret: str, function: str) -> None:
    """Any one of the comma-separated `secureHash` values may match (AsiaPay's key rotation)."""
    expected = datafeed_hash(fields, secret, function)
    offered = [h.strip() for h in fields.get("secureHash", "").split(",") if h.strip()]
    if not offered:
        raise SignatureError("the datafeed carries no secureHash")
    if not any(constant_time_equal(expected, h.lower()) for h in offered):
        raise SignatureError("PesoPay datafeed secureHash mismatch")
