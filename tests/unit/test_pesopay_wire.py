"""PesoPay's wire format in pure functions: the form and its secureHash, the datafeed, the API."""

from datetime import UTC, datetime, timedelta

import pytest

from gateways.base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    MalformedPayload,
    SignatureError,
    UnknownStatus,
)
from gateways.pesopay import PesoPayGateway
from gateways.pesopay.wire import (
    api_answer,
    currency_alpha,
    datafeed_event,
    datafeed_hash,
    major_amount,
    minor_amount,
    parse_form,
    payment_form_fields,
    query_event,
    query_records,
    secure_hash,
    verify_datafeed,
)

# Published: Odoo addons/payment_asiapay/tests/common.py (gateways.md §7 "Vectors").
ODOO_SECRET = "coincoin_motherducker"
ODOO_DATAFEED = {"src": "dummy", "prc": "dummy", "successcode": "0", "Ref": "Test Transaction",
                 "PayRef": "dummy", "Cur": "EUR", "Amt": "1111.11", "payerAuth": "dummy"}
ODOO_SIGNATURE = "3e5bf55d9a23969130a6686db7aa4f0230956d0a"
# Computed in the reference from `18000000|ORDER-1001|608|1500.00|N|testsecret`.
FORM_SHA1 = "b0aed02d2f4a4657f12f64b125947ee75e6037a9"
FORM_SHA256 = "23527d7578dabc03c9f172a3be146b05403dc1329166608207251e022cd03121"
FORM_SHA512 = ("51761a011c50b94d357dff22ff1bea3d063af9a636e1afd921ada5ddbcd02533a03565fc9ede4040"
               "3a6c7d9f53de5c2f8af691db11e8cee73f885f5680e0ef20")
SECRET = "peso-secret-1"


def request(**overrides) -> CheckoutRequest:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    fields = dict(
        reference="ORDER-1001", amount=150000, currency="PHP", description="Bill B-7",
        bill_reference="B-7", merchant_name="Manila Diagnostics",
        return_url="https://portal.example/pay/tok/return?ref=ORDER-1001",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/pesopay",
        expires_at=now + timedelta(hours=3), idempotency_key="checkout-ORDER-1001")
    return CheckoutRequest(**{**fields, **overrides})


def signed(fields: dict, secret: str = SECRET, function: str = "SHA-1") -> dict:
    return {**fields, "secureHash": datafeed_hash(fields, secret, function)}


def feed(**overrides) -> dict:
    fields = {"src": "0", "prc": "0", "successcode": "0", "Ref": "pay_abc", "PayRef": "5000001",
              "Cur": "608", "Amt": "1234.50", "payerAuth": "Y", "payMethod": "VISA",
              "panLast4": "5005", "Holder": "Asha Rao"}
    return {**fields, **overrides}


def test_published_datafeed_vector_from_odoo():
    assert datafeed_hash(ODOO_DATAFEED, ODOO_SECRET, "SHA-1") == ODOO_SIGNATURE
    verify_datafeed({**ODOO_DATAFEED, "secureHash": ODOO_SIGNATURE}, ODOO_SECRET, "SHA-1")
    with pytest.raises(SignatureError):
        verify_datafeed({**ODOO_DATAFEED, "Amt": "1111.12", "secureHash": ODOO_SIGNATURE},
                        ODOO_SECRET, "SHA-1")


def test_form_vector_and_the_whole_form():
    assert payment_form_fields(request(), "18000000", "testsecret", "SHA-1") == {
        "merchantId": "18000000", "orderRef": "ORDER-1001", "currCode": "608",
        "amount": "1500.00", "payType": "N", "payMethod": "ALL", "lang": "E",
        "successUrl": "https://portal.example/pay/tok/return?ref=ORDER-1001",
        "failUrl": "https://portal.example/pay/tok/return?ref=ORDER-1001",
        "cancelUrl": "https://portal.example/pay/tok",
        "secureHash": FORM_SHA1,
    }


@pytest.mark.parametrize(("function", "digest"), [("SHA-1", FORM_SHA1),
                                                  ("SHA-256", FORM_SHA256),
                                                  ("SHA-512", FORM_SHA512)])
def test_the_hash_function_is_the_accounts_choice(function, digest):
    values = ["18000000", "ORDER-1001", "608", "1500.00", "N"]
    assert secure_hash(function, values, "testsecret") == digest
    assert payment_form_fields(request(), "18000000", "testsecret",
                               function)["secureHash"] == digest


