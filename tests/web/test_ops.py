"""/healthz, /readyz and /metrics in one process; request ids, JSON logs, one access line."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from gateways import sandbox
from portal import logmask, logs
from portal.extensions import make_engine
from portal.migrate import upgrade
from portal.models import Job, OutboxStatus, WorkerHeartbeat, utcnow
from portal.worker.queue import enqueue
from portal.worker.runner import Heartbeat, session_factory_of, wait_idle
from tests.conftest import csrf_from, make_app
from tests.web.helpers import SECRET, post_event, start_payment

TOKEN = "metrics-token-for-tests-0042"


def scrape(client, token: str = TOKEN):
    return client.get("/metrics", headers={"Authorization": f"Bearer {token}"})


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def beat(app) -> None:
    Heartbeat().beat(session_factory_of(app), force=True)


# --- /healthz and /readyz ----------------------------------------------------------------------

def test_healthz_answers_without_the_database(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch, "postgresql+psycopg://nobody@127.0.0.1:18202/none")
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 200 and answer.json == {"status": "ok"}


def test_readyz_when_the_database_is_unreachable(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch, "postgresql+psycopg://nobody@127.0.0.1:18202/none")
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json["status"] == "not ready"
    assert answer.json["checks"] == {"database": "unreachable"}
    assert answer.json["reasons"][0].startswith("database unreachable")
    assert "nobody" not in answer.get_data(as_text=True)  # no URL, no credentials


def test_readyz_when_the_schema_is_behind(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine, "0008")
    engine.dispose()
    app = make_app(tmp_path, monkeypatch, f"sqlite:///{path}")
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json["checks"] == {"database": "ok", "schema": "behind"}
    assert "database schema at 0008" in answer.json["reasons"][0]
    assert "portal db upgrade" in answer.json["reasons"][0]


def test_readyz_needs_a_worker_heartbeat_within_a_minute(app, client, db):
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["checks"] == {"database": "ok", "schema": "ok", "worker": "silent"}
    assert "no worker heartbeat" in answer.json["reasons"][0]

    beat(app)
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json == {"status": "ready",
                           "checks": {"database": "ok", "schema": "ok", "worker": "ok"}}

    row = db.scalars(select(WorkerHeartbeat)).one()
    row.seen_at = utcnow() - timedelta(seconds=61)
    db.commit()
    assert client.get("/readyz").status_code == 503


def test_a_worker_heartbeat_is_written_every_15_seconds_not_every_batch(app, db):
    heartbeat = Heartbeat()
    factory = session_factory_of(app)
    assert heartbeat.beat(factory) is True
    first = db.get(WorkerHeartbeat, heartbeat.worker_id).seen_at
    assert heartbeat.beat(factory) is False  # too soon: no write
    heartbeat.last -= 16
    assert heartbeat.beat(factory) is True
    assert db.get(WorkerHeartbeat, heartbeat.worker_id).seen_at > first


# --- /metrics -------------------------------------------------------------------------------------

def test_metrics_is_hidden_without_a_token_and_refused_with_a_wrong_one(app, client):
    assert client.get("/metrics").status_code == 404
    app.config["PORTAL_METRICS_TOKEN"] = TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = scrape(client, "metrics-token-for-tests-0043")
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert scrape(client, TOKEN + " ").status_code == 200  # surrounding spaces are ignored
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}
                      ).status_code == 401


def test_metrics_after_a_payment_a_webhook_a_notification_and_a_job(app, client, build, db):
    app.config["PORTAL_METRICS_TOKEN"] = TOKEN
    lab = build.lab("acme")
    link = build.link(lab)
    before = samples(scrape(client).get_data(as_text=True))

    reference = start_payment(client, link)  # a gateway call (the sandbox's checkout)
    assert post_event(client, reference).status_code == 200  # the payment succeeds
    assert post_event(client, "pay_nobody").status_code in (400, 404)  # a refused webhook
    enqueue(db, "expiry.sweep", {}, run_at=utcnow() - timedelta(seconds=30))
    db.commit()
    mid = scrape(client)
    assert mid.status_code == 200
    assert mid.headers["Content-Type"].startswith("text/plain; version=")
    found = samples(mid.get_data(as_text=True))
    assert value(found, "portal_job_queue_depth") >= 2  # the receipt's send and the sweep
    assert value(found, "portal_job_queue_oldest_seconds") >= 29
    assert value(found, "portal_database_up") == 1
    assert value(found, "portal_notifications_backlog", channel="email", state="queued") >= 1

    wait_idle(app)
    after = samples(scrape(client).get_data(as_text=True))

    def grew(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert grew("portal_webhooks_total", gateway="sandbox", outcome="applied") == 1
    assert grew("portal_webhooks_total", gateway="sandbox", outcome="unknown_reference") == 1
    assert grew("portal_payments_total", gateway="sandbox", outcome="succeeded") == 1
    assert grew("portal_notifications_total", channel="email", state="logged") >= 1
    assert grew("portal_jobs_total", kind="notification.send", outcome="done") >= 1
    assert grew("portal_jobs_total", kind="expiry.sweep", outcome="done") == 1
    assert grew("portal_gateway_call_duration_seconds_count", gateway="sandbox",
                kind="checkout_created") == 1
    assert grew("portal_http_request_duration_seconds_count", method="POST",
                route="/payments/webhook/<gateway>", status="200") == 1
    assert grew("portal_http_request_duration_seconds_count", method="GET",
                route="/pay/<token>", status="200") == 1
    assert value(after, "portal_job_queue_depth") == 0
    assert value(after, "portal_job_queue_oldest_seconds") == 0
    paths = " ".join(str(key) for key in after)
    assert link.token not in paths  # routes are URL rules, never raw paths


def test_gateway_call_errors_are_counted_by_code(app, client, build, monkeypatch):
    from gateways.base import GatewayError
    from gateways.sandbox import SandboxGateway

    app.config["PORTAL_METRICS_TOKEN"] = TOKEN
    link = build.link(build.lab("acme"))
    before = samples(scrape(client).get_data(as_text=True))

    def unreachable(self, request):
        raise GatewayError("connection refused", code="unreachable", retryable=True)

    monkeypatch.setattr(SandboxGateway, "create_checkout", unreachable)
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert client.post(f"/pay/{link.token}",
                       data={"csrf_token": csrf_from(page)}).status_code == 503
    after = samples(scrape(client).get_data(as_text=True))
    labels = {"gateway": "sandbox", "kind": "checkout_created", "code": "unreachable"}
    assert (value(after, "portal_gateway_call_errors_total", **labels) or 0) - \
        (value(before, "portal_gateway_call_errors_total", **labels) or 0) == 1


def test_metrics_say_when_the_database_cannot_be_read(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch, "postgresql+psycopg://nobody@127.0.0.1:18202/none",
                   PORTAL_METRICS_TOKEN=TOKEN)
    answer = scrape(app.test_client())
    assert answer.status_code == 200
    found = samples(answer.get_data(as_text=True))
    assert value(found, "portal_database_up") == 0
    assert value(found, "portal_job_queue_depth") is None


# --- request ids and log lines ---------------------------------------------------------------

def test_a_clients_made_up_method_adds_no_series(app, client):
    app.config["PORTAL_METRICS_TOKEN"] = TOKEN
    assert client.open("/healthz", method="BREW").status_code == 405
    text = scrape(client).get_data(as_text=True)
    assert "BREW" not in text
    assert 'method="other"' in text


def test_a_sane_request_id_is_kept_and_echoed_any_other_replaced(client):
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a9c:0001"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a9c:0001"
    made = client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) == 32
    for hostile in ("two words", "x" * 101, "<script>", "id\u00e9", "-leading-dash"):
        answer = client.get("/healthz", headers={"X-Request-ID": hostile})
        assert answer.headers["X-Request-ID"] != hostile
        assert len(answer.headers["X-Request-ID"]) == 32


def test_one_access_line_per_request_with_the_route_and_the_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="portal.access"):
        answer = client.get("/pay/abcdefghijklmnop/status.json",
                            headers={"X-Request-ID": "req-42"})
    assert answer.status_code == 404
    lines = [r for r in caplog.records if r.name == "portal.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line.request_id == "req-42" and line.status == 404 and line.method == "GET"
    assert line.path == "/pay/abcdef…/status.json"  # the token cut short
    assert line.route == "/pay/<token>/status.json"
    assert line.duration_ms >= 0


def test_the_request_id_follows_a_webhook_into_the_job_it_enqueued(app, client, build, db,
                                                                    caplog):
    link = build.link(build.lab("acme"))
    reference = start_payment(client, link)
    body_id = "webhook-req-0001"
    event = sandbox.build_event("evt_rid_1", True, reference, link.amount, link.currency)
    answer = client.post("/payments/webhook/sandbox", data=event, headers={
        "Sandbox-Signature": sandbox.sign(SECRET, event, int(time.time())),
        "Content-Type": "application/json", "X-Request-ID": body_id})
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == body_id
    sends = db.scalars(select(Job).where(Job.kind == "notification.send")).all()
    assert sends and all(job.payload["request_id"] == body_id for job in sends)

    with caplog.at_level(logging.INFO, logger="portal.worker.runner"):
        wait_idle(app)
    mine = [r for r in caplog.records if "(notification.send) done in" in r.getMessage()]
    assert mine and all(r.request_id == body_id for r in mine)
    assert logs.request_id.get() is None  # reset after each job
    assert all(j.status == OutboxStatus.DONE for j in
               db.scalars(select(Job).where(Job.kind == "notification.send")))


def test_json_lines_carry_the_fields_and_stay_masked(monkeypatch):
    secret = "sk_live_" + "S3cr3tValue" * 3
    logmask.remember([secret])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.prepare(handler, json_format=True)
    logmask.install_on(handler)
    logger = logging.getLogger("portal.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    token = logs.set_request_id("rid-json-1")
    try:
        logger.warning("gateway refused key %s", secret)
        logging.getLogger("portal.access").addHandler(handler)
        logging.getLogger("portal.access").warning(
            "x", extra={"method": "GET", "path": "/pay/abc…", "status": 200,
                        "duration_ms": 1.5})
        try:
            raise ValueError(f"boom {secret}")
        except ValueError:
            logger.exception("failed")
    finally:
        logs.reset_request_id(token)
        logger.removeHandler(handler)
        logging.getLogger("portal.access").removeHandler(handler)
        logger.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first, access, failure = lines
    assert set(first) == {"time", "level", "logger", "message", "request_id"}
    assert first["level"] == "WARNING" and first["logger"] == "portal.test.json"
    assert first["request_id"] == "rid-json-1" and first["time"].endswith("Z")
    assert secret not in stream.getvalue() and "[masked]" in first["message"]
    assert (access["method"], access["path"], access["status"], access["duration_ms"]) == \
        ("GET", "/pay/abc…", 200, 1.5)
    assert "ValueError" in failure["exception"]

