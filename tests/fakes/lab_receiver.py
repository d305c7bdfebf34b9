"""A lab's own system receiving the portal's outgoing webhooks: records every delivery, answers
200 unless a fault (500, delay) or a redirect is queued, and checks signatures the documented
way (the README's verification example, in Python)."""

from __future__ import annotations

import hashlib
import hmac
import json

from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer


def signatures(header: str) -> tuple[int, list[str]]:
    """`t=...,v1=...,v1=...` -> (t, [v1, ...])."""
    parts = [p.split("=", 1) for p in header.split(",")]
    timestamp = int(next(v for k, v in parts if k == "t"))
    return timestamp, [v for k, v in parts if k == "v1"]


def verify(header: str, body: bytes, secret: str) -> bool:
    """True when any v1 is the HMAC-SHA256 of "<t>.<body>" under `secret`."""
    timestamp, values = signatures(header)
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                        hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in values)


class LabReceiver(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.redirect_to: str | None = None

    def handle(self, request: Request) -> Response:
        if self.redirect_to and request.path == "/hook":
            return Response("", status=302, headers={"Location": self.redirect_to})
        return self.with_faults(request.path, lambda: Response(
            json.dumps({"received": True}), content_type="application/json"))

    def events(self, path: str = "/hook") -> list[dict]:
        """The bodies received at `path`, in arrival order (retries included)."""
        with self.lock:
            return [json.loads(r.body) for r in self.requests if r.path == path]
