"""PhonePe PG v1's wire format in pure functions: X-VERIFY vectors, payloads, callbacks, codes."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from gateways.base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    MalformedPayload,
    RefundRequest,
    SignatureError,
    UnknownStatus,
)
from gateways.phonepe_v1 import PhonePeV1Gateway
from gateways.phonepe_v1.wire import (
    checksum,
    decode_response,
    encode_payload,
    indian_mobile,
    pay_payload,
    payment_event,
    polling_schedule,
    refund_event,
    refund_payload,
    refund_transaction_id,
    split_transaction_id,
    status_path,
    verify_callback,
)

# The public UAT credentials and the vectors of ../shared/reference/gateways.md §3.
UAT_SALT = "099eb0cd-02cf-4e2a-8aca-3e6c6aff0399"
STATUS_VECTOR = "95c6d60f014b7190aa417083aca2489bb5b0a729d0421c17dea19f5913e6d741###1"
PAY_JSON = ('{"merchantId":"PGTESTPAYUAT","merchantTransactionId":"MT7850590068188104",'
            '"merchantUserId":"MUID123","amount":10000,"redirectUrl":"https://example.com/return",'
            '"redirectMode":"POST","callbackUrl":"https://example.com/callback",'
            '"paymentInstrument":{"type":"PAY_PAGE"}}')
PAY_VECTOR = "0f6216eb28e9d066f900e184a766e2f7016dd02259228f95a4433e25e538fab5###1"
# PhonePe's own sample callback (python/php callback-verification pages); its salt is not
# published, so under the UAT salt only our own recomputation (made here) verifies it.
SAMPLE_RESPONSE = (
    "eyJzdWNjZXNzIjpmYWxzZSwiY29kZSI6IlBBWU1FTlRfRVJST1IiLCJtZXNzYWdlIjoiUGF5bWVudCBGYWlsZWQiLCJk"
    "YXRhIjp7Im1lcmNoYW50SWQiOiJtZXJjaGFudElkIiwibWVyY2hhbnRUcmFuc2FjdGlvbklkIjoibWVyY2hhbnRUcmFu"
    "c2FjdGlvbklkIiwidHJhbnNhY3Rpb25JZCI6IkZUWDIzMDYwMTE1NDMxOTU3MTYzMjM5IiwiYW1vdW50IjoxMDAsInN0"
    "YXRlIjoiRkFJTEVEIiwicmVzcG9uc2VDb2RlIjoiUkVRVUVTVF9ERUNMSU5FX0JZX1JFUVVFU1RFRSIsInBheW1lbnRJ"
    "bnN0cnVtZW50IjpudWxsfX0=")
SAMPLE_HEADER = "a005532637c6a6e4a4b08ebc6f1144384353305a9cd253d995067964427cd0bb###1"
SAMPLE_UNDER_UAT_SALT = "1d173c3d681ad08c4d49df259b511f2b243ac6b8314ad0741067cc24f1b4a33a###1"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
REFERENCE = "pay_0123456789abcdef01234567"


def test_status_and_pay_checksum_vectors_from_the_reference():
    path = status_path("PGTESTPAYUAT", "MT7850590068188104")
    assert path == "/pg/v1/status/PGTESTPAYUAT/MT7850590068188104"
    assert checksum(path, UAT_SALT, "1") == STATUS_VECTOR
    encoded = encode_payload(json.loads(PAY_JSON))
    assert base64.b64decode(encoded).decode() == PAY_JSON  # compact, in the given order
    assert checksum(encoded + "/pg/v1/pay", UAT_SALT, "1") == PAY_VECTOR
    assert checksum(encoded + "/pg/v1/pay", UAT_SALT, "2") == PAY_VECTOR[:-1] + "2"


def test_callback_checksum():
    verify_callback(SAMPLE_RESPONSE, SAMPLE_UNDER_UAT_SALT, UAT_SALT, "1")
    verify_callback(SAMPLE_RESPONSE, SAMPLE_UNDER_UAT_SALT.upper(), UAT_SALT, "1")
    with pytest.raises(SignatureError):  # PhonePe's sample was made with another salt
        verify_callback(SAMPLE_RESPONSE, SAMPLE_HEADER, UAT_SALT, "1")
    tampered = base64.b64encode(base64.b64decode(SAMPLE_RESPONSE).replace(
        b'"amount":100', b'"amount":900')).decode()
    for response, header, index in (
            (tampered, SAMPLE_UNDER_UAT_SALT, "1"),                   # body changed
            (SAMPLE_RESPONSE, SAMPLE_UNDER_UAT_SALT, "2"),            # not the lab's index
            (SAMPLE_RESPONSE, SAMPLE_UNDER_UAT_SALT[:-1] + "2", "1"),  # names another salt
            (SAMPLE_RESPONSE, SAMPLE_UNDER_UAT_SALT.split("###")[0], "1"),
            (SAMPLE_RESPONSE, "###1", "1"), (SAMPLE_RESPONSE, "", "1"),
            (SAMPLE_RESPONSE, None, "1")):
        with pytest.raises(SignatureError):
            verify_callback(response, header, UAT_SALT, index)


def test_callback_body_decoding():
    decoded = decode_response(SAMPLE_RESPONSE)
    assert (decoded["code"], decoded["data"]["state"], decoded["data"]["responseCode"]) == (
        "PAYMENT_ERROR", "FAILED", "REQUEST_DECLINE_BY_REQUESTEE")
    for bad in ("not base64!", base64.b64encode(b"[1]").decode(),
                base64.b64encode(b'{"data": {}}').decode()):
        with pytest.raises(MalformedPayload):
            decode_response(bad)


def request(**overrides) -> CheckoutRequest:
    fields = dict(
        reference=REFERENCE, amount=150000, currency="INR", description="Bill B-7",
        bill_reference="B-7", merchant_name="Acme Diagnostics",
        return_url=f"https://portal.example/pay/tok/return?ref={REFERENCE}",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/phonepe_v1",
        expires_at=NOW + timedelta(hours=3), idempotency_key=f"checkout-{REFERENCE}",
        customer_name="Asha Rao", customer_phone="+91 98765 43210")
    return CheckoutRequest(**{**fields, **overrides})


def test_pay_request():
    callback = "https://portal.example/payments/webhook/phonepe_v1"
    assert pay_payload(request(), "M1", callback) == {
        "merchantId": "M1",
        "merchantTransactionId": REFERENCE,
        "merchantUserId": REFERENCE,
        "amount": 150000,
        "redirectUrl": f"https://portal.example/pay/tok/return?ref={REFERENCE}",
        "redirectMode": "REDIRECT",
        "callbackUrl": callback,
        "mobileNumber": "9876543210",
        "paymentInstrument": {"type": "PAY_PAGE"},
    }
    assert "mobileNumber" not in pay_payload(request(customer_phone=""), "M1", callback)
    assert "mobileNumber" not in pay_payload(request(customer_phone="+44 20 7946 0000"), "M1",
                                             callback)


def test_indian_mobile_numbers_only():
    assert indian_mobile("+919876543210") == indian_mobile("09876543210"[1:]) == "9876543210"
    assert [indian_mobile(p) for p in ("", "12345", "+1 415 555 0100", "5876543210")] == [
        None] * 4


def test_checkout_refuses_what_phonepe_cannot_take_before_calling_it():
    gateway = PhonePeV1Gateway({"merchant_id": "M1", "salt_key": UAT_SALT, "salt_index": "1"},
                               api_base="http://127.0.0.1:9")  # nothing listens there
    for bad, code in ((request(currency="USD"), "unsupported_currency"),
                      (request(amount=99), "amount_too_small"),
                      (request(reference="pay/with/slashes"), "bad_reference"),
                      (request(reference="pay_1-ab3De"), "bad_reference")):
        with pytest.raises(GatewayError) as caught:
            gateway.create_checkout(bad)
        assert caught.value.code == code
    with pytest.raises(GatewayError) as caught:
        PhonePeV1Gateway({"merchant_id": "M1", "salt_key": UAT_SALT, "salt_index": "one"})
    assert caught.value.code == "not_configured"


def test_refund_transaction_ids_lead_back_to_the_payment():
    first = refund_transaction_id(REFERENCE, "refund-rfd_a")
    assert first == refund_transaction_id(REFERENCE, "refund-rfd_a")  # the same on a retry
    assert first != refund_transaction_id(REFERENCE, "refund-rfd_b")
    assert len(first) <= 34 and first.startswith(REFERENCE + "-")
    assert split_transaction_id(first) == (REFERENCE, True)
    assert split_transaction_id(REFERENCE) == (REFERENCE, False)
    with pytest.raises(GatewayError):
        refund_transaction_id("pay_" + "a" * 30, "refund-rfd_a")
    refund = RefundRequest(reference=REFERENCE, transaction_id="T1", amount=5000, currency="INR",
                           reason="", idempotency_key="refund-rfd_a")
    assert refund_payload(refund, "M1", first, "https://portal.example/cb") == {
        "merchantId": "M1", "originalTransactionId": REFERENCE, "merchantTransactionId": first,
        "amount": 5000, "callbackUrl": "https://portal.example/cb"}


def status(code: str, **data) -> dict:
    return {"success": code == "PAYMENT_SUCCESS", "code": code, "message": "m",
            "data": {"merchantId": "M1", "merchantTransactionId": REFERENCE,
                     "transactionId": "T22", "amount": 150000, "state": "X",
                     "responseCode": "RC", **data}}


def test_status_codes_of_a_payment():
    paid = payment_event(status("PAYMENT_SUCCESS", paymentInstrument={"type": "UPI"}),
                         REFERENCE)
    assert (paid.status, paid.amount, paid.currency, paid.transaction_id, paid.method) == (
        EventStatus.SUCCEEDED, 150000, "INR", "T22", "upi")
    for code in ("PAYMENT_PENDING", "PAYMENT_INITIATED"):
        assert payment_event(status(code), REFERENCE).status == EventStatus.PENDING
    for code in ("PAYMENT_ERROR", "PAYMENT_DECLINED", "PAYMENT_CANCELLED", "TIMED_OUT"):
        failed = payment_event(status(code), REFERENCE)
        assert failed.status == EventStatus.FAILED and failed.raw["failure_message"] == "m (RC)"
    assert payment_event(status("PAYMENT_SUCCESS", amount="150000"), REFERENCE).amount is None
    for code in ("PAYMENT_SUCCESSFUL", "", None, "INTERNAL_SERVER_ERROR"):
        with pytest.raises(UnknownStatus):
            payment_event(status(code), REFERENCE)


def test_status_codes_of_a_refund():
    refund_id = refund_transaction_id(REFERENCE, "refund-rfd_a")
    settled = refund_event(status("PAYMENT_SUCCESS", amount=5000), REFERENCE, refund_id)
    assert (settled.status, settled.refund_id, settled.amount, settled.reference) == (
        EventStatus.REFUND_SUCCEEDED, refund_id, 5000, REFERENCE)
    assert refund_event(status("TIMED_OUT"), REFERENCE, refund_id).status == EventStatus.PENDING
    assert refund_event(status("REVERSAL_WINDOW_EXCEEDED"), REFERENCE, refund_id).status == \
        EventStatus.REFUND_FAILED
    with pytest.raises(UnknownStatus):
        refund_event(status("PAYMENT_INITIATED"), REFERENCE, refund_id)


def callback_raw(transaction_id: str) -> bytes:
    body = json.dumps(status("PAYMENT_SUCCESS", merchantTransactionId=transaction_id))
    return json.dumps({"response": base64.b64encode(body.encode()).decode()}).encode()


def test_the_reference_is_read_from_payment_and_refund_callbacks_alike():
    refund_id = refund_transaction_id(REFERENCE, "refund-rfd_a")
    assert PhonePeV1Gateway.extract_reference({}, callback_raw(REFERENCE)) == REFERENCE
    assert PhonePeV1Gateway.extract_reference({}, callback_raw(refund_id)) == REFERENCE
    for raw in (b"", b"{}", b'{"response": 1}', b'{"response": "%%%"}', b"\xff"):
        with pytest.raises(MalformedPayload):
            PhonePeV1Gateway.extract_reference({}, raw)


def test_polling_follows_phonepes_reconciliation_schedule():
    delays = polling_schedule()
    assert delays[:3] == (25, 28, 31)  # first at 20-25 s, then every 3 s for 30 s
    assert delays[10:12] == (55, 61)  # then every 6 s
    assert delays[20:22] == (115, 125)  # then every 10 s
    assert (175, 205, 235, 295) == delays[26:30]  # every 30 s, then every minute
    assert delays[-2:] == (1195, 1500) and list(delays) == sorted(set(delays))
    assert PhonePeV1Gateway.status_check_cutoff == delays[-1]
