"""Each library logs its error with a secret in it; no secret reaches a handler's output.

An upstream that echoes the credential it was sent (as a careless gateway, SMS provider or proxy
does in its error text and headers) makes `stripe`, `httpx`/`httpcore` (Square's SDK),
`twilio` and `urllib3` log it at INFO or DEBUG, and the portal then logs the failure with its
traceback. A witness handler placed ahead of the filter proves each secret really was in a
record; the handlers set up as in production (before the app, like `basicConfig`) must not
show one. Every record is checked: formatted message, arguments, traceback, stack, extras.
"""

import base64
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
from werkzeug.wrappers import Request, Response

from gateways.base import GatewayError
from portal import cli
from portal.notify import DeliveryError
from portal.notify.sms import Sms, send_sms
from portal.services.keys import configured_gateway, save_credentials
from tests.conftest import make_app
from tests.fakes.server import FakeServer

STRIPE_KEY = "sk_test_51EchoedBackStripeKey0007"
STRIPE_WEBHOOK = "whsec_EchoedBackWebhookSecret0007"
SQUARE_TOKEN = "EAAAlEchoedBackSquareAccessToken0007"
SQUARE_SIGNATURE_KEY = "square-signature-key-0007"
TWILIO_SID = "AC" + "0" * 31 + "7"
TWILIO_TOKEN = "twilio-auth-token-echoed-0007"
SMS_KEY = "sms-api-key-echoed-0007"
SMS_URL_KEY = "sms-url-key-in-query-0007"
SECRETS = [STRIPE_KEY, STRIPE_WEBHOOK, SQUARE_TOKEN, SQUARE_SIGNATURE_KEY, TWILIO_TOKEN,
           SMS_KEY, SMS_URL_KEY]
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class EchoingUpstream(FakeServer):
    """Answers 401 to everything, quoting the credential it was sent in its body and headers."""

    def handle(self, request: Request) -> Response:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            credential = base64.b64decode(credential).decode().partition(":")[2]
        text = f"Invalid API Key provided: {credential}"
        body = {"error": {"type": "invalid_request_error", "message": text},  # Stripe
                "errors": [{"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED",
                            "detail": text}],  # Square
                "code": 20003, "message": text, "status": 401}  # Twilio
        return Response(json.dumps(body), status=401, content_type="application/json",
                        headers={"X-Echo": credential})


