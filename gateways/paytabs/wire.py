"""PayTabs PT2 wire format in pure functions: hosts, amounts, request bodies, events, signatures.

Protocol notes: docs/gateways/paytabs.md, checked against paytabscom/php-sdk (AbstractBrowser,
Callback, TranStatus, Helpers::responseStage, tests/fixtures/responses) and PayTabs' own Odoo
module (paytabscom/paytabs-odoo, payment_paytabs_official).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus

from ..base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    GatewayEvent,
    IgnoredEvent,
    MalformedPayload,
    RefundRequest,
    SavedMethodCharge,
    SignatureError,
    UnknownStatus,
    constant_time_equal,
    hmac_sha256_hex,
    lookup_status,
)
from ..base import load_json as base_load_json
from ..currency import AmountError, to_major, to_minor

# ---- constants ----------------------------------------------------------------------------------

# There is no sandbox host: a test profile on the account's own regional host takes test cards.
REGION_HOSTS = {
    "ARE": "https://secure.paytabs.com",
    "SAU": "https://secure.paytabs.sa",
    "OMN": "https://secure-oman.paytabs.com",
    "JOR": "https://secure-jordan.paytabs.com",
    "EGY": "https://secure-egypt.paytabs.com",
    "KWT": "https://secure-kuwait.paytabs.com",
    "QAT": "https://secure-doha.paytabs.com",
    "IRQ": "https://secure-iraq.paytabs.com",
    "MAR": "https://secure-morocco.paytabs.com",
    "GLOBAL": "https://secure-global.paytabs.com",
}
REGION_NAMES = {
    "ARE": "United Arab Emirates", "SAU": "Saudi Arabia", "OMN": "Oman", "JOR": "Jordan",
    "EGY": "Egypt", "KWT": "Kuwait", "QAT": "Qatar", "IRQ": "Iraq", "MAR": "Morocco",
    "GLOBAL": "Global",
}

# The currencies PayTabs lists for cart_currency; their exponents are ISO's (gateways/currency.py).
CURRENCIES = frozenset({"AED", "BHD", "EGP", "EUR", "GBP", "HKD", "IDR", "INR", "IQD", "JOD",
                        "JPY", "KWD", "MAD", "OMR", "PKR", "QAR", "SAR", "USD"})

SIGNATURE_HEADER = "Signature"
TOKEN_FORMAT = 2  # 32 hex characters, the SDKs' default
DESCRIPTION_LIMIT = 128  # PayTabs' limit is not published (UNVERIFIED); ours is modest
# Our own query parameter on the return URL; PayTabs does not sign it (the SDK's localParams).
LOCAL_RETURN_PARAMS = ("ref",)

# payment_result.response_status: `A` is the only success, `H` and `P` are not final.
PAYMENT_STATUS = {
    "A": EventStatus.SUCCEEDED,
    "H": EventStatus.PENDING,  # authorised, held by PayTabs' risk screening
    "P": EventStatus.PENDING,  # a deferred payment (cash agents) not yet made
    "V": EventStatus.FAILED,
    "E": EventStatus.FAILED,
    "D": EventStatus.FAILED,
    "X": EventStatus.FAILED,
    "C": EventStatus.FAILED,
}
REFUND_STATUS = {
    "A": EventStatus.REFUND_SUCCEEDED,
    "H": EventStatus.PENDING,
    "P": EventStatus.PENDING,
    "V": EventStatus.REFUND_FAILED,
    "E": EventStatus.REFUND_FAILED,
    "D": EventStatus.REFUND_FAILED,
    "X": EventStatus.REFUND_FAILED,
    "C": EventStatus.REFUND_FAILED,
}
# tran_type values (php-sdk Enums/TranType), lower-cased: PayTabs sends "Sale", "Refund"...
PAYMENT_TYPES = frozenset({"sale"})
# Money going back on a sale of ours; a void is only ever made in PayTabs' dashboard.
REVERSAL_TYPES = frozenset({"refund", "void"})
UNUSED_TYPES = frozenset({"auth", "authext", "capture", "release", "register", "payment request"})

AMOUNT_TEXT = re.compile(r"\d+(\.\d+)?")
MASKED_CARD = re.compile(r"[\d#*xX ]*(\d{4})")
ERROR_CODES = {1: "bad_credentials", 4: "duplicate"}


# ---- wire format: money -------------------------------------------------------------------------

def supported(currency: str) -> str:
    """The currency's code, when PayTabs takes it."""
    code = (currency or "").upper()
    if code not in CURRENCIES:
        raise GatewayError(f"PayTabs does not take payments in {currency}.",
                           code="unsupported_currency")
    return code


