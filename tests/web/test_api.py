"""The JSON API: authentication, initiate, status, refund, idempotency, limits and errors."""

import json
import threading
from datetime import timedelta

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy import event, func, select

from portal.api.openapi import document
from portal.models import (
    ApiKey,
    IdempotencyKey,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentStatus,
    utcnow,
)
from portal.worker.runner import wait_idle
from tests.api_helpers import make_api_key
from tests.conftest import serving
from tests.gateways.test_sandbox_http import choose, press_pay
from tests.web.helpers import post_event, start_payment

BODY = {"amount": 123450, "currency": "INR", "bill_reference": "B-API-1",
        "customer": {"name": "Asha Rao", "phone": "+919876543210", "email": "asha@example.com"},
        "expires_in": 86400, "metadata": {"lis_order": "77881"}}


@pytest.fixture
def key(app, db, lab):
    return make_api_key(db, lab)


def auth(key: str, **extra) -> dict:
    return {"Authorization": f"Bearer {key}", **extra}


REGISTRY = Registry().with_resource("urn:doc", Resource(
    contents=document("http://localhost"), specification=DRAFT202012))


def validate(body, schema_name: str) -> None:
    """A body against the schema the OpenAPI document publishes for it."""
    schema = {"$ref": f"urn:doc#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(body)


def test_missing_wrong_or_revoked_keys_get_401(client, key, db):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": key},
                    {"Authorization": f"Basic {key}"}):
        answer = client.post("/payments/initiate", json=BODY, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json["error"]["code"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        validate(answer.json, "Error")


def test_initiate_creates_a_link_of_the_keys_lab(client, key, db, lab):
    answer = client.post("/payments/initiate", json=BODY, headers=auth(key))
    assert answer.status_code == 201, answer.json
    body = answer.json
    validate(body, "Link")
    link = db.get(OnlinePayment, body["id"])
    assert link.lab_id == lab.id and link.amount == 123450 and link.currency == "INR"
    assert body["url"].endswith(f"/pay/{link.token}") and body["qr_url"].endswith("/qr.svg")
    assert body["status"] == "created" and body["metadata"] == {"lis_order": "77881"}
    assert link.customer.phone == "+919876543210"
    assert abs((link.expires_at - utcnow()).total_seconds() - 86400) < 60


def test_every_invalid_field_is_reported_at_once(client, key, db):
    bad = {"amount": 12.5, "currency": "inr", "customer": {"name": "", "phone": "12"},
           "expires_in": 10, "notify": ["fax"], "gateway": "stripe", "colour": "red"}
    answer = client.post("/payments/initiate", json=bad, headers=auth(key))
    assert answer.status_code == 422
    validate(answer.json, "Error")
    assert set(answer.json["error"]["fields"]) == {
        "amount", "currency", "bill_reference", "customer.name", "customer.phone",
        "expires_in", "notify", "gateway", "colour"}
    assert db.scalar(select(func.count()).select_from(OnlinePayment)) == 0
    for raw in (b"{", b"[1, 2]", b"\xff"):
        answer = client.post("/payments/initiate", data=raw, headers=auth(
            key, **{"Content-Type": "application/json"}))
        assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"


def test_status_follows_the_payment_and_other_labs_see_nothing(app, client, key, db, build):
    link_id = client.post("/payments/initiate", json=BODY, headers=auth(key)).json["id"]
    link = db.get(OnlinePayment, link_id)
    reference = start_payment(app.test_client(), link)
    assert post_event(app.test_client(), reference).status_code == 200
    answer = client.get(f"/payments/status/{link_id}", headers=auth(key))
    assert answer.status_code == 200
    validate(answer.json, "Link")
    assert answer.json["status"] == "paid" and answer.json["amount_paid"] == 123450
    [payment] = answer.json["payments"]
    assert payment["reference"] == reference and payment["status"] == "succeeded"

    other = make_api_key(db, build.lab("other"))
    answer = client.get(f"/payments/status/{link_id}", headers=auth(other))
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"
    assert client.post("/payments/refund", json={"payment_id": payment["id"], "amount": 100},
                       headers=auth(other)).status_code == 404


def test_refresh_asks_the_gateway_first(app, client, key, db):
    link_id = client.post("/payments/initiate", json=BODY, headers=auth(key)).json["id"]
    link = db.get(OnlinePayment, link_id)
    with serving(app) as live:
        browser, checkout_url = press_pay(live, link.token)
        choose(browser, checkout_url, "pay")  # paid, but the webhook job is never run
        assert client.get(f"/payments/status/{link_id}",
                          headers=auth(key)).json["status"] == "created"
        answer = client.get(f"/payments/status/{link_id}?refresh=true", headers=auth(key))
    assert answer.json["status"] == "paid"
    assert answer.json["payments"][0]["status"] == "succeeded"


def test_refund_within_limits(app, client, key, db):
    link_id = client.post("/payments/initiate", json=BODY, headers=auth(key)).json["id"]
    link = db.get(OnlinePayment, link_id)
    with serving(app) as live:
        browser, checkout_url = press_pay(live, link.token)
        choose(browser, checkout_url, "pay")
        wait_idle(app)  # the sandbox's signed webhook
    payment = db.scalar(select(Payment).where(Payment.online_payment_id == link.id))
    assert payment.status == PaymentStatus.SUCCEEDED
    answer = client.post("/payments/refund", json={"payment_id": payment.id, "amount": 200000,
                                                   "reason": "x"}, headers=auth(key))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "refund_not_allowed"
    with serving(app):  # the sandbox's refund API is served by the portal itself
        answer = client.post("/payments/refund", json={
            "payment_id": payment.id, "amount": 50000, "reason": "Test cancelled"},
            headers=auth(key))
    assert answer.status_code == 201, answer.json
    validate(answer.json, "Refund")
    assert answer.json["status"] == "succeeded"
    db.refresh(payment)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED


def test_idempotency_replay_and_mismatch(client, key, db):
    headers = auth(key, **{"Idempotency-Key": "order-77881"})
    first = client.post("/payments/initiate", json=BODY, headers=headers)
    again = client.post("/payments/initiate", data=json.dumps(BODY, indent=2),
                        headers={**headers, "Content-Type": "application/json"})
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert db.scalar(select(func.count()).select_from(OnlinePayment)) == 1
    changed = client.post("/payments/initiate", json={**BODY, "amount": 1}, headers=headers)
    assert changed.status_code == 422
    assert changed.json["error"]["code"] == "idempotency_key_reused"
    # errors are kept too: the same bad request with its key answers the same
    bad = auth(key, **{"Idempotency-Key": "bad-1"})
    assert client.post("/payments/initiate", json={}, headers=bad).status_code == 422
    replay = client.post("/payments/initiate", json={}, headers=bad)
    assert replay.status_code == 422 and replay.headers["Idempotent-Replayed"] == "true"


def test_idempotency_keys_are_per_lab(client, key, db, build):
    other = make_api_key(db, build.lab("other"))
    headers = {"Idempotency-Key": "same-key"}
    a = client.post("/payments/initiate", json=BODY, headers=auth(key, **headers))
    b = client.post("/payments/initiate", json=BODY, headers=auth(other, **headers))
    assert a.status_code == b.status_code == 201 and a.json["id"] != b.json["id"]


def test_concurrent_request_with_the_same_key_gets_409(app, key, db, monkeypatch):
    import portal.api.routes as routes

    started, release = threading.Event(), threading.Event()
    original = routes._json_body

    def slow_body():
        started.set()
        release.wait(10)
        return original()

    monkeypatch.setattr(routes, "_json_body", slow_body)
    headers = auth(key, **{"Idempotency-Key": "in-flight-1"})
    results = {}

    def first():
        results["first"] = app.test_client().post("/payments/initiate", json=BODY,
                                                  headers=headers)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(10)
    second = app.test_client().post("/payments/initiate", json=BODY, headers=headers)
    release.set()
    thread.join(10)
    assert second.status_code == 409
    assert second.json["error"]["code"] == "idempotency_key_in_flight"
    assert results["first"].status_code == 201
    replay = app.test_client().post("/payments/initiate", json=BODY, headers=headers)
    assert replay.json == results["first"].json


def test_rate_limit_answers_429_with_retry_after(app, client, key):
    app.config["PORTAL_API_RATE_LIMIT"] = 3
    app.extensions.pop("portal_limits", None)
    answers = [client.get("/payments/status/999999", headers=auth(key)) for _ in range(5)]
    assert [a.status_code for a in answers] == [404, 404, 404, 429, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    validate(answers[-1].json, "Error")


def test_large_bodies_and_server_errors_stay_json(app, client, key, monkeypatch):
    answer = client.post("/payments/initiate", data=b"{" + b" " * 70000 + b"}",
                         headers=auth(key, **{"Content-Type": "application/json"}))
    assert answer.status_code == 413 and answer.json["error"]["code"] == "payload_too_large"
    import portal.api.routes as routes

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(routes, "create_link", boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    answer = client.post("/payments/initiate", json=BODY, headers=auth(key))
    assert answer.status_code == 500 and answer.is_json
    assert "secret internals" not in answer.get_data(as_text=True)
    assert "Traceback" not in answer.get_data(as_text=True)


def test_openapi_document_examples_match_their_schemas(client):
    doc = client.get("/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    checked = 0
    for path in doc["paths"].values():
        for operation in path.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body and "example" in body and body["schema"]:
                validate(body["example"], body["schema"]["$ref"].rsplit("/", 1)[1])
                checked += 1
            for response in operation["responses"].values():
                content = response.get("content", {}).get("application/json", {})
                if "example" in content:
                    validate(content["example"], content["schema"]["$ref"].rsplit("/", 1)[1])
                    checked += 1
    assert checked >= 20


def test_documented_request_examples_work_against_the_app(app, client, key, db):
    doc = client.get("/openapi.json").json
    example = doc["paths"]["/payments/initiate"]["post"]["requestBody"]["content"][
        "application/json"]["example"]
    answer = client.post("/payments/initiate", json=example, headers=auth(key))
    assert answer.status_code == 201
    validate(answer.json, "Link")
    link = db.get(OnlinePayment, answer.json["id"])
    assert link.status == LinkStatus.CREATED
    assert link.expires_at > utcnow() + timedelta(days=2)


def statements_of(app, send) -> list[str]:
    seen: list[str] = []
    engine = app.extensions["portal_db"].engine

    def record(conn, cursor, statement, *args):
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        send()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def test_initiate_reads_the_key_and_its_lab_together_and_writes_in_one_transaction(
        app, client, key, db):
    """The key with its lab and whether its gateway is set up in one statement, read without
    SQLite's write lock; the lock taken once, for the patient's read and the writes, once the
    key's use is recorded."""
    assert client.post("/payments/initiate", json=BODY, headers=auth(key)).status_code == 201
    answers = []
    seen = statements_of(app, lambda: answers.append(
        client.post("/payments/initiate", json={**BODY, "bill_reference": "B-2"},
                    headers=auth(key))))
    assert answers[0].status_code == 201
    assert [s for s in seen if s.startswith("BEGIN")] == ["BEGIN", "BEGIN IMMEDIATE"]
    assert seen[1].startswith("SELECT") and "FROM api_keys" in seen[1]
    assert seen[2] == "BEGIN IMMEDIATE" and "FROM customers" in seen[3]
    reads = [s for s in seen if s.startswith("SELECT")]
    assert "FROM api_keys JOIN labs" in reads[0] and "payment_gateway_keys" in reads[0]
    assert not [s for s in reads[1:] if "FROM labs" in s or "payment_gateway_keys" in s]
    assert len(seen) <= 8


def test_initiate_needs_the_default_or_the_named_gateway_set_up(client, key, db, lab):
    from portal.models import PaymentGatewayKeys

    keys = db.scalar(select(PaymentGatewayKeys).where(PaymentGatewayKeys.lab_id == lab.id))
    keys.enabled = False
    db.commit()
    answer = client.post("/payments/initiate", json=BODY, headers=auth(key))
    assert answer.status_code == 422
    assert answer.json["error"]["code"] == "gateway_not_configured"
    named = client.post("/payments/initiate", json={**BODY, "gateway": "sandbox"},
                        headers=auth(key))
    assert named.status_code == 422 and "gateway" in named.json["error"]["fields"]
    keys.enabled = True
    db.commit()
    lab.default_gateway = "stripe"  # not set up; the sandbox is
    db.commit()
    assert client.post("/payments/initiate", json=BODY, headers=auth(
        key)).json["error"]["code"] == "gateway_not_configured"
    named = client.post("/payments/initiate", json={**BODY, "gateway": "sandbox"},
                        headers=auth(key))
    assert named.status_code == 201 and named.json["gateway"] == "sandbox"
    assert db.scalar(select(func.count()).select_from(OnlinePayment)) == 1


def test_a_keys_use_is_recorded_even_when_its_request_is_refused(client, key, db):
    assert db.scalar(select(ApiKey.last_used_at)) is None
    answer = client.post("/payments/initiate", json={"amount": "x"}, headers=auth(key))
    assert answer.status_code == 422
    assert db.scalar(select(ApiKey.last_used_at)) is not None


def test_an_expired_or_abandoned_idempotency_key_starts_afresh(client, key, db):
    kept = client.post("/payments/initiate", json=BODY,
                       headers=auth(key, **{"Idempotency-Key": "old-1"}))
    assert kept.status_code == 201
    db.scalar(select(IdempotencyKey)).created_at = utcnow() - timedelta(hours=25)
    db.add(IdempotencyKey(lab_id=db.scalar(select(ApiKey.lab_id)), key="died-1",
                          fingerprint="x", in_flight=True,
                          created_at=utcnow() - timedelta(minutes=3)))
    db.commit()
    again = client.post("/payments/initiate", json=BODY,
                        headers=auth(key, **{"Idempotency-Key": "old-1"}))
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert again.json["id"] != kept.json["id"]
    retried = client.post("/payments/initiate", json={**BODY, "bill_reference": "B-9"},
                          headers=auth(key, **{"Idempotency-Key": "died-1"}))
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers
    rows = {row.key: row for row in db.scalars(select(IdempotencyKey))}
    assert set(rows) == {"old-1", "died-1"}
    assert not rows["old-1"].in_flight and rows["old-1"].response_status == 201
    assert not rows["died-1"].in_flight and rows["died-1"].response_status == 201