def test_amounts_use_the_currencys_exact_exponent_and_numeric_code():
    assert major_amount(123450, "PHP") == "1234.50"
    assert major_amount(5, "HKD") == "0.05"
    assert major_amount(1000, "JPY") == "1000"
    yen = payment_form_fields(request(amount=1000, currency="JPY"), "1", "s", "SHA-1")
    assert (yen["amount"], yen["currCode"]) == ("1000", "392")
    assert payment_form_fields(request(currency="HKD"), "1", "s", "SHA-1")["currCode"] == "344"
    with pytest.raises(GatewayError) as caught:
        payment_form_fields(request(currency="BHD"), "1", "s", "SHA-1")
    assert caught.value.code == "unsupported_currency"
    with pytest.raises(GatewayError):
        payment_form_fields(request(reference="x" * 36), "1", "s", "SHA-1")


@pytest.mark.parametrize(("text", "currency", "expected"), [
    ("1234.50", "PHP", 123450), ("1234.5", "PHP", 123450), ("1234", "PHP", 123400),
    ("0.05", "PHP", 5), ("1000", "JPY", 1000), ("1000.00", "JPY", 1000),
    ("1234.567", "PHP", None), ("1000.5", "JPY", None), ("1,234.50", "PHP", None),
    ("-1.00", "PHP", None), ("", "PHP", None), (None, "PHP", None), ("1.00", None, None),
    ("1.00", "XXX", None),
])
def test_datafeed_amounts_are_read_exactly(text, currency, expected):
    assert minor_amount(text, currency) == expected


def test_currency_codes_both_ways():
    assert currency_alpha("608") == "PHP" and currency_alpha("036") == "AUD"
    assert currency_alpha("EUR") == "EUR"  # Odoo's vector sends the alpha code
    assert currency_alpha("999") is None and currency_alpha("") is None


def test_any_of_several_hashes_may_match_for_rotation():
    fields = feed()
    good = datafeed_hash(fields, SECRET, "SHA-1")
    old = datafeed_hash(fields, "old-secret", "SHA-1")
    verify_datafeed({**fields, "secureHash": f"{old},{good}"}, SECRET, "SHA-1")
    verify_datafeed({**fields, "secureHash": f"{good.upper()}"}, SECRET, "SHA-1")
    for header in (old, "", f"{old}, ,", "not-hex", good[:-1]):
        with pytest.raises(SignatureError):
            verify_datafeed({**fields, "secureHash": header}, SECRET, "SHA-1")
    with pytest.raises(SignatureError):
        verify_datafeed(fields, SECRET, "SHA-1")  # no secureHash at all
    with pytest.raises(SignatureError):  # signed with SHA-1, checked as SHA-256
        verify_datafeed({**fields, "secureHash": good}, SECRET, "SHA-256")


@pytest.mark.parametrize("field", ["src", "prc", "successcode", "Ref", "PayRef", "Cur", "Amt",
                                   "payerAuth"])
def test_every_signed_field_is_covered(field):
    fields = signed(feed())
    with pytest.raises(SignatureError):
        verify_datafeed({**fields, field: fields[field] + "1"}, SECRET, "SHA-1")
    verify_datafeed({**fields, "Holder": "Someone Else"}, SECRET, "SHA-1")  # not signed


def test_form_bodies_are_parsed_strictly():
    assert parse_form(b"Ref=pay_1&Amt=1.00&remark=") == {"Ref": "pay_1", "Amt": "1.00",
                                                         "remark": ""}
    assert parse_form(b"Holder=Jos%C3%A9&Ref=pay_1")["Holder"] == "José"
    assert parse_form(b"Holder=Jos\xe9&Ref=pay_1")["Ref"] == "pay_1"
    for body in (b"Amt=1.00&Amt=100.00", b"garbage"):
        with pytest.raises(MalformedPayload):
            parse_form(body)
    assert parse_form(b"") == {}


def test_an_accepted_datafeed_becomes_a_succeeded_event():
    event = datafeed_event(feed())
    assert (event.status, event.reference, event.amount, event.currency) == (
        EventStatus.SUCCEEDED, "pay_abc", 123450, "PHP")
    assert event.dedupe_id == "5000001:0" and event.transaction_id == "5000001"
    assert (event.method, event.card_brand, event.card_last4) == ("VISA", "VISA", "5005")
    assert event.type == "datafeed.accepted"


def test_a_rejected_datafeed_fails_with_the_banks_codes():
    event = datafeed_event(feed(successcode="1", prc="1", src="1"))
    assert event.status == EventStatus.FAILED and event.dedupe_id == "5000001:1"
    assert event.raw["failure_message"] == "Declined by the bank (response codes 1/1)."


def test_unknown_codes_raise_instead_of_defaulting():
    for fields in (feed(successcode="2"), feed(successcode=""), feed(prc="5")):
        with pytest.raises(UnknownStatus):
            datafeed_event(fields)
    with pytest.raises(UnknownStatus):  # Odoo's vector: prc/src are "dummy", not 0
        datafeed_event(ODOO_DATAFEED)
    for fields in (feed(PayRef=""), feed(Ref="")):
        with pytest.raises(MalformedPayload):
            datafeed_event(fields)


