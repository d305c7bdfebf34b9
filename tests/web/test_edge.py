"""Input at the edge: each hostile input the issue found answers a clear 4xx and stores nothing."""

import io
import json
import logging

import pytest
from sqlalchemy import func, select

from portal.edge import JsonRejected, load_json
from portal.models import OnlinePayment, Payment, PaymentGatewayTransaction
from portal.outage import DatabaseHealth
from tests.api_helpers import make_api_key
from tests.conftest import csrf_from
from tests.web.helpers import post_event, start_payment
from tests.web.test_links import count_links, form

API_BODY = {"amount": 123450, "currency": "INR", "bill_reference": "B-1",
            "customer": {"name": "Asha Rao", "phone": "+919876543210"}}


@pytest.fixture
def key(db, lab):
    return make_api_key(db, lab)


def api(client, key, body, path="/payments/initiate", **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, data=data, headers={"Authorization": f"Bearer {key}",
                                                 "Content-Type": "application/json", **headers})


def stored_exchanges(db) -> int:
    return db.scalar(select(func.count()).select_from(PaymentGatewayTransaction)
                     .where(PaymentGatewayTransaction.kind == "webhook_received"))


def test_nul_in_a_pay_token_is_the_patients_not_found_page(client, build, lab):
    link = build.link(lab)
    for path in (f"/pay/{link.token}%00", f"/pay/{link.token[:10]}%00x/receipt"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert "This payment link is not valid" in answer.get_data(as_text=True)


def test_nul_in_the_login_email_is_refused_in_plain_words(client, staff):
    token = csrf_from(client.get("/login").get_data(as_text=True))
    answer = client.post("/login", data={"csrf_token": token, "email": "staff@acme.test\x00",
                                         "password": "x"})
    assert answer.status_code == 400
    assert "control characters" in answer.get_data(as_text=True)


def test_nul_in_a_search_and_in_a_link_form_field(staff_client, db):
    assert staff_client.get("/transactions?q=B-1%00").status_code == 400
    assert staff_client.get("/customers?q=%00").status_code == 400
    answer = staff_client.post("/links/new", data=form(staff_client, bill_reference="B\x00-1"))
    assert answer.status_code == 400 and count_links(db) == 0
    answer = staff_client.post("/links/new", data=form(staff_client, patient_name="A\x1b[2J"))
    assert answer.status_code == 400 and count_links(db) == 0
    # A textarea's line breaks and tabs are text, not control characters to refuse.
    answer = staff_client.post("/links/new", data=form(staff_client,
                                                       description="line one\r\n\tline two"))
    assert answer.status_code in (302, 303) and count_links(db) == 1


def test_api_field_with_nul_or_a_lone_surrogate_is_422_naming_the_field(client, key, db):
    answer = api(client, key, {**API_BODY, "customer": {"name": "Asha\u0000"}})
    assert answer.status_code == 422
    assert answer.json["error"] == {"code": "validation_failed",
                                    "message": "Some fields are missing or invalid.",
                                    "fields": {"customer.name":
                                               "Must not contain control characters."}}
    answer = api(client, key, b'{"amount": 1, "currency": "INR", "bill_reference": "\\ud800"}')
    assert answer.status_code == 422 and "bill_reference" in answer.json["error"]["fields"]
    # Whatever the Content-Type (curl -d sends a form type), the body is checked as JSON.
    answer = client.post("/payments/initiate", data=b"[" * 50000,
                         headers={"Authorization": f"Bearer {key}",
                                  "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"
    assert db.scalar(select(func.count()).select_from(OnlinePayment)) == 0


@pytest.mark.parametrize("body", [b"[" * 50000, b'{"a":' * 20000, b"[" * 65 + b"]" * 65,
                                  b'{"amount": 1e999}', b'{"amount": NaN}',
                                  b'{"amount": 100000000000000000000}',
                                  ("[" * 5000).encode("utf-16-be")])
def test_hostile_json_is_400_for_the_api_and_for_every_webhook(client, key, body):
    answer = api(client, key, body, **{"Idempotency-Key": "k-1"})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"
    for gateway in ("sandbox", "stripe", "razorpay", "phonepe_v1", "square"):
        answer = client.post(f"/payments/webhook/{gateway}", data=body,
                             content_type="application/json")
        assert answer.status_code == 400, gateway
        assert answer.json["error"]["code"] == "malformed_payload"


def test_api_expires_at_in_year_one_or_9999_is_a_validation_error(client, key, db):
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        answer = api(client, key, {**API_BODY, "expires_at": when})
        assert answer.status_code == 422, when
        assert set(answer.json["error"]["fields"]) == {"expires_at"}
    assert db.scalar(select(func.count()).select_from(OnlinePayment)) == 0


@pytest.mark.parametrize("code", ["XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XBA",
                                  "XBD", "XSU", "XUA"])
def test_currencies_that_are_not_money_are_refused(client, key, code):
    answer = api(client, key, {**API_BODY, "currency": code})
    assert answer.status_code == 422 and set(answer.json["error"]["fields"]) == {"currency"}


def test_a_signed_sandbox_event_with_an_impossible_amount_or_time_is_400(client, build, lab,
                                                                          db):
    link = build.link(lab)
    reference = start_payment(client, link)
    event = {"id": "evt_x", "type": "payment.succeeded", "created": 1700000000,
             "data": {"reference": reference, "amount": 123450, "currency": "INR"}}
    for change in ({"data": {**event["data"], "amount": 1e999}},
                   {"data": {**event["data"], "amount": 1234.5}},
                   {"data": {**event["data"], "amount": True}},
                   {"created": 10**18}, {"created": 2**63 - 1}):
        body = json.dumps({**event, **change}).replace("Infinity", "1e999").encode()
        answer = post_event(client, reference, body=body)
        assert answer.status_code == 400, change
        assert answer.json["error"]["code"] == "malformed_payload"
    assert stored_exchanges(db) == 0
    assert db.scalar(select(Payment.status)).value == "pending"


def test_nul_in_a_webhook_reference_is_400_and_stores_nothing(client, db):
    for gateway, body, mimetype in (
            ("sandbox", b'{"data": {"reference": "pay_\\u0000"}}', "application/json"),
            ("pesopay", b"Ref=pay_%00&PayRef=1", "application/x-www-form-urlencoded")):
        answer = client.post(f"/payments/webhook/{gateway}", data=body, content_type=mimetype)
        assert answer.status_code == 400 and answer.json["error"]["code"] == "malformed_payload"
    assert stored_exchanges(db) == 0


def chunked(client, path, size, content_type="application/json", **headers):
    """A body without Content-Length, as gunicorn hands a chunked request to the app."""
    body = b'{"pad": "' + b"x" * size + b'"}'
    return client.post(path, input_stream=io.BytesIO(body),
                       environ_overrides={"wsgi.input_terminated": True},
                       headers={"Content-Type": content_type, **headers})


def test_a_chunked_body_over_the_limit_is_413_not_a_truncated_parse(app, client, key):
    limit = app.config["MAX_CONTENT_LENGTH"]
    answer = chunked(client, "/payments/webhook/sandbox", limit + 10)
    assert answer.status_code == 413
    answer = chunked(client, "/payments/initiate", limit * 2, Authorization=f"Bearer {key}")
    assert answer.status_code == 413
    answer = chunked(client, "/login", limit + 1, "application/x-www-form-urlencoded")
    assert answer.status_code == 413
    # Under the limit, a chunked body is read whole: the gateway's own parser sees all of it.
    answer = chunked(client, "/payments/webhook/sandbox", 1000)
    assert answer.status_code == 400 and answer.json["error"]["message"] == \
        "no reference in event"


def test_ids_beyond_bigint_are_404_not_an_overflow(staff_client, client, key):
    assert staff_client.get(f"/links/{2**63}").status_code == 404
    assert staff_client.get(f"/transactions/{10**30}").status_code == 404
    assert staff_client.get(f"/links?before={2**64}").status_code == 200
    assert staff_client.get(f"/customers?before={2**64}").status_code == 200
    answer = client.get(f"/payments/status/{2**63}", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"


def test_control_characters_in_headers_are_refused(client, key):
    answer = client.get("/payments/status/1", headers={"Authorization": f"Bearer {key}\x00"})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "bad_request"
    assert client.get("/login", headers={"Referer": "http://x/\x1b"}).status_code == 400


def test_load_json_bounds():
    assert load_json(b'{"a": [1, 2.5, "t\\tx"]}') == {"a": [1, 2.5, "t\tx"]}
    for raw in (b"[" * 66 + b"]" * 66, b"1e400", b"-Infinity", b"9223372036854775808",
                b'"\\u0000"', b'{"\\ud800": 1}'):
        with pytest.raises(JsonRejected):
            load_json(raw)
    with pytest.raises(ValueError):
        load_json(b"{not json")


def test_database_health_logs_each_change_once(caplog):
    health = DatabaseHealth()
    with caplog.at_level(logging.INFO, logger="portal.database"):
        for _ in range(3):
            health.failed(RuntimeError("connection refused"))
        for _ in range(3):
            health.answered()
    assert [r.getMessage() for r in caplog.records] == [
        "database unavailable: RuntimeError: connection refused", "database is back"]


def test_phonepe_v1_callback_with_deep_json_inside_its_base64_is_400(client):
    import base64

    inner = base64.b64encode(b"[" * 50000).decode()
    answer = client.post("/payments/webhook/phonepe_v1", json={"response": inner})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "malformed_payload"


def test_transaction_filters_with_dates_at_the_ends_of_the_calendar(staff_client):
    for query in ("date_from=0001-01-01", "date_to=9999-12-31",
                  "date_from=0001-01-01&date_to=9999-12-31"):
        assert staff_client.get(f"/transactions?{query}").status_code < 500, query
        assert staff_client.get(f"/transactions.csv?{query}").status_code < 500, query
