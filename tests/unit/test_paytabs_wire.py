"""PayTabs' wire format in pure functions: signatures, amounts, request bodies, events."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from gateways.base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    IgnoredEvent,
    MalformedPayload,
    RefundRequest,
    SavedMethod,
    SavedMethodCharge,
    SignatureError,
    UnknownStatus,
)
from gateways.paytabs import PayTabsGateway, wire
from tests.fakes import paytabs_fake

# gateways.md §5 "Vectors" (fictitious server key; re-computed from the PHP SDK's algorithm).
VECTOR_KEY = "SJNXXXXXXX-XXXXXXXXXX-XXXXXXXXXX"
VECTOR_RETURN = {"acquirerMessage": "", "acquirerRRN": "", "cartId": "cart_11111",
                 "customerEmail": "email@domain.com", "respCode": "G77803",
                 "respMessage": "Authorised", "respStatus": "A", "token": "",
                 "tranRef": "TST2028600000001"}
VECTOR_RETURN_STRING = ("cartId=cart_11111&customerEmail=email%40domain.com&respCode=G77803"
                        "&respMessage=Authorised&respStatus=A&tranRef=TST2028600000001")
VECTOR_RETURN_SIGNATURE = "aed4972f95a1404f9e595457a722abc780ee74dc091ebd28afa0227b476579b7"
VECTOR_IPN = (b'{"tran_ref":"TST2028600000001","cart_id":"cart_11111",'
              b'"payment_result":{"response_status":"A"}}')
VECTOR_IPN_SIGNATURE = "5f55414625a34337eb23f535476b99fa03938b86f258e21d0fd4e5476f728584"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_return_signature_vector_from_the_reference():
    assert wire.return_signing_string(VECTOR_RETURN) == VECTOR_RETURN_STRING
    assert wire.sign_return(VECTOR_KEY, VECTOR_RETURN) == VECTOR_RETURN_SIGNATURE
    wire.verify_return_signature(VECTOR_KEY, {**VECTOR_RETURN,
                                              "signature": VECTOR_RETURN_SIGNATURE})
    # the fake signs independently and agrees
    assert paytabs_fake.sign_return(VECTOR_KEY, VECTOR_RETURN) == VECTOR_RETURN_SIGNATURE


def test_ipn_signature_vector_from_the_reference():
    assert wire.sign_ipn(VECTOR_KEY, VECTOR_IPN) == VECTOR_IPN_SIGNATURE
    wire.verify_ipn_signature(VECTOR_KEY, VECTOR_IPN, VECTOR_IPN_SIGNATURE)
    assert paytabs_fake.sign_ipn(VECTOR_KEY, VECTOR_IPN) == VECTOR_IPN_SIGNATURE


@pytest.mark.parametrize("field, value", [("respStatus", "D"), ("cartId", "cart_22222"),
                                          ("tranRef", "TST2028600000002"),
                                          ("respMessage", "Authorised ")])
def test_a_tampered_return_field_is_refused(field, value):
    posted = {**VECTOR_RETURN, "signature": VECTOR_RETURN_SIGNATURE, field: value}
    with pytest.raises(SignatureError):
        wire.verify_return_signature(VECTOR_KEY, posted)


def test_return_signature_rules():
    signed = {**VECTOR_RETURN, "signature": VECTOR_RETURN_SIGNATURE}
    for posted in ({**signed, "injected": "x"},  # an added field
                   {**signed, "signature": VECTOR_RETURN_SIGNATURE.upper()},
                   {**signed, "signature": ""}, VECTOR_RETURN):
        with pytest.raises(SignatureError):
            wire.verify_return_signature(VECTOR_KEY, posted)
    with pytest.raises(SignatureError):
        wire.verify_return_signature("another-server-key", signed)
    # our own `ref` on the return URL and empty fields are not part of what PayTabs signs
    wire.verify_return_signature(VECTOR_KEY, {**signed, "ref": "pay_abc", "extra": ""})
    # "0" is a value, not an empty field; order does not matter
    with_zero = {**VECTOR_RETURN, "acquirerRRN": "0"}
    assert "acquirerRRN=0&" in wire.return_signing_string(with_zero)
    reordered = dict(reversed(list(with_zero.items())))
    assert wire.sign_return(VECTOR_KEY, reordered) == wire.sign_return(VECTOR_KEY, with_zero)


def test_return_encoding_is_phps_http_build_query():
    fields = {"respMessage": "Not ok ~ *done*/é", "b": "x+y=z&w"}
    assert wire.return_signing_string(fields) == (
        "b=x%2By%3Dz%26w&respMessage=Not+ok+%7E+%2Adone%2A%2F%C3%A9")
    assert wire.sign_return("k", fields) == paytabs_fake.sign_return("k", fields)


def test_ipn_signature_checks():
    good = wire.sign_ipn(VECTOR_KEY, VECTOR_IPN)
    other = wire.sign_ipn("other", VECTOR_IPN)
    for body, header in ((VECTOR_IPN + b" ", good), (VECTOR_IPN, other), (VECTOR_IPN, ""),
                         (VECTOR_IPN, None), (VECTOR_IPN, good.upper())):
        with pytest.raises(SignatureError):
            wire.verify_ipn_signature(VECTOR_KEY, body, header)


@pytest.mark.parametrize("minor, currency, text", [
    (12345, "KWD", "12.345"), (1, "BHD", "0.001"), (500000, "OMR", "500.000"),
    (123450, "INR", "1234.50"), (1500, "JPY", "1500"), (5, "AED", "0.05"),
    (1000, "jod", "1.000")])
def test_major_amounts_have_exactly_the_currencys_decimals(minor, currency, text):
    assert wire.major_amount(minor, currency) == text
    assert wire.minor_amount(text, currency) == minor


def test_amounts_are_parsed_exactly_and_never_rounded():
    assert wire.minor_amount("12.3", "KWD") == 12300
    assert wire.minor_amount("500.00", "JPY") == 500
    assert wire.minor_amount(100, "AED") == 10000
    assert wire.minor_amount("690.00", "SAR") == 69000
    for value, currency in (("12.3456", "KWD"), ("12.5", "JPY"), ("0.001", "AED"),
                            ("abc", "AED"), ("NaN", "AED"), (True, "AED"), (None, "AED"),
                            (12.345, "KWD")):
        with pytest.raises(MalformedPayload):
            wire.minor_amount(value, currency)
    with pytest.raises(GatewayError) as caught:
        wire.major_amount(100, "CHF")
    assert caught.value.code == "unsupported_currency"


def test_cart_amount_is_sent_as_an_exact_json_number():
    body = {"profile_id": 1, "cart_amount": "12.345", "cart_description": "12.345"}
    encoded = wire.encode_body(body)
    assert encoded == b'{"profile_id":1,"cart_amount":12.345,"cart_description":"12.345"}'
    assert wire.encode_body({"profile_id": 1, "cart_amount": "1500"}) == \
        b'{"profile_id":1,"cart_amount":1500}'
    assert wire.encode_body({"profile_id": 1, "tran_ref": "T"}) == \
        b'{"profile_id":1,"tran_ref":"T"}'
    with pytest.raises(ValueError):
        wire.encode_body({"cart_amount": "1e3"})


def checkout_request(**overrides) -> CheckoutRequest:
    fields = dict(
        reference="pay_abc", amount=12345, currency="KWD", description="CBC",
        bill_reference="B-7", merchant_name="Acme Diagnostics",
        return_url="https://portal.example/pay/tok/return?ref=pay_abc",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/paytabs",
        expires_at=NOW + timedelta(hours=72), idempotency_key="checkout-pay_abc",
        customer_name="Asha Rao", customer_email="asha@example.com",
        customer_phone="+96550000000")
    return CheckoutRequest(**{**fields, **overrides})


def test_payment_request_is_built_from_our_payment():
    assert wire.payment_request(47170, checkout_request(),
                                "https://portal.example/payments/webhook/paytabs") == {
        "profile_id": 47170, "tran_type": "sale", "tran_class": "ecom", "cart_id": "pay_abc",
        "cart_currency": "KWD", "cart_amount": "12.345",
        "cart_description": "Acme Diagnostics: bill B-7", "hide_shipping": True,
        "return": "https://portal.example/pay/tok/return?ref=pay_abc",
        "callback": "https://portal.example/payments/webhook/paytabs",
        "customer_details": {"name": "Asha Rao", "email": "asha@example.com",
                             "phone": "+96550000000"},
    }
    saving = wire.payment_request(47170, checkout_request(save_method=True, customer_phone="",
                                                          customer_email=""), "cb")
    assert saving["tokenise"] == 2 and saving["show_save_card"] is False
    assert saving["customer_details"] == {"name": "Asha Rao"}
    anonymous = wire.payment_request(47170, checkout_request(customer_name="", customer_email="",
                                                             customer_phone=""), "cb")
    assert "customer_details" not in anonymous and "tokenise" not in anonymous


def test_refund_and_recurring_requests():
    refund = RefundRequest(reference="pay_abc", transaction_id="TST2623802990085", amount=2345,
                           currency="KWD", reason="", idempotency_key="refund-rfd_123")
    assert wire.refund_request(47170, refund) == {
        "profile_id": 47170, "tran_type": "refund", "tran_class": "ecom",
        "tran_ref": "TST2623802990085", "cart_id": "rfd_123", "cart_currency": "KWD",
        "cart_amount": "2.345", "cart_description": "Refund of pay_abc"}
    method = SavedMethod(gateway_customer_id="TST2623802990085",
                         token="2C4656BF67A3E43DC6BE93FE66857CBD")
    charge = SavedMethodCharge(reference="pay_next", amount=70000, currency="SAR",
                               description="Acme Diagnostics: bill B-8", method=method,
                               idempotency_key="charge-pay_next")
    assert wire.recurring_request(47170, charge) == {
        "profile_id": 47170, "tran_type": "sale", "tran_class": "recurring",
        "cart_id": "pay_next", "cart_currency": "SAR", "cart_amount": "700.00",
        "cart_description": "Acme Diagnostics: bill B-8",
        "token": "2C4656BF67A3E43DC6BE93FE66857CBD", "tran_ref": "TST2623802990085"}


def ipn(**changes) -> dict:
    body = {
        "tran_ref": "TST2623802990085", "merchant_id": 2550, "profile_id": 47170,
        "cart_id": "pay_abc", "cart_description": "Acme Diagnostics: bill B-7",
        "cart_currency": "KWD", "cart_amount": "12.345", "tran_currency": "KWD",
        "tran_total": "12.345", "tran_type": "Sale", "tran_class": "ECom",
        "payment_result": {"response_status": "A", "response_code": "G33093",
                           "response_message": "Authorised",
                           "transaction_time": "2026-08-26T08:31:33Z"},
        "payment_info": {"payment_method": "Visa", "card_type": "Credit", "card_scheme": "Visa",
                         "payment_description": "4111 11## #### 1111", "expiryMonth": 11,
                         "expiryYear": 2033}}
    return {**body, **changes}


def result(letter: str, message: str = "Authorised") -> dict:
    return {"response_status": letter, "response_code": "G1", "response_message": message}


def test_status_table_only_A_is_success():
    assert {letter: wire.status_of(wire.PAYMENT_STATUS, letter) for letter in "AHPVEDXC"} == {
        "A": EventStatus.SUCCEEDED, "H": EventStatus.PENDING, "P": EventStatus.PENDING,
        "V": EventStatus.FAILED, "E": EventStatus.FAILED, "D": EventStatus.FAILED,
        "X": EventStatus.FAILED, "C": EventStatus.FAILED}
    assert wire.status_of(wire.REFUND_STATUS, "A") == EventStatus.REFUND_SUCCEEDED
    assert wire.status_of(wire.REFUND_STATUS, "P") == EventStatus.PENDING
    assert wire.status_of(wire.REFUND_STATUS, "E") == EventStatus.REFUND_FAILED
    for unknown in ("Z", "", None, "AA"):
        with pytest.raises(UnknownStatus):
            wire.status_of(wire.PAYMENT_STATUS, unknown)


def test_a_sale_ipn_becomes_our_event():
    event = wire.transaction_event(ipn(), dedupe=True)
    assert (event.status, event.reference, event.amount, event.currency) == (
        EventStatus.SUCCEEDED, "pay_abc", 12345, "KWD")
    assert event.transaction_id == "TST2623802990085" and event.refund_id is None
    assert (event.method, event.card_brand, event.card_last4) == ("card", "visa", "1111")
    assert event.dedupe_id == "TST2623802990085:sale:A" and event.type == "sale.A"
    assert event.occurred_at == datetime(2026, 8, 26, 8, 31, 33, tzinfo=UTC)

    declined = wire.transaction_event(ipn(payment_result=result("D", "Insufficient funds")),
                                      dedupe=True)
    assert declined.status == EventStatus.FAILED
    assert declined.raw["failure_message"] == "Insufficient funds"
    # a hold then its release on the same transaction are two facts; a replay is one
    held = wire.transaction_event(ipn(payment_result=result("H")), dedupe=True)
    assert held.status == EventStatus.PENDING and held.dedupe_id != event.dedupe_id
    assert wire.transaction_event(ipn(), dedupe=True).dedupe_id == event.dedupe_id
    assert wire.transaction_event(ipn(), dedupe=False).dedupe_id is None


def test_the_charged_total_counts_not_the_cart():
    discounted = wire.transaction_event(
        ipn(cart_currency="SAR", cart_amount="700.00", tran_currency="SAR",
            tran_total="690.00"), dedupe=True)
    assert (discounted.amount, discounted.currency) == (69000, "SAR")
    no_total = {k: v for k, v in ipn().items() if k not in ("tran_total", "tran_currency")}
    assert wire.transaction_event(no_total, dedupe=True).amount == 12345
    with pytest.raises(MalformedPayload):
        wire.transaction_event(ipn(tran_total="12.3456"), dedupe=True)


def test_refunds_and_voids_point_at_the_sale():
    refund = wire.transaction_event(ipn(tran_ref="TST2623802990099", tran_type="Refund",
                                        cart_id="rfd_123", tran_total="2.345",
                                        previous_tran_ref="TST2623802990085"), dedupe=True)
    assert (refund.status, refund.reference, refund.amount) == (
        EventStatus.REFUND_SUCCEEDED, "", 2345)
    assert refund.transaction_id == "TST2623802990085"
    assert (refund.refund_id, refund.refund_reference) == ("TST2623802990099", "rfd_123")
    void = wire.transaction_event(ipn(tran_type="Void", previous_tran_ref="TST1"), dedupe=True)
    assert void.status == EventStatus.REFUND_SUCCEEDED and void.refund_id == "TST2623802990085"


def test_events_we_do_not_use_and_unknown_ones():
    with pytest.raises(IgnoredEvent):
        wire.transaction_event(ipn(tran_type="Capture"), dedupe=True)
    with pytest.raises(UnknownStatus):
        wire.transaction_event(ipn(tran_type="Chargeback"), dedupe=True)
    with pytest.raises(UnknownStatus):
        wire.transaction_event(ipn(payment_result=result("Q")), dedupe=True)
    with pytest.raises(MalformedPayload):
        wire.transaction_event(ipn(payment_result=None), dedupe=True)


def test_reference_read_before_verification():
    raw = json.dumps(ipn()).encode()
    assert PayTabsGateway.extract_reference({}, raw) == "pay_abc"
    refund = json.dumps(ipn(tran_type="Refund", cart_id="rfd_1",
                            previous_tran_ref="TST2623802990085")).encode()
    assert PayTabsGateway.extract_reference({}, refund) == ""
    assert PayTabsGateway.extract_transaction_id({}, refund) == "TST2623802990085"
    with pytest.raises(IgnoredEvent):
        PayTabsGateway.extract_reference({}, json.dumps(ipn(tran_type="Auth")).encode())
    for malformed in (b"", b"[]", b"{not json", b'{"tran_ref": 1, "tran_type": "Sale"}'):
        with pytest.raises(MalformedPayload):
            PayTabsGateway.extract_reference({}, malformed)


def test_parse_webhook_checks_signature_and_profile():
    gateway = PayTabsGateway({"profile_id": "47170", "server_key": VECTOR_KEY, "region": "KWT"})
    raw = json.dumps(ipn(), separators=(",", ":")).encode()
    event = gateway.parse_webhook({"signature": wire.sign_ipn(VECTOR_KEY, raw)}, raw)
    assert event.status == EventStatus.SUCCEEDED
    with pytest.raises(SignatureError):
        gateway.parse_webhook({"Signature": wire.sign_ipn("other-key", raw)}, raw)
    other_profile = json.dumps(ipn(profile_id=99999)).encode()
    with pytest.raises(SignatureError):
        gateway.parse_webhook({"Signature": wire.sign_ipn(VECTOR_KEY, other_profile)},
                              other_profile)


def test_region_decides_the_host_unless_overridden():
    credentials = {"profile_id": "47170", "server_key": VECTOR_KEY, "region": "KWT"}
    assert PayTabsGateway(credentials).api_base == "https://secure-kuwait.paytabs.com"
    assert PayTabsGateway({**credentials, "region": "SAU"}).api_base == \
        "https://secure.paytabs.sa"
    assert PayTabsGateway(credentials, api_base="http://127.0.0.1:9/").api_base == \
        "http://127.0.0.1:9"
    region = next(f for f in PayTabsGateway.credential_fields if f.name == "region")
    assert region.choices == ("ARE", "SAU", "OMN", "JOR", "EGY", "KWT", "QAT", "IRQ", "MAR",
                              "GLOBAL")
    assert [f.name for f in PayTabsGateway.credential_fields] == [
        "profile_id", "server_key", "region"]
    assert [f.name for f in PayTabsGateway.credential_fields if f.secret] == ["server_key"]
    for bad in ({**credentials, "region": "XYZ"}, {**credentials, "profile_id": "abc"},
                {**credentials, "server_key": ""}):
        with pytest.raises(GatewayError) as caught:
            PayTabsGateway(bad)
        assert caught.value.code == "not_configured"
    assert VECTOR_KEY not in repr(PayTabsGateway(credentials))


def test_paytabs_refusals_become_clear_errors():
    auth = wire.api_failure(401, {"code": 1, "message": "Authentication failed. Check "
                                  "authentication header.", "trace": "PMNT0402.1"})
    assert auth.code == "bad_credentials" and not auth.retryable
    assert auth.message == ("PayTabs: Authentication failed. Check authentication header. "
                            "(code 1)")
    assert wire.api_failure(409, {"code": 4, "message": "Duplicate Request"}).code == "duplicate"
    assert wire.api_failure(200, {"code": 112, "message": "Method/Class/Currency combination "
                                  "not supported"}).http_status == 200
    assert wire.api_failure(503, {"message": "busy"}).retryable
    assert wire.api_failure(200, {"code": 0, "message": "success"}) is None
    assert wire.api_failure(200, {"tran_ref": "TST1"}) is None
