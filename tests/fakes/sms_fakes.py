"""Local fakes of the SMS providers: Twilio's Messages API and a generic Indian HTTP provider."""

from __future__ import annotations

import base64
import json
import re
import secrets

from werkzeug.wrappers import Request, Response

from .server import FakeServer

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Messages\.json$")


def _json(body: dict, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class FakeTwilio(FakeServer):
    """Twilio's `POST /2010-04-01/Accounts/{sid}/Messages.json`: Basic auth, form fields.

    `fail` holds answers to give before succeeding again: (HTTP status, Twilio error code).
    """

    def __init__(self, account_sid: str, auth_token: str) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.fail: list[tuple[int, int]] = []

    def handle(self, request: Request) -> Response:
        match = MESSAGES_PATH.match(request.path)
        if request.method != "POST" or not match:
            return _json({"code": 20404, "message": "not found", "status": 404}, 404)
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != expected or match.group(1) != self.account_sid:
            return _json({"code": 20003, "message": "Authenticate", "status": 401}, 401)
        with self.lock:
            failure = self.fail.pop(0) if self.fail else None
        if failure:
            status, code = failure
            return _json({"code": code, "message": f"fake error {code}", "status": status,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status)
        form = request.form
        return _json({
            "sid": "SM" + secrets.token_hex(16), "account_sid": self.account_sid,
            "to": form.get("To"), "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"), "body": form.get("Body"),
            "status": "queued", "num_segments": "1", "direction": "outbound-api",
            "api_version": "2010-04-01", "price": None, "error_code": None,
            "date_created": "Thu, 26 Nov 2026 10:00:00 +0000",
            "date_updated": "Thu, 26 Nov 2026 10:00:00 +0000", "date_sent": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/SMxx.json",
        }, 201)


class FakeSmsProvider(FakeServer):
    """A generic provider: JSON in, `{"id": ...}` out; checks one API-key header."""

    def __init__(self, header: str, key: str) -> None:
        super().__init__()
        self.header = header
        self.key = key
        self.fail: list[int] = []  # HTTP statuses to answer before succeeding again

    def handle(self, request: Request) -> Response:
        if request.headers.get(self.header) != self.key:
            return _json({"status": "error", "message": "bad key"}, 401)
        with self.lock:
            status = self.fail.pop(0) if self.fail else None
        if status:
            return _json({"status": "error"}, status)
        return _json({"status": "accepted", "id": "msg_" + secrets.token_hex(6)}, 200)
