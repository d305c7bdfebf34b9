"""Sandbox webhooks as the sandbox gateway sends them."""

from __future__ import annotations

import secrets
import time

from gateways import sandbox

SECRET = "whsec_test_sandbox"


def start_payment(client, link) -> str:
    """Presses Pay on the patient's page; returns the new payment's reference."""
    from tests.conftest import csrf_from

    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    response = client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"].split("/sandbox/checkout/")[1].split("?")[0]


def post_event(client, reference: str, *, succeeded: bool = True, amount: int = 123450,
               currency: str = "INR", event_id: str | None = None, secret: str = SECRET,
               timestamp: int | None = None, body: bytes | None = None, header: str | None = None):
    body = body if body is not None else sandbox.build_event(
        event_id or "evt_" + secrets.token_hex(8), succeeded, reference, amount, currency)
    if header is None:
        header = sandbox.sign(secret, body, timestamp if timestamp is not None
                              else int(time.time()))
    return client.post("/payments/webhook/sandbox", data=body,
                       headers={"Sandbox-Signature": header,
                                "Content-Type": "application/json"})


def static_name(name: str) -> str:
    """A static file's address as pages link it: its content-hashed name (portal/assets.py)."""
    from portal import ROOT, assets

    return "/static/" + assets.build_manifest(ROOT / "static")[name]
