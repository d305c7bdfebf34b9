"""PesoPay (AsiaPay): a hosted form the patient's browser posts, a signed datafeed, and the
merchant API (`orderApi.jsp`) for status and refunds. Plain HTTP: AsiaPay publishes no SDK.

The wire format lives in `wire.py`; protocol notes in docs/gateways/pesopay.md. The API base is
the brand's `/eng` folder; PayDollar and SiamPay use the same paths.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..base import (
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
    lookup_status,
)
from . import wire


class PesoPayGateway(Gateway):
    name = "pesopay"
    display_name = "PesoPay"
    credential_fields = (
        CredentialField("merchant_id", "Merchant ID"),
        CredentialField("secure_hash_secret", "Secure hash secret", secret=True,
                        help="Profile → Account Information in PesoPay's merchant admin. "
                             "Set its Return Value Link (Datafeed) to the webhook URL above."),
        CredentialField("hash_function", "Secure hash function", required=False,
                        choices=tuple(wire.HASH_FUNCTIONS),
                        help="SHA-1 unless AsiaPay set your account to SHA-256 or SHA-512."),
        CredentialField("api_login_id", "Merchant API login ID",
                        help="An API user of the merchant admin, for status checks and refunds."),
        CredentialField("api_password", "Merchant API password", secret=True),
    )
    capabilities = frozenset({Capability.REFUND, Capability.PARTIAL_REFUND})
    default_api_base = "https://www.pesopay.com/b2c2/eng"
    sandbox_api_base = "https://test.pesopay.com/b2cDemo/eng"
    webhook_ack = ("OK", "text/plain")  # AsiaPay wants the datafeed answered with the text OK

    def configure(self) -> None:
        self.hash_function = self.credentials.get("hash_function") or wire.DEFAULT_HASH_FUNCTION
        if self.hash_function not in wire.HASH_FUNCTIONS:
            raise GatewayError(f"PesoPay: unknown hash function {self.hash_function!r}",
                               code="not_configured")

    @classmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        reference = wire.parse_form(raw_body).get("Ref")
        if not reference:
            raise MalformedPayload("the datafeed has no Ref")
        return reference

    @classmethod
    def extract_transaction_id(cls, headers: Mapping[str, str], raw_body: bytes) -> str | None:
        return wire.parse_form(raw_body).get("PayRef") or None

    def create_checkout(self, request: CheckoutRequest) -> Checkout:
        fields = wire.payment_form_fields(request, self.credentials["merchant_id"],
                                     self.credentials["secure_hash_secret"], self.hash_function)
        action = self.api_base + wire.PAY_FORM_PATH
        return Checkout(checkout_id=request.reference, form=HostedForm(action, fields),
                        raw={"action": action, "fields": fields})

    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent:
        fields = wire.parse_form(raw_body)
        wire.verify_datafeed(fields, self.credentials["secure_hash_secret"], self.hash_function)
        return wire.datafeed_event(fields)

    def _api(self, action: str, fields: Mapping[str, str]) -> str:
        """One merchant API call; an answer AsiaPay marks as refused raises its own words."""
        data = {"merchantId": self.credentials["merchant_id"],
                "loginId": self.credentials["api_login_id"],
                "password": self.credentials["api_password"], "actionType": action, **fields}
        response = self.http.request("POST", wire.API_PATH, data=data)
        if response.status_code >= 400:
            raise GatewayError(f"PesoPay's merchant API answered HTTP {response.status_code}.",
                               code="gateway_error", retryable=response.status_code >= 500,
                               http_status=response.status_code, raw=response.text[:500])
        text = response.text
        if not text.lstrip().startswith("<"):
            answer = wire.api_answer(text)
            if answer.get("resultCode") == wire.API_REFUSED:
                message = " ".join(answer.get("errMsg", "").split()) or "the request was refused"
                raise GatewayError(f"PesoPay: {message}", code="refused", raw=answer)
        return text

    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent:
        text = self._api("Query", {"orderRef": reference})
        if not text.lstrip().startswith("<"):
            raise GatewayError("PesoPay answered the status query with no records.",
                               code="gateway_error", retryable=True, raw=text[:500])
        return wire.query_event(wire.query_records(text), reference)

    def refund(self, request: RefundRequest) -> RefundResult:
        """`RequestRefund` carries no idempotency key, so a call that may have arrived is never
        repeated: its refund stays pending for staff to check in PesoPay's merchant admin."""
        if not request.transaction_id:
            raise GatewayError("PesoPay: this payment has no PayRef to refund",
                               code="no_transaction")
        refund_id = f"{request.transaction_id}/{request.idempotency_key.removeprefix('refund-')}"
        fields = {"payRef": request.transaction_id,
                  "amount": wire.major_amount(request.amount, request.currency)}
        try:
            text = self._api("RequestRefund", fields)
        except GatewayError as exc:
            if exc.code == "refused" or wire.never_sent(exc) or (exc.http_status or 500) < 500:
                raise
            return RefundResult(refund_id=refund_id, status=EventStatus.PENDING,
                                amount=request.amount, raw={"unconfirmed": (
                                    f"{exc.message} The refund may or may not have been made: "
                                    "check it in PesoPay's merchant admin.")})
        answer = wire.api_answer(text)
        if "resultCode" not in answer:
            return RefundResult(refund_id=refund_id, status=EventStatus.PENDING,
                                amount=request.amount, raw={"unconfirmed": text[:500]})
        status = lookup_status({wire.API_OK: EventStatus.REFUND_SUCCEEDED}, answer["resultCode"])
        return RefundResult(refund_id=refund_id, status=status, amount=request.amount,
                            raw=answer)

    def test_connection(self) -> str:
        wire.query_records(self._api("Query", {"orderRef": "portal-connection-test"}))
        return ("Connected to PesoPay's merchant API. The secure hash secret is checked by the "
                "first datafeed.")
