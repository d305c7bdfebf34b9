"""Square's wire format in pure functions: signatures, request bodies, events, errors."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from square.core.api_error import ApiError

from gateways.base import (
    CheckoutRequest,
    EventStatus,
    GatewayError,
    IgnoredEvent,
    MalformedPayload,
    RefundRequest,
    SignatureError,
    UnknownStatus,
)
from gateways.square import SquareGateway
from gateways.square.wire import (
    gateway_error,
    order_status_event,
    parse_event,
    payment_link_body,
    refund_body,
    signature,
    split_checkout_id,
    verify_signature,
)

# square-python-sdk legacy/tests/utilities/test_webhooks_helper.py (gateways.md §6)
VECTOR_BODY = (b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification",'
               b'"event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f",'
               b'"created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks",'
               b'"id":"bc368e64-01aa-407e-b46e-3231809b1129"}}')
VECTOR_URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"
VECTOR_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
VECTOR_SIGNATURE = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
ESCAPED_BODY = b'{"data":{"type":"webhooks","id":">id<"}}'
ESCAPED_SIGNATURE = "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U="

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
REF = "pay_0123456789abcdef01234567"
NOTE = f"Ref {REF}: Acme Diagnostics, bill B-7"


def test_published_vectors():
    assert signature(VECTOR_KEY, VECTOR_URL, VECTOR_BODY) == VECTOR_SIGNATURE
    verify_signature(VECTOR_KEY, VECTOR_URL, VECTOR_BODY, VECTOR_SIGNATURE)
    assert signature("signature-key", "https://webhook.site/webhooks",
                     ESCAPED_BODY) == ESCAPED_SIGNATURE
    verify_signature("signature-key", "https://webhook.site/webhooks", ESCAPED_BODY,
                     ESCAPED_SIGNATURE)


@pytest.mark.parametrize("key, url, body, header", [
    (VECTOR_KEY, "https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9", VECTOR_BODY,
     VECTOR_SIGNATURE),  # another notification URL
    ("MCmhFRxGX82xMwg5FsaoQA", VECTOR_URL, VECTOR_BODY, VECTOR_SIGNATURE),  # another key
    (VECTOR_KEY, VECTOR_URL, VECTOR_BODY, "1z2n3DEJJiUPKcPzQo1ftvbxGdw="),
    (VECTOR_KEY, VECTOR_URL, VECTOR_BODY.replace(b"2022-07-13", b"2022-06-13"),
     VECTOR_SIGNATURE),  # tampered body
    (VECTOR_KEY, VECTOR_URL, json.dumps(json.loads(VECTOR_BODY), indent=2).encode(),
     VECTOR_SIGNATURE),  # same JSON, other bytes
    (VECTOR_KEY, VECTOR_URL, VECTOR_BODY, ""),
    (VECTOR_KEY, VECTOR_URL, VECTOR_BODY, None),
    (VECTOR_KEY, VECTOR_URL, b"", signature(VECTOR_KEY, VECTOR_URL, b"")),
    (VECTOR_KEY, VECTOR_URL, b"\xff\xfe", signature(VECTOR_KEY, VECTOR_URL, b"\xff\xfe")),
    (VECTOR_KEY, VECTOR_URL, VECTOR_BODY, "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=é"),
])
def test_signature_rejections(key, url, body, header):
    with pytest.raises(SignatureError):
        verify_signature(key, url, body, header)


def test_no_notification_url_is_a_configuration_error():
    with pytest.raises(GatewayError) as caught:
        verify_signature(VECTOR_KEY, "", VECTOR_BODY, VECTOR_SIGNATURE)
    assert caught.value.code == "not_configured"


def checkout_request(**overrides) -> CheckoutRequest:
    fields = dict(
        reference=REF, amount=150000, currency="USD", description="CBC",
        bill_reference="B-7", merchant_name="Acme Diagnostics",
        return_url=f"https://portal.example/pay/tok/return?ref={REF}",
        cancel_url="https://portal.example/pay/tok",
        notify_url="https://portal.example/payments/webhook/square",
        expires_at=NOW + timedelta(hours=72), idempotency_key=f"checkout-{REF}",
        customer_name="Asha Rao", customer_email="asha@example.com",
        customer_phone="+14155550123")
    return CheckoutRequest(**{**fields, **overrides})


def test_payment_link_body():
    assert payment_link_body(checkout_request(), "L88917AVBK2S5") == {
        "idempotency_key": f"checkout-{REF}",
        "description": f"Acme Diagnostics: bill B-7 ({REF})",
        "quick_pay": {"name": "Acme Diagnostics: bill B-7", "location_id": "L88917AVBK2S5",
                      "price_money": {"amount": 150000, "currency": "USD"}},
        "checkout_options": {"redirect_url": f"https://portal.example/pay/tok/return?ref={REF}",
                             "allow_tipping": False, "ask_for_shipping_address": False},
        "payment_note": NOTE,
        "pre_populated_data": {"buyer_email": "asha@example.com",
                               "buyer_phone_number": "+14155550123"},
    }
    bare = payment_link_body(checkout_request(customer_email="", customer_phone="0415 555"),
                             "L1")
    assert "pre_populated_data" not in bare  # Square refuses a link for a malformed number
    long = payment_link_body(checkout_request(merchant_name="M" * 600), "L1")
    assert len(long["quick_pay"]["name"]) == 255 and len(long["payment_note"]) == 500
    assert long["payment_note"].startswith(f"Ref {REF}: ")


def test_refund_body():
    request = RefundRequest(reference=REF, transaction_id="KkAkhdMsgzn59SM8A89WgKwekxLZY",
                            amount=5000, currency="USD", reason="Overcharged",
                            idempotency_key="refund-rfd_0123456789abcdef01234567")
    assert refund_body(request) == {
        "idempotency_key": "refund-rfd_0123456789abcdef01234567",
        "payment_id": "KkAkhdMsgzn59SM8A89WgKwekxLZY",
        "amount_money": {"amount": 5000, "currency": "USD"}, "reason": "Overcharged"}
    long = refund_body(RefundRequest(**{**request.__dict__, "idempotency_key": "k" * 60,
                                        "reason": ""}))
    assert len(long["idempotency_key"]) == 45 and "reason" not in long
    assert long == refund_body(RefundRequest(**{**request.__dict__, "idempotency_key": "k" * 60,
                                                "reason": ""}))  # stable across retries


def payment(status="COMPLETED", **fields) -> dict:
    return {"id": "KkAkhdMsgzn59SM8A89WgKwekxLZY", "status": status, "note": NOTE,
            "order_id": "C0DMgui6YFmgyURVSRtxr4EShheZY", "source_type": "CARD",
            "amount_money": {"amount": 150000, "currency": "USD"},
            "total_money": {"amount": 150000, "currency": "USD"},
            "card_details": {"status": "CAPTURED",
                             "card": {"card_brand": "VISA", "last_4": "1111"}},
            "updated_at": "2026-11-26T10:01:02.123Z", **fields}


def event(kind: str, obj: dict, data_type: str = "payment") -> dict:
    return {"merchant_id": "MLEFBHHSJGVHD", "type": kind, "event_id": "6a8f5f28-54a1-4eb0",
            "created_at": "2026-11-26T10:01:02.037339943Z",
            "data": {"type": data_type, "id": "x", "object": obj}}


def test_completed_payment_event():
    parsed = parse_event(event("payment.updated", {"payment": payment()}))
    assert (parsed.dedupe_id, parsed.type, parsed.reference, parsed.status) == (
        "6a8f5f28-54a1-4eb0", "payment.updated", REF, EventStatus.SUCCEEDED)
    assert (parsed.amount, parsed.currency, parsed.transaction_id) == (
        150000, "USD", "KkAkhdMsgzn59SM8A89WgKwekxLZY")
    assert (parsed.method, parsed.card_brand, parsed.card_last4) == ("card", "VISA", "1111")
    assert parsed.occurred_at == datetime(2026, 11, 26, 10, 1, 2, 37339, tzinfo=UTC)


def test_other_payment_statuses_and_unknown_ones():
    assert parse_event(event("payment.created", {"payment": payment("APPROVED")})).status \
        == EventStatus.PENDING
    failed = parse_event(event("payment.created", {"payment": payment(
        "FAILED", card_details={"status": "FAILED", "errors": [
            {"category": "PAYMENT_METHOD_ERROR", "code": "GENERIC_DECLINE",
             "detail": "Authorization error: 'GENERIC_DECLINE'"}]})}))
    assert failed.status == EventStatus.FAILED
    assert failed.raw["failure_message"] == "Authorization error: 'GENERIC_DECLINE'"
    assert parse_event(event("payment.updated", {"payment": payment("CANCELED")})).status \
        == EventStatus.FAILED
    for unknown in ("SETTLED", None, "completed"):
        with pytest.raises(UnknownStatus):
            parse_event(event("payment.updated", {"payment": payment(unknown)}))
    foreign = parse_event(event("payment.updated", {"payment": payment(note="Table 4")}))
    assert foreign.reference == ""  # an in-store payment: the portal looks it up by id


def test_refund_events():
    refund = {"id": "KkAk_r1", "status": "COMPLETED", "payment_id": "KkAk",
              "amount_money": {"amount": 5000, "currency": "USD"}}
    parsed = parse_event(event("refund.updated", {"refund": refund}, "refund"))
    assert (parsed.status, parsed.refund_id, parsed.transaction_id, parsed.amount,
            parsed.reference) == (EventStatus.REFUND_SUCCEEDED, "KkAk_r1", "KkAk", 5000, "")
    assert parse_event(event("refund.created", {"refund": {**refund, "status": "PENDING"}},
                             "refund")).status == EventStatus.PENDING
    for status in ("REJECTED", "FAILED"):
        rejected = parse_event(event("refund.updated", {"refund": {**refund, "status": status}},
                                     "refund"))
        assert rejected.status == EventStatus.REFUND_FAILED and rejected.raw["failure_message"]
    with pytest.raises(UnknownStatus):
        parse_event(event("refund.updated", {"refund": {**refund, "status": "DONE"}}, "refund"))


def test_unused_and_malformed_events():
    with pytest.raises(IgnoredEvent):
        parse_event(event("order.updated", {"order_updated": {"state": "OPEN"}}, "order"))
    with pytest.raises(MalformedPayload):
        parse_event({**event("payment.updated", {"payment": payment()}), "event_id": ""})
    for raw in (b"not json", b"[]", b'{"type": "payment.updated"}', b"\xff",
                b'{"type": 1, "data": {}}', b'{"type": "refund.updated", "data": {"object": []}}'):
        with pytest.raises(MalformedPayload):
            SquareGateway.extract_reference({}, raw)


def test_unverified_lookups_only_pick_the_lab():
    body = json.dumps(event("payment.updated", {"payment": payment()})).encode()
    assert SquareGateway.extract_reference({}, body) == REF
    assert SquareGateway.extract_transaction_id({}, body) == "KkAkhdMsgzn59SM8A89WgKwekxLZY"
    refund = json.dumps(event("refund.updated", {"refund": {"id": "r", "payment_id": "KkAk"}},
                              "refund")).encode()
    assert SquareGateway.extract_reference({}, refund) == ""
    assert SquareGateway.extract_transaction_id({}, refund) == "KkAk"
    with pytest.raises(IgnoredEvent):
        SquareGateway.extract_reference({}, json.dumps(event("order.created", {})).encode())
    with pytest.raises(IgnoredEvent):  # Square's test notification has no data.object
        SquareGateway.extract_reference({}, VECTOR_BODY)


def order(state="OPEN", tenders=("KkAkhdMsgzn59SM8A89WgKwekxLZY",)) -> dict:
    return {"id": "C0DMgui6YFmgyURVSRtxr4EShheZY", "state": state,
            "total_money": {"amount": 150000, "currency": "USD"},
            "tenders": [{"id": t, "type": "CARD"} for t in tenders]}


def test_order_status():
    paid = order_status_event(REF, order(), [payment("FAILED"), payment()])
    assert (paid.status, paid.amount, paid.transaction_id, paid.reference) == (
        EventStatus.SUCCEEDED, 150000, "KkAkhdMsgzn59SM8A89WgKwekxLZY", REF)
    assert order_status_event(REF, order("DRAFT", ()), []).status == EventStatus.PENDING
    assert order_status_event(REF, order("OPEN"), [payment("APPROVED")]).status \
        == EventStatus.PENDING
    closed = order_status_event(REF, order("CANCELED", ()), [])
    assert closed.status == EventStatus.FAILED and closed.raw["failure_message"]
    with pytest.raises(UnknownStatus):
        order_status_event(REF, order("ARCHIVED", ()), [])
    with pytest.raises(UnknownStatus):
        order_status_event(REF, order(), [payment("SETTLED")])


def test_checkout_id_keeps_link_and_order():
    assert split_checkout_id("FWT463MU2JIG7S3D:C0DMgui6YFmgyURVSRtxr4EShheZY") == (
        "FWT463MU2JIG7S3D", "C0DMgui6YFmgyURVSRtxr4EShheZY")
    assert split_checkout_id("FWT463MU2JIG7S3D") == ("FWT463MU2JIG7S3D", "")
    assert split_checkout_id(None) == ("", "")


def square_error(status, *errors, body=None) -> GatewayError:
    return gateway_error(ApiError(status_code=status, body=body if body is not None
                                  else {"errors": list(errors)}))


def test_errors_carry_squares_own_words():
    currency = square_error(400, {"category": "INVALID_REQUEST_ERROR", "code": "INVALID_VALUE",
                                  "detail": "This merchant can only process payments in GBP.",
                                  "field": "quick_pay.price_money.currency"})
    assert currency.code == "not_configured" and not currency.retryable
    assert currency.message.startswith("Square: This merchant can only process payments in GBP.")
    assert square_error(400, {"category": "INVALID_REQUEST_ERROR",
                              "code": "CURRENCY_MISMATCH"}).code == "not_configured"
    auth = square_error(401, {"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED",
                              "detail": "This request could not be authorized."})
    assert (auth.code, auth.retryable, auth.message) == (
        "bad_credentials", False, "Square: This request could not be authorized.")
    assert square_error(429, {"category": "RATE_LIMIT_ERROR", "code": "RATE_LIMITED"}).retryable
    busy = square_error(503, {"category": "API_ERROR", "code": "SERVICE_UNAVAILABLE"})
    assert busy.retryable and busy.message == "Square: SERVICE_UNAVAILABLE"
    assert square_error(404, {"category": "INVALID_REQUEST_ERROR", "code": "NOT_FOUND",
                              "detail": "Could not find payment link."}).code == "not_found"
    page = square_error(502, body="<html>Bad gateway</html>")
    assert page.retryable and "unreadable" in page.message and page.http_status == 502
