"""A local fake of Meta's WhatsApp Cloud API messages endpoint: `POST /{version}/{id}/messages`.

It checks the Bearer token and the phone number id, checks a template message the way the Cloud
API does (the template must exist in that language with that many body variables), and answers
with Meta's shapes: `{"messaging_product", "contacts", "messages": [{"id": "wamid..."}]}` or
`{"error": {"message", "type", "code", "error_subcode"?, "fbtrace_id"}}`.
"""

from __future__ import annotations

import json
import re
import secrets

from werkzeug.wrappers import Request, Response

from .server import FakeServer

MESSAGES_PATH = re.compile(r"^/(v\d+\.\d+)/(\d+)/messages$")


def _json(body: dict, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: int, message: str, kind: str = "OAuthException") -> Response:
    return _json({"error": {"message": message, "type": kind, "code": code,
                            "fbtrace_id": "A" + secrets.token_hex(8)}}, status)


class FakeWhatsApp(FakeServer):
    """`templates` maps (name, language code) to the number of body variables approved.

    `fail` holds answers to give before succeeding again: (HTTP status, Meta error code).
    """

    def __init__(self, phone_number_id: str, token: str,
                 templates: dict[tuple[str, str], int]) -> None:
        super().__init__()
        self.phone_number_id = phone_number_id
        self.token = token
        self.templates = templates
        self.fail: list[tuple[int, int]] = []
        self.sent: list[dict] = []
        self.echo_token = False  # a careless provider: the refused token in its error text

    def handle(self, request: Request) -> Response:
        match = MESSAGES_PATH.match(request.path)
        if request.method != "POST" or not match:
            return _error(400, 100, "Unsupported post request.", "GraphMethodException")
        presented = request.headers.get("Authorization", "")
        if presented != f"Bearer {self.token}":
            echoed = f" {presented}" if self.echo_token else ""
            return _error(401, 190, "Invalid OAuth access token - Cannot parse access token"
                          + echoed)
        if match.group(2) != self.phone_number_id:
            return _error(400, 100, "Unsupported post request. Object with ID does not exist",
                          "GraphMethodException")
        with self.lock:
            failure = self.fail.pop(0) if self.fail else None
        if failure:
            status, code = failure
            return _error(status, code, f"fake error {code}")
        try:
            body = json.loads(request.get_data())
            template = body["template"]
            name, language = template["name"], template["language"]["code"]
            [component] = [c for c in template.get("components", []) if c["type"] == "body"]
            values = [p["text"] for p in component["parameters"] if p["type"] == "text"]
        except (ValueError, KeyError, TypeError):
            return _error(400, 100, "(#100) Invalid parameter")
        if body.get("messaging_product") != "whatsapp" or body.get("type") != "template":
            return _error(400, 100, "(#100) Invalid parameter")
        if (name, language) not in self.templates:
            return _error(404, 132001, "(#132001) Template name does not exist in the "
                                       "translation")
        if len(values) != self.templates[(name, language)]:
            return _error(400, 132000, "(#132000) Number of parameters does not match the "
                                       "expected number of params")
        if any("\n" in v or "\t" in v or "    " in v or not v for v in values):
            return _error(400, 131009, "(#131009) Parameter value is not valid")
        with self.lock:
            self.sent.append(body)
        return _json({"messaging_product": "whatsapp",
                      "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                      "messages": [{"id": "wamid." + secrets.token_urlsafe(24)}]}, 200)