def major_amount(minor: int, currency: str) -> str:
    """12345 KWD -> '12.345', 1500 JPY -> '1500': exactly the currency's decimals."""
    return to_major(minor, supported(currency))


def minor_amount(value: Any, currency: str) -> int:
    """A PayTabs amount ('12.345', or an exact JSON number) in minor units; never rounded."""
    code = supported(currency)
    try:
        return to_minor(value, code)
    except AmountError as exc:
        raise MalformedPayload(str(exc)) from None


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The JSON PayTabs gets, with `cart_amount` written as an exact decimal number.

    PayTabs takes cart_amount as a JSON number; a float cannot carry 12.345 exactly, so the
    digits go where a one-off placeholder was serialised.
    """
    amount = body.get("cart_amount")
    if amount is None:
        return json.dumps(body, separators=(",", ":")).encode()
    if not isinstance(amount, str) or not AMOUNT_TEXT.fullmatch(amount):
        raise ValueError(f"cart_amount must be decimal digits, not {amount!r}")
    marker = f"cart-amount-{secrets.token_hex(8)}"
    text = json.dumps({**body, "cart_amount": marker}, separators=(",", ":"))
    return text.replace(f'"{marker}"', amount, 1).encode()


def load_json(raw: bytes | str) -> Any:
    """Numbers with a fraction stay exact (as text); nothing becomes a float."""
    return base_load_json(raw, "JSON", parse_float=str)


def status_of(table: Mapping[str, EventStatus], value: Any) -> EventStatus:
    """`response_status` in a table; upper-cased first, as the SDK does."""
    return lookup_status(table, value.upper() if isinstance(value, str) else value)


# ---- wire format: request bodies ----------------------------------------------------------------

def _description(text: str) -> str:
    return text[:DESCRIPTION_LIMIT]


def customer_details(request: CheckoutRequest) -> dict[str, str]:
    """What we know of the patient; PayTabs' page asks for the rest."""
    return {key: value for key, value in (("name", request.customer_name),
                                          ("email", request.customer_email),
                                          ("phone", request.customer_phone)) if value}


def payment_request(profile_id: int, request: CheckoutRequest, callback_url: str) -> dict[str, Any]:
    """The `POST /payment/request` body that opens a Hosted Payment Page for one payment."""
    body: dict[str, Any] = {
        "profile_id": profile_id,
        "tran_type": "sale",
        "tran_class": "ecom",
        "cart_id": request.reference,
        "cart_currency": request.currency.upper(),
        "cart_amount": major_amount(request.amount, request.currency),
        "cart_description": _description(
            f"{request.merchant_name}: bill {request.bill_reference}"),
        "hide_shipping": True,
        "return": request.return_url,
        "callback": callback_url,
    }
    details = customer_details(request)
    if details:
        body["customer_details"] = details
    if request.save_method:
        # The patient agreed on our page already: PayTabs' page does not ask again.
        body.update(tokenise=TOKEN_FORMAT, show_save_card=False)
    return body


def refund_cart_id(refund: RefundRequest) -> str:
    """Our refund reference: PayTabs refuses a second request with it (`Duplicate Request`)."""
    return refund.idempotency_key.removeprefix("refund-")


def refund_request(profile_id: int, refund: RefundRequest) -> dict[str, Any]:
    """A follow-up `tran_type: refund` on the sale; partial amounts are allowed."""
    return {
        "profile_id": profile_id,
        "tran_type": "refund",
        "tran_class": "ecom",
        "tran_ref": refund.transaction_id,
        "cart_id": refund_cart_id(refund),
        "cart_currency": refund.currency.upper(),
        "cart_amount": major_amount(refund.amount, refund.currency),
        "cart_description": _description(refund.reason or f"Refund of {refund.reference}"),
    }


