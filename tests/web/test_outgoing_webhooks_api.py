"""`/webhook-endpoints` and the guard against server-side request forgery: outside test mode no
URL may lead the portal to loopback, private, link-local or reserved addresses, however written
(decimal and octal IPs, IPv6, names resolving there, a name re-pointed after registration)."""

from __future__ import annotations

import logging
import socket

import pytest
from sqlalchemy import select

from portal.models import AuditLog, DeliveryStatus, Role, WebhookDelivery, WebhookEndpoint
from portal.services import outhooks
from portal.services.keys import decrypt
from portal.worker.runner import wait_idle
from tests.api_helpers import make_api_key
from tests.fakes.lab_receiver import LabReceiver

PUBLIC = "93.184.215.14"


@pytest.fixture
def api(app, db, lab):
    app.config["PORTAL_API_RATE_LIMIT"] = 100_000
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = ""
    return {"Authorization": f"Bearer {make_api_key(db, lab)}"}


@pytest.fixture
def dns(monkeypatch):
    """Names the test points where it likes; anything else resolves as usual."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            addresses = table[host]
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, port)) for a in addresses]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


FORBIDDEN_URLS = [
    "https://127.0.0.1/hook", "https://127.1.2.3:8443/hook", "https://10.0.0.8/hook",
    "https://172.16.5.4/", "https://192.168.1.1/", "https://100.64.0.1/",
    "https://169.254.169.254/latest/meta-data/", "https://[::1]/hook", "https://[fd00::1]/",
    "https://[fe80::1]/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:a9fe:a9fe]/",
    "https://0.0.0.0/", "https://224.0.0.1/", "https://240.0.0.1/",
    "https://2130706433/",  # 127.0.0.1 as one decimal number
    "https://0177.0.0.1/",  # octal
    "https://0x7f.1/",  # hex, short form
    "https://017700000001/", "https://localhost/hook", "https://localhost./hook",
    "https://internal.lab.test/", "https://metadata.lab.test/", "https://mixed.lab.test/",
]


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_addresses_inside_the_network_are_refused_outside_test_mode(client, db, api, dns, url):
    dns.update({"internal.lab.test": ["10.1.2.3"], "metadata.lab.test": ["169.254.169.254"],
                "mixed.lab.test": [PUBLIC, "127.0.0.1"]})
    response = client.post("/webhook-endpoints", json={"url": url}, headers=api)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "forbidden_address"
    assert db.scalar(select(WebhookEndpoint.id)) is None


def test_a_public_address_is_accepted_and_only_https_in_production(app, client, db, api, dns):
    dns["hooks.example-lab.com"] = [PUBLIC]
    app.config["PORTAL_BASE_URL"] = "https://pay.example.com"
    refused = client.post("/webhook-endpoints", headers=api,
                          json={"url": "http://hooks.example-lab.com/in"})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "https_required"
    ok = client.post("/webhook-endpoints", headers=api,
                     json={"url": "https://hooks.example-lab.com/in", "events": ["link.paid"],
                           "description": "LIS"})
    assert ok.status_code == 201
    body = ok.get_json()
    assert set(body) == {"id", "url", "description", "events", "enabled", "created_at",
                         "secret"}
    assert body["events"] == ["link.paid"]
    # The secret is stored encrypted and never shown again.
    row = db.get(WebhookEndpoint, body["id"])
    assert body["secret"].encode() not in row.secret_encrypted
    assert decrypt(app.config["PORTAL_ENCRYPTION_KEYS"], row.secret_encrypted) == {
        "secret": body["secret"]}
    listed = client.get("/webhook-endpoints", headers=api)
    assert listed.status_code == 200
    assert body["secret"] not in listed.get_data(as_text=True)
    assert [e["id"] for e in listed.get_json()["data"]] == [body["id"]]
    assert db.scalar(select(AuditLog.action).where(AuditLog.object_type == "webhook_endpoint")) \
        == "webhook_endpoint.create"


def test_a_name_re_pointed_inside_after_registration_is_refused_at_delivery(
        app, client, db, api, dns, build, lab):
    """DNS rebinding: the address is checked again when sending, and the request goes to the
    address that was checked."""
    with LabReceiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        dns["rebind.example-lab.com"] = [PUBLIC]
        response = client.post("/webhook-endpoints", headers=api,
                               json={"url": f"http://rebind.example-lab.com:{port}/hook"})
        assert response.status_code == 201
        dns["rebind.example-lab.com"] = ["127.0.0.1"]
        build.link(lab)
        wait_idle(app)
        assert receiver.requests == []
    delivery = db.scalar(select(WebhookDelivery))
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.last_error.startswith("refused:") and "127.0.0.1" in delivery.last_error


def test_delivery_goes_to_the_checked_address_with_the_url_host(app, client, db, api, dns,
                                                                build, lab):
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = lab.slug  # this lab only
    with LabReceiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        dns["lis.acme.test"] = ["127.0.0.1"]
        assert client.post("/webhook-endpoints", headers=api, json={
            "url": f"http://lis.acme.test:{port}/hook?src=portal"}).status_code == 201
        build.link(lab)
        wait_idle(app)
        [request] = receiver.requests
    assert request.headers["Host"] == f"lis.acme.test:{port}"
    assert request.query == {"src": "portal"}
    assert request.headers["User-Agent"].startswith("LabPaymentPortal-Webhooks")


def test_test_mode_is_the_operators_choice_per_lab(app, build, lab):
    other = build.lab("other")
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "acme, third"
    assert outhooks.in_test_mode(app.config, lab)
    assert not outhooks.in_test_mode(app.config, other)
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    assert outhooks.in_test_mode(app.config, other)
    assert outhooks.check_url("http://127.0.0.1:9/x", app.config, other).addresses == (
        "127.0.0.1",)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 422, "validation_failed"),
    ({"url": 5}, 422, "validation_failed"),
    ({"url": "https://x.example/", "colour": "red"}, 422, "validation_failed"),
    ({"url": "https://x.example/", "events": "link.paid"}, 422, "validation_failed"),
    ({"url": "https://x.example/", "events": ["link.paid", "link.eaten"]}, 422,
     "unknown_event_type"),
    ({"url": "https://x.example/", "events": []}, 422, "no_event_types"),
    ({"url": "ftp://x.example/"}, 422, "invalid_url"),
    ({"url": "https://user:pw@x.example/"}, 422, "invalid_url"),
    ({"url": "https://x.example:99999/"}, 422, "invalid_url"),
    ({"url": "https://no-such-host.invalid/"}, 422, "unresolvable_host"),
    ({"url": "https://x.example/" + "a" * 2000}, 422, "invalid_url"),
    ({"url": "https://x.example/", "description": "d" * 201}, 422, "validation_failed"),
])
def test_bad_requests_get_stable_codes(client, api, dns, body, status, code):
    dns["x.example"] = [PUBLIC]
    response = client.post("/webhook-endpoints", json=body, headers=api)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_auth_tenancy_delete_and_not_found(client, db, api, dns, build):
    dns["x.example"] = [PUBLIC]
    assert client.get("/webhook-endpoints").status_code == 401
    created = client.post("/webhook-endpoints", headers=api,
                          json={"url": "https://x.example/"}).get_json()
    other_lab = build.lab("other")
    other = {"Authorization": f"Bearer {make_api_key(db, other_lab)}"}
    assert client.get("/webhook-endpoints", headers=other).get_json() == {"data": []}
    missing = client.delete(f"/webhook-endpoints/{created['id']}", headers=other)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    assert client.delete(f"/webhook-endpoints/{created['id']}", headers=api).status_code == 204
    assert client.delete(f"/webhook-endpoints/{created['id']}", headers=api).status_code == 404
    assert client.get("/webhook-endpoints", headers=api).get_json() == {"data": []}
    assert client.delete("/webhook-endpoints/99999999999999", headers=api).status_code == 404


def test_secrets_are_masked_in_logs(app, client, db, api, dns, monkeypatch, lab):
    from portal import logmask

    dns["x.example"] = [PUBLIC]
    secret = client.post("/webhook-endpoints", headers=api,
                         json={"url": "https://x.example/"}).get_json()["secret"]
    record = logging.makeLogRecord({"msg": "signed with %s", "args": (secret,)})
    logmask.MaskingFilter().filter(record)
    assert secret not in record.getMessage() and "[masked]" in record.getMessage()

    # Another process learns it when it decrypts it to sign, before it could log it.
    monkeypatch.setattr(logmask, "SECRETS", logmask.SecretRegistry())
    endpoint = db.scalar(select(WebhookEndpoint))
    outhooks.signing_secrets(app.config["PORTAL_ENCRYPTION_KEYS"], endpoint, endpoint.created_at)
    assert secret in logmask.SECRETS


def test_keys_rotate_re_encrypts_endpoint_secrets(app, client, db, api, dns):
    from cryptography.fernet import Fernet

    from tests.web.test_cli import invoke

    dns["x.example"] = [PUBLIC]
    secret = client.post("/webhook-endpoints", headers=api,
                         json={"url": "https://x.example/"}).get_json()["secret"]
    old_key = app.config["PORTAL_ENCRYPTION_KEYS"][0]
    new_key = Fernet.generate_key().decode()
    app.config["PORTAL_ENCRYPTION_KEYS"] = [new_key, old_key]
    result = invoke(app, ["keys", "rotate"])
    assert result.exit_code == 0 and "secrets of 1 webhook endpoint(s)" in result.output
    row = db.scalar(select(WebhookEndpoint))
    assert decrypt([new_key], row.secret_encrypted) == {"secret": secret}


def test_a_stalled_delivery_is_resumed_by_the_sweep(app, db, build, lab):
    """A delivery whose job was lost (a worker died past its retries) is picked up again."""
    from datetime import timedelta

    from portal.models import Job, OutboxStatus, utcnow

    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    outhooks.create_endpoint(db, app.config, lab, "http://127.0.0.1:9/hook")
    db.commit()
    build.link(lab)
    for job in db.scalars(select(Job).where(Job.kind == outhooks.JOB_KIND)):
        job.status = OutboxStatus.DEAD
    db.commit()
    assert outhooks.resume_stalled(db, now=utcnow()) == 0  # not overdue yet
    assert outhooks.resume_stalled(db, now=utcnow() + timedelta(minutes=11)) == 1
    db.commit()
    assert db.scalar(select(Job.status).where(Job.kind == outhooks.JOB_KIND)
                     .order_by(Job.id.desc()).limit(1)) == OutboxStatus.QUEUED


def test_the_secret_is_not_kept_by_idempotency(app, client, db, api, dns):
    """An Idempotency-Key would store the answer, secret and all: this POST ignores it."""
    from portal.models import IdempotencyKey

    dns["x.example"] = [PUBLIC]
    headers = {**api, "Idempotency-Key": "hook-1"}
    first = client.post("/webhook-endpoints", headers=headers, json={"url": "https://x.example/"})
    assert first.status_code == 201
    assert db.scalar(select(IdempotencyKey.id)) is None


def test_the_openapi_document_describes_every_event_body(client):
    from tests.web.test_api import validate

    doc = client.get("/openapi.json").get_json()
    assert set(doc["webhooks"]) == set(outhooks.EVENT_TYPES)
    for event_type, item in doc["webhooks"].items():
        assert item["post"]["operationId"] == "event_" + event_type.replace(".", "_")
        content = item["post"]["requestBody"]["content"]["application/json"]
        name = content["schema"]["$ref"].rsplit("/", 1)[1]
        validate(content["example"], name)
        assert "Portal-Signature" in item["post"]["description"]
        with pytest.raises(Exception, match="was expected"):
            validate({**content["example"], "type": "link.other"}, name)
    for path in ("/webhook-endpoints", "/webhook-endpoints/{id}"):
        assert path in doc["paths"]


def test_an_international_name_is_sent_in_its_ascii_form(app, lab, dns):
    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    dns["xn--lbor-loa.example"] = ["127.0.0.1"]
    target = outhooks.check_url("http://läbor.example:8080/in", app.config, lab)
    assert target.host == "xn--lbor-loa.example"
    assert target.host_header == "xn--lbor-loa.example:8080"
    with pytest.raises(outhooks.EndpointError) as refused:
        outhooks.check_url("https://" + "a" * 70 + ".example/", app.config, lab)
    assert refused.value.code == "invalid_url"


def test_only_the_labs_admins_see_its_endpoints(app, client, db, build, lab, staff_client):
    from tests.conftest import sign_in

    app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    endpoint = outhooks.create_endpoint(db, app.config, lab, "http://127.0.0.1:9/hook").endpoint
    db.commit()
    assert staff_client.get("/admin/integrations").status_code == 403
    assert staff_client.get(f"/admin/integrations/{endpoint.id}").status_code == 403
    other = build.lab("other")
    stranger = build.user(other, "admin@other.test", role=Role.ADMIN)
    other_client = app.test_client()
    assert sign_in(other_client, stranger.email).status_code == 302
    assert other_client.get(f"/admin/integrations/{endpoint.id}").status_code == 404
    assert "127.0.0.1:9" not in other_client.get("/admin/integrations").get_data(as_text=True)
