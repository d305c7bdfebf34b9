"""PesoPay (AsiaPay): a hosted form the patient's browser posts, a signed datafeed, and the
merchant API (`orderApi.jsp`) for status and refunds. Plain HTTP: AsiaPay publishes no SDK.

Wire facts: ../shared/reference/gateways.md §7. Our payment reference is the form's `orderRef`;
the datafeed brings it back as `Ref`, with AsiaPay's payment id as `PayRef`.
The API base is the brand's `/eng` folder: https://www.pesopay.com/b2c2/eng (live),
https://test.pesopay.com/b2cDemo/eng (test); PayDollar and SiamPay use the same paths.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ElementTree  # nosec B405  # see query_records
from collections.abc import Mapping
from urllib.parse import parse_qsl

import requests
import urllib3

from .base import (
    Capability,
    Checkout,
    CheckoutRequest,
    CredentialField,
    EventStatus,
    Gateway,
    GatewayError,
    GatewayEvent,
    HostedForm,
    MalformedPayload,
    RefundRequest,
    RefundResult,
    SignatureError,
    UnknownStatus,
    constant_time_equal,
    lookup_status,
)
from .http import HttpClient

PAY_FORM_PATH = "/payment/payForm.jsp"
API_PATH = "/merchant/api/orderApi.jsp"

HASH_FUNCTIONS = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}
DEFAULT_HASH_FUNCTION = "SHA-1"
ORDER_REF_MAX = 35  # AsiaPay's limit on orderRef (Odoo's payment_asiapay)
PAY_TYPE = "N"  # a sale; "H" would only hold (authorise) the money
LANGUAGE = "E"
PAY_METHOD = "ALL"

# ISO 4217 numeric code and exponent of each currency AsiaPay takes (AsiaPay's own plugins).
CURRENCIES: dict[str, tuple[str, int]] = {
    "AED": ("784", 2), "AUD": ("036", 2), "BND": ("096", 2), "CAD": ("124", 2),
    "CNY": ("156", 2), "EUR": ("978", 2), "GBP": ("826", 2), "HKD": ("344", 2),
    "IDR": ("360", 2), "INR": ("356", 2), "JPY": ("392", 0), "KRW": ("410", 0),
    "MOP": ("446", 2), "MYR": ("458", 2), "NZD": ("554", 2), "PHP": ("608", 2),
    "SAR": ("682", 2), "SGD": ("702", 2), "THB": ("764", 2), "TWD": ("901", 2),
    "USD": ("840", 2), "VND": ("704", 0),
}
CURRENCY_BY_CODE = {code: alpha for alpha, (code, _) in CURRENCIES.items()}

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

MAJOR_AMOUNT = re.compile(r"(\d+)(?:\.(\d+))?")


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


def currency_code(currency: str) -> str:
    if currency.upper() not in CURRENCIES:
        raise GatewayError(f"PesoPay does not take payments in {currency}.",
                           code="unsupported_currency")
    return CURRENCIES[currency.upper()][0]


def currency_alpha(code: str) -> str | None:
    """`Cur` as ISO alpha: AsiaPay sends the numeric code; Odoo's test vector uses alpha."""
    return CURRENCY_BY_CODE.get(code) or (code if code in CURRENCIES else None)


def major_amount(minor: int, currency: str) -> str:
    """123450 PHP -> '1234.50'; 1000 JPY -> '1000': the currency's exact exponent."""
    currency_code(currency)
    places = CURRENCIES[currency.upper()][1]
    if not places:
        return str(minor)
    whole, fraction = divmod(minor, 10 ** places)
    return f"{whole}.{fraction:0{places}d}"


def minor_amount(text: str | None, currency: str | None) -> int | None:
    """'1234.50' PHP -> 123450; None when it is no exact amount of that currency."""
    match = MAJOR_AMOUNT.fullmatch((text or "").strip())
    if match is None or currency not in CURRENCIES:
        return None
    places = CURRENCIES[currency][1]
    fraction = (match.group(2) or "").rstrip("0")
    if len(fraction) > places:
        return None
    return int(match.group(1)) * 10 ** places + int(fraction.ljust(places, "0") or 0)


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
    raw: dict = {"records": mine}
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