def recurring_request(profile_id: int, charge: SavedMethodCharge) -> dict[str, Any]:
    """A merchant-initiated sale on a saved token, quoting the sale that created the token."""
    return {
        "profile_id": profile_id,
        "tran_type": "sale",
        "tran_class": "recurring",
        "cart_id": charge.reference,
        "cart_currency": charge.currency.upper(),
        "cart_amount": major_amount(charge.amount, charge.currency),
        "cart_description": _description(charge.description),
        "token": charge.method.token,
        "tran_ref": charge.method.gateway_customer_id,
    }


def api_failure(http_status: int, body: Any) -> GatewayError | None:
    """PayTabs' refusal (`code` > 0 and a `message`, at any HTTP status) for staff to read."""
    retryable = http_status >= 500 or http_status == 429
    code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(code, int) and not isinstance(code, bool) and code > 0:
        message = str(body.get("message") or "the request was refused")
        return GatewayError(f"PayTabs: {message} (code {code})",
                            code=ERROR_CODES.get(code, "gateway_error"), retryable=retryable,
                            http_status=http_status, raw=dict(body))
    if http_status >= 400:
        return GatewayError(f"PayTabs answered HTTP {http_status}.", code="gateway_error",
                            retryable=retryable, http_status=http_status, raw=body)
    return None


# ---- wire format: transactions as events --------------------------------------------------------

def load_ipn(raw_body: bytes) -> dict[str, Any]:
    body = load_json(raw_body)
    if not isinstance(body, dict) or not isinstance(body.get("tran_ref"), str) \
            or not isinstance(body.get("tran_type"), str):
        raise MalformedPayload("not a PayTabs transaction")
    return body


def tran_kind(body: Mapping[str, Any]) -> str:
    return str(body.get("tran_type") or "").strip().lower()


def ipn_reference(body: Mapping[str, Any]) -> str:
    """Our payment reference in an unverified IPN, or "" when only the sale's tran_ref leads
    to it (a refund's cart_id is our refund reference)."""
    kind = tran_kind(body)
    if kind in UNUSED_TYPES:
        raise IgnoredEvent(f"PayTabs {kind} transactions are not used")
    if kind in REVERSAL_TYPES:
        return ""
    return str(body.get("cart_id") or "")


