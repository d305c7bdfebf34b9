"""POST /payments/batch: many initiate bodies, every item checked first, all created or none."""

import json

import pytest
from sqlalchemy import func, select

from portal.models import Job, Notification, OnlinePayment
from tests.api_helpers import make_api_key
from tests.web.test_api import BODY, auth, validate


@pytest.fixture
def key(app, db, lab):
    return make_api_key(db, lab)


def item(n: int, **changes) -> dict:
    return {**BODY, "bill_reference": f"B-{n}", "customer": {
        "name": f"Patient {n}", "phone": f"+9198{n:08d}"}, **changes}


def links(db) -> int:
    return db.scalar(select(func.count()).select_from(OnlinePayment))


def test_batch_creates_every_link_in_order(client, key, db, lab):
    items = [item(1, notify=["sms"], language="hi"), item(2, amount=500, currency="USD"),
             item(3, metadata={"lis": "x"})]
    answer = client.post("/payments/batch", json={"items": items}, headers=auth(key))
    assert answer.status_code == 201, answer.json
    validate(answer.json, "BatchResponse")
    made = answer.json["items"]
    assert [(m["bill_reference"], m["amount"], m["currency"]) for m in made] == [
        ("B-1", 123450, "INR"), ("B-2", 500, "USD"), ("B-3", 123450, "INR")]
    assert made[0]["language"] == "hi" and made[2]["metadata"] == {"lis": "x"}
    rows = db.scalars(select(OnlinePayment).order_by(OnlinePayment.id)).all()
    assert [r.id for r in rows] == [m["id"] for m in made]
    assert all(r.lab_id == lab.id and r.created_by_id is None for r in rows)
    [sms] = db.scalars(select(Notification)).all()  # the outbox, as initiate does
    assert (sms.online_payment_id, sms.channel.value) == (rows[0].id, "sms")
    assert db.scalar(select(func.count()).select_from(Job).where(
        Job.kind == "notification.send")) == 1


def test_per_item_errors_and_nothing_created(client, key, db):
    items = [item(1), item(2, amount=0), {"currency": "INR"}, item(4, bill_reference="b-1"),
             "not an object", item(6, customer={"name": "X", "phone": "12"})]
    answer = client.post("/payments/batch", json={"items": items}, headers=auth(key))
    assert answer.status_code == 422
    validate(answer.json, "Error")
    error = answer.json["error"]
    assert error["code"] == "validation_failed"
    by_index = {p["index"]: p for p in error["items"]}
    assert sorted(by_index) == [1, 2, 3, 4, 5]
    assert by_index[1]["fields"] == {"amount": "Must be more than zero."}
    assert set(by_index[2]["fields"]) == {"amount", "bill_reference", "customer"}
    assert by_index[3]["code"] == "duplicate_bill_reference"
    assert by_index[3]["fields"] == {"bill_reference": "Also in item 0."}
    assert by_index[4]["code"] == "invalid_json"
    assert by_index[5]["fields"] == {"customer.phone": "Not a valid phone number."}
    assert links(db) == 0


@pytest.mark.parametrize(("body", "field"), [
    ({}, "items"), ({"items": []}, "items"), ({"items": {}}, "items"),
    ({"items": [item(1)], "extra": 1}, "extra"),
    ({"items": [item(i) for i in range(1001)]}, "items"),
])
def test_the_batch_itself_is_checked(client, key, db, body, field):
    answer = client.post("/payments/batch", json=body, headers=auth(key))
    assert answer.status_code in (413, 422), answer.json
    if answer.status_code == 422:
        assert field in answer.json["error"]["fields"]
    assert links(db) == 0


def test_a_thousand_items_fit_and_larger_bodies_are_refused(app, client, key, db):
    app.config["PORTAL_API_RATE_LIMIT"] = 1000
    items = [item(i) for i in range(1000)]
    answer = client.post("/payments/batch", json={"items": items}, headers=auth(key))
    assert answer.status_code == 201
    assert len(answer.json["items"]) == 1000 and links(db) == 1000
    padded = [item(i, description="x" * 500, metadata={"a": "y" * 500},
                   bill_reference=f"P-{i}") for i in range(1000)]
    too_big = client.post("/payments/batch", json={"items": padded}, headers=auth(key))
    assert too_big.status_code == 413
    assert too_big.json["error"]["code"] in ("payload_too_large", "request_entity_too_large")
    assert links(db) == 1000
    # the other operations keep their small limit
    assert client.post("/payments/initiate", json={**BODY, "description": "x" * 70_000},
                       headers=auth(key)).status_code == 413


def test_batch_is_all_or_nothing_when_creation_fails_half_way(client, key, db, monkeypatch):
    # The links are written (flushed) together; the batch then fails before its commit.
    written = []

    def failing(session, links, event_type, **kwargs):
        written.extend(link.bill_reference for link in links if link.id is not None)
        raise RuntimeError("database went away")

    monkeypatch.setattr("portal.services.links.emit_many", failing)
    answer = client.post("/payments/batch", json={"items": [item(i) for i in range(5)]},
                         headers=auth(key))
    assert answer.status_code == 500 and answer.json["error"]["code"] == "internal_error"
    assert links(db) == 0 and written == ["B-0", "B-1", "B-2", "B-3", "B-4"]


def test_idempotency_replays_the_batch(client, key, db):
    headers = auth(key, **{"Idempotency-Key": "round-2026-12-04"})
    body = {"items": [item(1), item(2)]}
    first = client.post("/payments/batch", json=body, headers=headers)
    again = client.post("/payments/batch", data=json.dumps(body, indent=1),
                        headers={**headers, "Content-Type": "application/json"})
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert links(db) == 2
    other = client.post("/payments/batch", json={"items": [item(1)]}, headers=headers)
    assert other.status_code == 422 and other.json["error"]["code"] == "idempotency_key_reused"
    # the same key on initiate is another request: refused, not replayed
    assert client.post("/payments/initiate", json=item(9), headers=headers).status_code == 422
    # a refused batch is kept as refused
    bad = auth(key, **{"Idempotency-Key": "bad-batch"})
    assert client.post("/payments/batch", json={"items": [{}]}, headers=bad).status_code == 422
    replay = client.post("/payments/batch", json={"items": [{}]}, headers=bad)
    assert replay.status_code == 422 and replay.headers["Idempotent-Replayed"] == "true"
    assert links(db) == 2


def test_batch_needs_the_key_and_a_gateway(client, key, db, lab):
    assert client.post("/payments/batch", json={"items": [item(1)]}).status_code == 401
    lab.default_gateway = "stripe"  # not set up
    db.commit()
    answer = client.post("/payments/batch", json={"items": [item(1)]}, headers=auth(key))
    assert answer.status_code == 422
    assert answer.json["error"]["code"] == "gateway_not_configured"
    assert links(db) == 0


def test_documented_batch_example_works(client, key, db):
    doc = client.get("/openapi.json").json
    operation = doc["paths"]["/payments/batch"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    answer = client.post("/payments/batch", json=example, headers=auth(key))
    assert answer.status_code == 201
    validate(answer.json, "BatchResponse")
    assert len(answer.json["items"]) == len(example["items"])