def test_mismatching_money_is_reported_as_sent():
    assert datafeed_event(feed(Amt="1.00")).amount == 100
    assert datafeed_event(feed(Amt="12.345")).amount is None
    assert datafeed_event(feed(Cur="840")).currency == "USD"
    unknown = datafeed_event(feed(Cur="999"))
    assert (unknown.currency, unknown.amount) == ("999", None)


QUERY = """<?xml version="1.0" encoding="UTF-8"?><records>
<record><orderStatus>Rejected</orderStatus><ref>pay_abc</ref><payRef>5000001</payRef>
<amt>1234.50</amt><cur>608</cur></record>
<record><orderStatus>Accepted</orderStatus><ref>pay_abc</ref><payRef>5000002</payRef>
<amt>1234.50</amt><cur>608</cur><payMethod>VISA</payMethod></record></records>"""


def test_query_records_prefer_a_captured_attempt_over_a_failed_one():
    records = query_records(QUERY)
    assert [r["payRef"] for r in records] == ["5000001", "5000002"]
    event = query_event(records, "pay_abc")
    assert (event.status, event.amount, event.currency, event.transaction_id) == (
        EventStatus.SUCCEEDED, 123450, "PHP", "5000002")
    assert event.type == "query.Accepted" and event.dedupe_id is None
    failed = query_event(records[:1], "pay_abc")
    assert failed.status == EventStatus.FAILED
    assert failed.raw["failure_message"] == "PesoPay reports the payment Rejected."


def test_query_without_records_is_pending_and_unknown_statuses_raise():
    empty = query_event(query_records("<records></records>"), "pay_abc")
    assert (empty.status, empty.amount) == (EventStatus.PENDING, None)
    odd = query_records(QUERY.replace("Accepted", "Teleported"))
    with pytest.raises(UnknownStatus):
        query_event(odd, "pay_abc")
    other = query_records(QUERY.replace("pay_abc", "pay_other"))
    assert query_event(other, "pay_abc").status == EventStatus.PENDING
    for text in ("resultCode=0", "<records><record>", "<!DOCTYPE x [<!ENTITY a 'b'>]><r/>"):
        with pytest.raises(GatewayError):
            query_records(text)


def test_api_answers():
    assert api_answer("resultCode=-1&errMsg=Authentication+Failed\r\n") == {
        "resultCode": "-1", "errMsg": "Authentication Failed"}
    assert api_answer("resultCode=0&orderStatus=Request+Refund&payRef=1")["orderStatus"] == (
        "Request Refund")


def test_declared_fields_and_answers():
    assert [f.name for f in PesoPayGateway.credential_fields] == [
        "merchant_id", "secure_hash_secret", "hash_function", "api_login_id", "api_password"]
    assert {f.name for f in PesoPayGateway.credential_fields if f.secret} == {
        "secure_hash_secret", "api_password"}
    hash_field = PesoPayGateway.credential_fields[2]
    assert hash_field.choices == ("SHA-1", "SHA-256", "SHA-512")  # SHA-1 first: the default
    assert PesoPayGateway.webhook_ack == ("OK", "text/plain")
    credentials = {"merchant_id": "1", "secure_hash_secret": "s", "api_login_id": "u",
                   "api_password": "p"}
    assert PesoPayGateway(credentials).hash_function == "SHA-1"
    assert PesoPayGateway.extract_reference({}, b"Ref=pay_abc&PayRef=1") == "pay_abc"
    assert PesoPayGateway.extract_transaction_id({}, b"Ref=&PayRef=77") == "77"
    with pytest.raises(MalformedPayload):
        PesoPayGateway.extract_reference({}, b"PayRef=1")
    with pytest.raises(GatewayError):
        PesoPayGateway({**credentials, "hash_function": "MD5"})
    assert "peso-secret" not in repr(PesoPayGateway({**credentials,
                                                     "secure_hash_secret": "peso-secret"}))


def test_checkout_is_a_form_posted_to_payform():
    gateway = PesoPayGateway({"merchant_id": "18000000", "secure_hash_secret": "testsecret",
                              "api_login_id": "u", "api_password": "p"},
                             api_base="https://test.pesopay.com/b2cDemo/eng/")
    checkout = gateway.create_checkout(request())
    assert checkout.redirect_url is None and checkout.checkout_id == "ORDER-1001"
    assert checkout.form.action == "https://test.pesopay.com/b2cDemo/eng/payment/payForm.jsp"
    assert checkout.form.fields["secureHash"] == FORM_SHA1
    assert PesoPayGateway.default_api_base == "https://www.pesopay.com/b2c2/eng"