def charged(body: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """What was charged: `tran_total` in `tran_currency` (after any discount), else the cart."""
    if body.get("tran_currency") and body.get("tran_total") is not None:
        currency, value = str(body["tran_currency"]).upper(), body["tran_total"]
    elif body.get("cart_currency") and body.get("cart_amount") is not None:
        currency, value = str(body["cart_currency"]).upper(), body["cart_amount"]
    else:
        return None, None
    return minor_amount(value, currency), currency


def card_details(body: Mapping[str, Any]) -> dict[str, Any]:
    info = body.get("payment_info") or {}
    scheme = str(info.get("card_scheme") or "").strip()
    masked = MASKED_CARD.fullmatch(str(info.get("payment_description") or "").strip())
    method = "card" if scheme else (str(info.get("payment_method") or "").lower() or None)
    return {"method": method, "card_brand": scheme.lower() or None,
            "card_last4": masked.group(1) if scheme and masked else None}


def _occurred_at(result: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(result.get("transaction_time")))
    except ValueError:
        return None


def transaction_event(body: Mapping[str, Any], *, dedupe: bool) -> GatewayEvent:
    """One PayTabs transaction (IPN, query or follow-up answer) in our words.

    IPNs carry no event id: a transaction's ref, type and status identify one delivery, so a
    replay is a duplicate while `H` then `A` on the same tran_ref are two facts.
    """
    kind = tran_kind(body)
    if kind in UNUSED_TYPES:
        raise IgnoredEvent(f"PayTabs {kind} transactions are not used")
    if kind not in PAYMENT_TYPES | REVERSAL_TYPES:
        raise UnknownStatus(f"tran_type {body.get('tran_type')}")
    result = body.get("payment_result")
    if not isinstance(result, Mapping):
        raise MalformedPayload("the transaction has no payment_result")
    letter = str(result.get("response_status") or "").upper()
    reversal = kind in REVERSAL_TYPES
    status = status_of(REFUND_STATUS if reversal else PAYMENT_STATUS, result.get("response_status"))
    amount, currency = charged(body)
    raw = dict(body)
    if status in (EventStatus.FAILED, EventStatus.REFUND_FAILED):
        raw["failure_message"] = str(result.get("response_message") or "declined at PayTabs")
    tran_ref = str(body["tran_ref"])
    common: dict[str, Any] = {
        "dedupe_id": f"{tran_ref}:{kind}:{letter}" if dedupe else None,
        "type": f"{kind}.{letter}", "status": status, "amount": amount, "currency": currency,
        "occurred_at": _occurred_at(result), "raw": raw}
    if reversal:
        return GatewayEvent(**common, reference="",
                            transaction_id=str(body.get("previous_tran_ref") or "") or None,
                            refund_id=tran_ref,
                            refund_reference=str(body.get("cart_id") or "") or None)
    return GatewayEvent(**common, reference=str(body.get("cart_id") or ""),
                        transaction_id=tran_ref, **card_details(body))


def status_event(body: Mapping[str, Any]) -> GatewayEvent:
    """A queried transaction; one whose page was never completed has no result yet."""
    if "payment_result" not in body and tran_kind(body) in PAYMENT_TYPES:
        amount, currency = charged({k: v for k, v in body.items() if k != "tran_total"})
        return GatewayEvent(dedupe_id=None, type="sale.unpaid", status=EventStatus.PENDING,
                            reference=str(body.get("cart_id") or ""), amount=amount,
                            currency=currency, transaction_id=str(body.get("tran_ref") or ""),
                            raw=dict(body))
    return transaction_event(body, dedupe=False)


def pick_sale(events: list[GatewayEvent]) -> GatewayEvent | None:
    """Of all attempts on one cart (newest first), the one that decides the payment."""
    for wanted in (EventStatus.SUCCEEDED, EventStatus.PENDING):
        for event in events:
            if event.status == wanted and event.type != "sale.unpaid":
                return event
    return events[0] if events else None


# ---- signatures ---------------------------------------------------------------------------------

def _php_urlencode(text: str) -> str:
    """PHP's urlencode(), which http_build_query uses: quote_plus, but `~` is encoded too."""
    return quote_plus(text, safe="").replace("~", "%7E")


def return_signing_string(fields: Mapping[str, Any]) -> str:
    """What PayTabs signs on the browser return: the posted fields but `signature` and ours,
    without empty ones ("0" stays), sorted by name, as PHP's http_build_query writes them."""
    kept = {str(k): str(v) for k, v in fields.items()
            if k != "signature" and k not in LOCAL_RETURN_PARAMS and v is not None and v != ""}
    return "&".join(f"{_php_urlencode(k)}={_php_urlencode(v)}"
                    for k, v in sorted(kept.items(), key=lambda item: item[0].encode()))


def sign_return(server_key: str, fields: Mapping[str, Any]) -> str:
    return hmac_sha256_hex(server_key, return_signing_string(fields).encode())


def verify_return_signature(server_key: str, fields: Mapping[str, Any]) -> None:
    signature = fields.get("signature")
    if not signature or not isinstance(signature, str):
        raise SignatureError("the return carries no signature")
    if not constant_time_equal(sign_return(server_key, fields), signature):
        raise SignatureError("PayTabs return signature mismatch")


def sign_ipn(server_key: str, raw_body: bytes) -> str:
    """`Signature`: hex HMAC-SHA256 of the exact raw body, keyed with the server key."""
    return hmac_sha256_hex(server_key, raw_body)


def verify_ipn_signature(server_key: str, raw_body: bytes, header: str | None) -> None:
    if not header:
        raise SignatureError("missing Signature header")
    if not constant_time_equal(sign_ipn(server_key, raw_body), header):
        raise SignatureError("PayTabs IPN signature mismatch")