class PesoPayGateway(Gateway):
    name = "pesopay"
    display_name = "PesoPay"
    credential_fields = (
        CredentialField("merchant_id", "Merchant ID"),
        CredentialField("secure_hash_secret", "Secure hash secret", secret=True,
                        help="Profile → Account Information in PesoPay's merchant admin. "
                             "Set its Return Value Link (Datafeed) to the webhook URL above."),
        CredentialField("hash_function", "Secure hash function", required=False,
                        choices=tuple(HASH_FUNCTIONS),
                        help="SHA-1 unless AsiaPay set your account to SHA-256 or SHA-512."),
        CredentialField("api_login_id", "Merchant API login ID",
                        help="An API user of the merchant admin, for status checks and refunds."),
        CredentialField("api_password", "Merchant API password", secret=True),
    )
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND})
    default_api_base = "https://www.pesopay.com/b2c2/eng"
    sandbox_api_base = "https://test.pesopay.com/b2cDemo/eng"
    webhook_ack = ("OK", "text/plain")  # AsiaPay wants the datafeed answered with the text OK

    def __init__(self, credentials, *, api_base=None, timeout=(5.0, 20.0), webhook_url=""):
        super().__init__(credentials, api_base=api_base, timeout=timeout,
                         webhook_url=webhook_url)
        self.hash_function = self.credentials.get("hash_function") or DEFAULT_HASH_FUNCTION
        if self.hash_function not in HASH_FUNCTIONS:
            raise GatewayError(f"PesoPay: unknown hash function {self.hash_function!r}",
                               code="not_configured")
        self.http = HttpClient(self.api_base, timeout=timeout, error_class=GatewayError)

    @classmethod
    def extract_reference(cls, headers, raw_body):
        reference = parse_form(raw_body).get("Ref")
        if not reference:
            raise MalformedPayload("the datafeed has no Ref")
        return reference

    @classmethod
    def extract_transaction_id(cls, headers, raw_body):
        return parse_form(raw_body).get("PayRef") or None

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        fields = payment_form_fields(request, self.credentials["merchant_id"],
                                     self.credentials["secure_hash_secret"], self.hash_function)
        action = self.api_base + PAY_FORM_PATH
        return Checkout(checkout_id=request.reference, form=HostedForm(action, fields),
                        raw={"action": action, "fields": fields})

    def parse_webhook(self, headers, raw_body):
        fields = parse_form(raw_body)
        verify_datafeed(fields, self.credentials["secure_hash_secret"], self.hash_function)
        return datafeed_event(fields)

    def _api(self, action: str, fields: Mapping[str, str]) -> str:
        """One merchant API call; an answer AsiaPay marks as refused raises its own words."""
        data = {"merchantId": self.credentials["merchant_id"],
                "loginId": self.credentials["api_login_id"],
                "password": self.credentials["api_password"], "actionType": action, **fields}
        response = self.http.request("POST", API_PATH, data=data)
        if response.status_code >= 400:
            raise GatewayError(f"PesoPay's merchant API answered HTTP {response.status_code}.",
                               code="gateway_error", retryable=response.status_code >= 500,
                               http_status=response.status_code, raw=response.text[:500])
        text = response.text
        if not text.lstrip().startswith("<"):
            answer = api_answer(text)
            if answer.get("resultCode") == API_REFUSED:
                message = " ".join(answer.get("errMsg", "").split()) or "the request was refused"
                raise GatewayError(f"PesoPay: {message}", code="refused", raw=answer)
        return text

    def fetch_status(self, reference, checkout_id=None):
        text = self._api("Query", {"orderRef": reference})
        if not text.lstrip().startswith("<"):
            raise GatewayError("PesoPay answered the status query with no records.",
                               code="gateway_error", retryable=True, raw=text[:500])
        return query_event(query_records(text), reference)

    def refund(self, request: RefundRequest) -> RefundResult:
        """`RequestRefund` carries no idempotency key, so a call that may have arrived is never
        repeated: its refund stays pending for staff to check in PesoPay's merchant admin."""
        if not request.transaction_id:
            raise GatewayError("PesoPay: this payment has no PayRef to refund",
                               code="no_transaction")
        refund_id = f"{request.transaction_id}/{request.idempotency_key.removeprefix('refund-')}"
        fields = {"payRef": request.transaction_id,
                  "amount": major_amount(request.amount, request.currency)}
        try:
            text = self._api("RequestRefund", fields)
        except GatewayError as exc:
            if exc.code == "refused" or never_sent(exc) or (exc.http_status or 500) < 500:
                raise
            return RefundResult(refund_id=refund_id, status=EventStatus.PENDING,
                                amount=request.amount, raw={"unconfirmed": (
                                    f"{exc.message} The refund may or may not have been made: "
                                    "check it in PesoPay's merchant admin.")})
        answer = api_answer(text)
        if "resultCode" not in answer:
            return RefundResult(refund_id=refund_id, status=EventStatus.PENDING,
                                amount=request.amount, raw={"unconfirmed": text[:500]})
        status = lookup_status({API_OK: EventStatus.REFUND_SUCCEEDED}, answer["resultCode"])
        return RefundResult(refund_id=refund_id, status=status, amount=request.amount,
                            raw=answer)

    def test_connection(self) -> str:
        query_records(self._api("Query", {"orderRef": "portal-connection-test"}))
        return ("Connected to PesoPay's merchant API. The secure hash secret is checked by the "
                "first datafeed.")