class Witness(logging.Handler):
    """Keeps each record as it arrives, formatted, before any masking filter has run."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[tuple[str, str]] = []

    def emit(self, record):
        self.lines.append((record.name, self.format(record)))
        record.exc_text = None  # the formatter cached it: let the filter start afresh

    def text(self, logger_prefix: str) -> str:
        return "\n".join(line for name, line in self.lines if name.startswith(logger_prefix))


class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logs(app, tmp_path, monkeypatch):
    """An app whose root logger is set up before it, as `portal serve` and `worker` do.

    It shares the database of the `app` fixture (which `db` and `build` use), made first.
    """
    root = logging.getLogger()
    stream = io.StringIO()
    production = logging.StreamHandler(stream)
    production.setFormatter(logging.Formatter(FORMAT))
    kept = Kept()
    root.addHandler(production)
    root.addHandler(kept)
    level = root.level
    root.setLevel(logging.DEBUG)
    with EchoingUpstream() as upstream:
        ours = make_app(tmp_path / "ours", monkeypatch, app.config["PORTAL_DATABASE_URL"],
                       PORTAL_STRIPE_API_BASE=upstream.url,
                       PORTAL_SQUARE_API_BASE=upstream.url,
                       PORTAL_TWILIO_ACCOUNT_SID=TWILIO_SID,
                       PORTAL_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
                       PORTAL_TWILIO_FROM="+15005550006",
                       PORTAL_TWILIO_API_BASE=upstream.url,
                       PORTAL_SMS_HTTP_URL=f"{upstream.url}/send?api_key={SMS_URL_KEY}",
                       PORTAL_SMS_HTTP_API_KEY=f"Bearer {SMS_KEY}")
        witness = Witness()
        root.handlers.insert(0, witness)  # after create_app: it alone stays unfiltered
        try:
            yield SimpleNamespace(app=ours, witness=witness, stream=stream, kept=kept)
        finally:
            for handler in (witness, production, kept):
                root.removeHandler(handler)
            root.setLevel(level)
            ours.extensions["portal_db"].engine.dispose()


def fail_like_a_job(action):
    """Runs a call that must fail and logs it as the worker logs a failed job."""
    with pytest.raises((GatewayError, DeliveryError)) as caught:
        action()
    logging.getLogger("portal.worker.runner").warning(
        "job %s (%s) failed: %s", 7, "test", caught.value, exc_info=caught.value,
        extra={"detail": repr(caught.value)})
    return caught.value


def assert_no_secret(logs, secrets=SECRETS):
    output = logs.stream.getvalue()
    assert "[masked]" in output
    assert "Traceback (most recent call last)" in output
    for record in logs.kept.records:
        seen = [record.getMessage(), repr(record.args), str(record.exc_text),
                str(record.stack_info), repr(vars(record))]
        assert record.exc_info is None
        for secret in secrets:
            assert secret not in output
            assert all(secret not in text for text in seen), (secret, record.name)


def sms(**fields) -> Sms:
    return Sms(to="+919876543210", text="Pay here", log_text="Pay here", kind="link",
               reference="n-7", sender_id="LABSMS", dlt_entity_id="1101",
               dlt_template_id="1107", **fields)


def test_stripe_error_with_the_whole_key(logs, db, build):
    lab = build.lab(sandbox_secret=None)
    save_credentials(db, logs.app.config["PORTAL_ENCRYPTION_KEYS"], lab, "stripe", {
        "secret_key": STRIPE_KEY, "publishable_key": "pk_test_public0007",
        "webhook_secret": STRIPE_WEBHOOK})
    db.commit()
    gateway = configured_gateway(db, logs.app.config, lab.id, "stripe")
    error = fail_like_a_job(gateway.test_connection)
    assert error.code == "bad_credentials"
    assert STRIPE_KEY in logs.witness.text("stripe")  # the SDK's own INFO line
    assert STRIPE_KEY in logs.witness.text("portal")  # the job's message and traceback
    assert "Stripe v1 API error received" in logs.stream.getvalue()
    assert "Invalid API Key provided: sk_test_…[masked]" in logs.stream.getvalue()
    assert_no_secret(logs)


def test_square_sdk_over_httpx(logs, db, build):
    lab = build.lab(sandbox_secret=None)
    save_credentials(db, logs.app.config["PORTAL_ENCRYPTION_KEYS"], lab, "square", {
        "access_token": SQUARE_TOKEN, "location_id": "LOC0007",
        "webhook_signature_key": SQUARE_SIGNATURE_KEY})
    db.commit()
    gateway = configured_gateway(db, logs.app.config, lab.id, "square")
    fail_like_a_job(gateway.test_connection)
    assert 'HTTP Request: GET' in logs.witness.text("httpx")
    assert SQUARE_TOKEN in logs.witness.text("httpcore")  # the response headers, at DEBUG
    assert SQUARE_TOKEN in logs.witness.text("portal")
    assert_no_secret(logs)


def test_twilio_client_logging(logs):
    logs.app.config["PORTAL_SMS_BACKEND"] = "twilio"
    error = fail_like_a_job(lambda: send_sms(logs.app.config, sms()))
    assert TWILIO_TOKEN in str(error)  # the provider's words, kept for staff
    assert "-- BEGIN Twilio API Request --" in logs.witness.text("twilio")
    assert TWILIO_TOKEN in logs.witness.text("twilio")  # "Response Headers: {...}"
    assert TWILIO_TOKEN in logs.witness.text("portal")
    assert_no_secret(logs)


def test_urllib3_debug_logging_of_a_secret_url_and_header(logs):
    logs.app.config["PORTAL_SMS_BACKEND"] = "http"
    fail_like_a_job(lambda: send_sms(logs.app.config, sms()))
    assert SMS_URL_KEY in logs.witness.text("urllib3")  # "POST /send?api_key=... HTTP/1.1"
    assert "/send?api_key=…[masked]" in logs.stream.getvalue()
    assert_no_secret(logs)


def test_gunicorn_error_and_access_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTAL_SMS_HTTP_API_KEY", SMS_KEY)
    server = cli.gunicorn_server("127.0.0.1", 0, 1, 1, False)
    error_file, access_file = tmp_path / "error.log", tmp_path / "access.log"
    server.cfg.set("errorlog", str(error_file))
    server.cfg.set("accesslog", str(access_file))
    server.cfg.set("loglevel", "debug")
    log = server.cfg.logger_class(server.cfg)
    try:
        try:
            raise OSError(f"upstream refused key {SMS_KEY}")
        except OSError:
            log.exception("Error handling request /hook?key=%s", SMS_KEY)
        log.debug("Invalid request from ip=10.0.0.1: bad header %r", f"X-Key: {SMS_KEY}")
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/send?api_key={SMS_KEY}",
                   "PATH_INFO": "/send", "QUERY_STRING": f"api_key={SMS_KEY}",
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1"}
        response = SimpleNamespace(status="401 UNAUTHORIZED", headers=[], sent=12,
                                   response_length=12)
        request = SimpleNamespace(headers=[("AUTHORIZATION", f"Bearer {SMS_KEY}")])
        log.access(response, request, environ, timedelta(milliseconds=3))
    finally:
        for handler in log.error_log.handlers + log.access_log.handlers:
            handler.close()
        log.error_log.handlers.clear()
        log.access_log.handlers.clear()
    errors, access = error_file.read_text(), access_file.read_text()
    assert "Error handling request /hook?key=…[masked]" in errors
    assert "OSError: upstream refused key …[masked]" in errors
    assert "Invalid request from ip=10.0.0.1" in errors
    assert '"GET /send?api_key=…[masked] HTTP/1.1" 401' in access
    assert SMS_KEY not in errors + access


def test_portal_serve_masks_worker_lines_with_settings_and_stored_secrets(app, db, build,
                                                                         tmp_path):
    """The real server: gunicorn's arbiter and worker processes, the app built after fork."""
    lab = build.lab(sandbox_secret="whsec_stored-only-in-the-database-0007")
    assert lab.id
    db.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PORTAL_DATABASE_URL": app.config["PORTAL_DATABASE_URL"],
           "PORTAL_SMS_HTTP_API_KEY": SMS_KEY, "PYTHONUNBUFFERED": "1"}
    stderr = tmp_path / "serve.log"
    with open(stderr, "wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-c", "from portal.cli import main; main()", "serve",
             "--port", str(port), "--workers", "1", "--threads", "2"],
            env=env, stdout=err, stderr=err)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail(stderr.read_text())
        for secret in (SMS_KEY, "whsec_stored-only-in-the-database-0007"):
            assert requests.get(f"{base}/nowhere/{secret}", timeout=5).status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=20)
    output = stderr.read_text()
    assert "Listening at: " + base in output  # gunicorn's own error log
    assert "portal.access: 127.0.0.1 GET /nowhere/…[masked] 404" in output
    assert "GET /nowhere/whsec_…[masked] 404" in output
    assert SMS_KEY not in output and "stored-only-in-the-database" not in output
