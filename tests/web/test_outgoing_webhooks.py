"""Outgoing webhooks end to end: a real receiver on 127.0.0.1 (the lab in test mode) gets signed
events in order per link; retries after 500s and timeouts follow a clock the test moves; a
delivery fails after three days with the last answer kept; redelivery and secret rotation."""

from __future__ import annotations

import itertools
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.models import (
    DeliveryStatus,
    LinkStatus,
    OnlinePayment,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from portal.services import outhooks
from portal.worker.runner import wait_idle
from tests.api_helpers import make_api_key
from tests.conftest import csrf_from
from tests.fakes.lab_receiver import LabReceiver, signatures, verify
from tests.fakes.server import Fault
from tests.web.helpers import post_event, start_payment
from tests.web.test_api import validate


class Clock:
    """The time the webhook service and the job queue see; moved by the test, never slept."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def move(self, **delta) -> None:
        self.now += timedelta(**delta)

    def to(self, when) -> None:
        self.now = max(self.now, when)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("portal.services.outhooks.utcnow", clock)
    monkeypatch.setattr("portal.worker.queue.utcnow", clock)
    return clock


@pytest.fixture
def receiver():
    with LabReceiver() as server:
        yield server


@pytest.fixture
def api(app, db, lab):
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    app.config["PORTAL_API_RATE_LIMIT"] = 100_000
    return {"Authorization": f"Bearer {make_api_key(db, lab)}"}


def register(client, api, url: str, **body) -> dict:
    response = client.post("/webhook-endpoints", json={"url": url, **body}, headers=api)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def initiate(client, api, **body) -> dict:
    response = client.post("/payments/initiate", headers=api, json={
        "amount": 123450, "currency": "INR", "bill_reference": "B-77",
        "customer": {"name": "Asha Rao", "phone": "+919876543210"}, "expires_in": 86400,
        "metadata": {"lis_order": "77881"}, **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliveries(db) -> list[WebhookDelivery]:
    return list(db.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_events_arrive_signed_in_order_with_the_link_as_the_status_api_shows_it(
        app, client, db, api, receiver, clock):
    endpoint = register(client, api, f"{receiver.url}/hook")
    assert endpoint["events"] == list(outhooks.EVENT_TYPES)
    assert endpoint["secret"].startswith("whsec_")
    created = initiate(client, api)
    link = db.get(OnlinePayment, created["id"])
    reference = start_payment(client, link)
    assert post_event(client, reference).status_code == 200
    wait_idle(app)

    got = receiver.requests_to("POST", "/hook")
    assert [json.loads(r.body)["type"] for r in got] == ["link.created", "link.paid"]
    for request in got:
        assert verify(request.headers["Portal-Signature"], request.body, endpoint["secret"])
        assert not verify(request.headers["Portal-Signature"], request.body, "whsec_wrong")
        assert request.headers["Content-Type"] == "application/json"
        body = json.loads(request.body)
        assert set(body) == {"id", "type", "created", "data"}
        assert re.fullmatch(r"evt_[0-9a-f]{32}", body["id"])
        assert isinstance(body["created"], int) and abs(body["created"] - clock.now.timestamp()) < 5
    first, paid = (json.loads(r.body) for r in got)
    # Each body is what the OpenAPI document's `webhooks` section says it is.
    doc = client.get("/openapi.json").get_json()
    for body in (first, paid):
        operation = doc["webhooks"][body["type"]]["post"]
        content = operation["requestBody"]["content"]["application/json"]
        name = content["schema"]["$ref"].rsplit("/", 1)[1]
        validate(body, name)
        validate(content["example"], name)
    assert first["data"]["status"] == "created" and first["data"]["payments"] == []
    assert first["data"]["metadata"] == {"lis_order": "77881"}
    status = client.get(f"/payments/status/{created['id']}", headers=api).get_json()
    assert paid["data"] == status  # the very object GET /payments/status shows
    assert status["status"] == "paid" and status["payments"][0]["status"] == "succeeded"


def test_a_500_is_retried_with_backoff_and_a_later_event_of_the_link_waits(
        app, client, db, api, receiver, clock, build, lab):
    register(client, api, f"{receiver.url}/hook", events=["link.created", "link.cancelled"])
    receiver.add_fault(Fault("/hook", status=500, body=b'{"error": "database locked"}'))
    link_id = initiate(client, api)["id"]
    wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_status_code == 500 and "database locked" in delivery.last_response
    wait = delivery.next_attempt_at - clock.now
    assert timedelta(seconds=15) <= wait <= timedelta(seconds=30)  # 30 s with jitter

    # Cancelled meanwhile: that event waits behind the failed link.created.
    from portal.services.links import cancel_link, get_link
    cancel_link(db, get_link(db, lab.id, link_id), user_id=None)
    db.commit()
    wait_idle(app)
    assert [e["type"] for e in receiver.events()] == ["link.created"]

    clock.move(seconds=31)
    wait_idle(app)
    assert [e["type"] for e in receiver.events()] == ["link.created", "link.created",
                                                      "link.cancelled"]
    assert receiver.events()[0]["id"] == receiver.events()[1]["id"]  # the same event again
    assert all(d.status == DeliveryStatus.SUCCEEDED for d in deliveries(db))
    assert receiver.events()[2]["data"]["status"] == "cancelled"


def test_a_timeout_is_a_failed_attempt(app, client, db, api, receiver, clock):
    app.config["PORTAL_WEBHOOK_READ_TIMEOUT"] = 0.3
    register(client, api, f"{receiver.url}/hook")
    receiver.add_fault(Fault("/hook", delay=1.0))  # answers, but too late
    initiate(client, api)
    wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_status_code is None and "timeout" in delivery.last_error
    clock.to(delivery.next_attempt_at)
    wait_idle(app)
    assert deliveries(db)[0].status == DeliveryStatus.SUCCEEDED


def test_a_redirect_is_not_followed_and_counts_as_failed(app, client, db, api, receiver, clock):
    register(client, api, f"{receiver.url}/hook")
    receiver.redirect_to = f"{receiver.url}/internal"
    initiate(client, api)
    wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code == 302
    assert "not followed" in delivery.last_error
    assert receiver.requests_to("POST", "/internal") == []


def test_failed_after_three_days_with_the_last_answer_then_redelivered_by_an_admin(
        app, client, db, api, receiver, clock, admin_client, capsys):
    endpoint = register(client, api, f"{receiver.url}/hook")
    for _ in range(60):
        receiver.add_fault(Fault("/hook", status=503, body=b"maintenance window"))
    initiate(client, api)
    started = clock.now
    wait_idle(app)
    for _ in range(60):
        [delivery] = deliveries(db)
        if delivery.status != DeliveryStatus.PENDING:
            break
        clock.to(delivery.next_attempt_at)
        wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.finished_at - started >= timedelta(days=3)
    assert 10 <= delivery.attempts <= 40
    assert delivery.last_status_code == 503 and delivery.last_response == "maintenance window"
    attempts = list(db.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)))
    gaps = [b.attempted_at - a.attempted_at for a, b in itertools.pairwise(attempts)]
    with capsys.disabled():  # the delivery log of a retried event, as the admin page lists it
        print(f"\n{delivery.event.type} {delivery.event.public_id}: {delivery.status.value} "
              f"after {delivery.attempts} attempts")
        for a in attempts:
            print(f"  +{a.attempted_at - started}  HTTP {a.status_code} {a.response_excerpt}")
    assert gaps[0] < gaps[5] and max(gaps) <= timedelta(hours=6)  # exponential, capped

    page = admin_client.get(f"/admin/integrations/{endpoint['id']}").get_data(as_text=True)
    assert "maintenance window" in page and "Failed" in page
    receiver._faults.clear()
    # Redeliver needs the form's CSRF token.
    url = f"/admin/integrations/{endpoint['id']}/deliveries/{delivery.id}/redeliver"
    assert admin_client.post(url, data={}).status_code == 400
    response = admin_client.post(url, data={"csrf_token": csrf_from(page)})
    assert response.status_code == 303
    wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    bodies = [r.body for r in receiver.requests_to("POST", "/hook")]
    assert bodies[-1] == bodies[0]  # the same event, byte for byte


def test_rotation_signs_with_both_secrets_for_a_day(app, client, db, api, receiver, clock,
                                                      admin_client):
    endpoint = register(client, api, f"{receiver.url}/hook")
    page = admin_client.get(f"/admin/integrations/{endpoint['id']}").get_data(as_text=True)
    rotated = admin_client.post(f"/admin/integrations/{endpoint['id']}/rotate",
                                data={"csrf_token": csrf_from(page)})
    assert rotated.status_code == 200
    new_secret = re.search(r'id="new-secret" type="text" readonly value="([^"]+)"',
                           rotated.get_data(as_text=True)).group(1)
    assert new_secret != endpoint["secret"]
    initiate(client, api)
    wait_idle(app)
    [request] = receiver.requests_to("POST", "/hook")
    header = request.headers["Portal-Signature"]
    assert len(signatures(header)[1]) == 2
    assert verify(header, request.body, endpoint["secret"])
    assert verify(header, request.body, new_secret)

    clock.move(hours=25)
    initiate(client, api, bill_reference="B-78")
    wait_idle(app)
    header = receiver.requests_to("POST", "/hook")[-1].headers["Portal-Signature"]
    assert len(signatures(header)[1]) == 1
    assert verify(header, receiver.requests_to("POST", "/hook")[-1].body, new_secret)
    assert not verify(header, receiver.requests_to("POST", "/hook")[-1].body,
                      endpoint["secret"])


def test_only_wanted_events_and_enabled_endpoints_get_deliveries(app, client, db, api,
                                                                 receiver, clock, lab, build):
    wanted = register(client, api, f"{receiver.url}/hook", events=["link.paid"])
    register(client, api, f"{receiver.url}/all")
    initiate(client, api)
    wait_idle(app)
    assert receiver.events("/hook") == [] and len(receiver.events("/all")) == 1
    row = db.get(WebhookEndpoint, wanted["id"])
    assert row.event_types == ["link.paid"]
    # Another lab's links never reach this lab's endpoints.
    other = build.lab("other")
    build.link(other)
    wait_idle(app)
    assert len(receiver.events("/all")) == 1


def test_expiry_and_failed_payment_and_refund_events(app, client, db, api, receiver, clock,
                                                      build, lab):
    register(client, api, f"{receiver.url}/hook")
    link = build.link(lab)
    reference = start_payment(client, link)
    assert post_event(client, reference, succeeded=False).status_code == 200
    reference = start_payment(client, link)
    assert post_event(client, reference).status_code == 200
    expiring = build.link(lab, expires_at=utcnow() + timedelta(hours=1))
    from portal.services.expiry import expire_links
    assert expiring.id in expire_links(db, now=utcnow() + timedelta(hours=2))
    wait_idle(app)
    def of(link_id):  # in order per link; links between themselves go side by side
        return [e["type"] for e in receiver.events() if e["data"]["id"] == link_id]
    assert of(link.id) == ["link.created", "payment.failed", "link.paid"]
    assert of(expiring.id) == ["link.created", "link.expired"]
    assert db.get(type(link), expiring.id).status == LinkStatus.EXPIRED

    from portal.models import Payment
    from portal.services import events
    payment = db.scalar(select(Payment).where(Payment.reference == reference))
    first, second = build.refund(payment, 1000), build.refund(payment, 2000)
    _link, locked = events.lock_link_and_payment(db, payment.id)
    events.settle_refund(locked, db.get(type(first), first.id))
    events.fail_refund(db.get(type(second), second.id), "card closed")
    db.commit()
    wait_idle(app)
    settled, failed = receiver.events()[-2:]
    assert (settled["type"], failed["type"]) == ("refund.succeeded", "refund.failed")
    refunds = failed["data"]["payments"][-1]["refunds"]
    assert [r["status"] for r in refunds] == ["succeeded", "failed"]


def test_a_redirect_to_the_metadata_address_is_not_followed(app, client, db, api, receiver,
                                                            clock):
    register(client, api, f"{receiver.url}/hook")
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data/iam"
    initiate(client, api)
    wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.last_status_code == 302 and delivery.status == DeliveryStatus.PENDING
    assert delivery.last_error == ("redirect to http://169.254.169.254/latest/meta-data/iam "
                                   "not followed")


def test_a_huge_answer_is_cut_short(app, client, db, api, receiver, clock):
    register(client, api, f"{receiver.url}/hook")
    receiver.add_fault(Fault("/hook", status=500, body=b"E" * 2_000_000))
    initiate(client, api)
    wait_idle(app)
    [delivery] = deliveries(db)
    assert delivery.last_status_code == 500 and delivery.last_response == "E" * 300


def test_the_event_is_written_in_the_transaction_of_the_change(app, client, db, api, receiver,
                                                               clock, lab):
    from portal.models import WebhookEvent
    from portal.services.links import cancel_link, get_link

    register(client, api, f"{receiver.url}/hook")
    link_id = initiate(client, api)["id"]
    from portal.worker.runner import session_factory_of

    with session_factory_of(app)() as session:  # a plain session (`db` commits on each read)
        cancel_link(session, get_link(session, lab.id, link_id), user_id=None)
        session.flush()
        assert session.scalar(select(WebhookEvent.type).order_by(WebhookEvent.id.desc())
                              .limit(1)) == "link.cancelled"
        session.rollback()  # the cancellation is abandoned: so is its event
    assert [e.type for e in db.scalars(select(WebhookEvent))] == ["link.created"]
    assert len(deliveries(db)) == 1
