"""A webhook of a gateway that needs no API call is read, verified and applied in one
PostgreSQL transaction; PhonePe, which asks its API, still commits before that call."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import event

from gateways import GATEWAYS
from gateways.sandbox import SIGNATURE_HEADER, build_event, sign
from portal.models import LinkStatus, OnlinePayment, PaymentStatus

SECRET = "whsec_test_sandbox"  # what Builder.lab stores as the lab's sandbox secret


def test_a_sandbox_webhook_is_one_transaction(pg_app, pg_build, pg_db):
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=123450)
    payment = pg_build.payment(link, status=PaymentStatus.PENDING)
    body = build_event("evt_" + secrets.token_hex(8), True, payment.reference, link.amount,
                       "INR")
    engine = pg_app.extensions["portal_db"].engine
    seen: list[str] = []
    listeners = {"begin": lambda conn: seen.append("begin"),
                 "commit": lambda conn: seen.append("commit"),
                 "rollback": lambda conn: seen.append("rollback")}
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        response = pg_app.test_client().post(
            "/payments/webhook/sandbox", data=body,
            headers={SIGNATURE_HEADER: sign(SECRET, body, int(time.time())),
                     "Content-Type": "application/json"})
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)
    assert response.status_code == 200, response.data
    assert seen == ["begin", "commit"]
    pg_db.expire_all()
    assert pg_db.get(OnlinePayment, link.id).status == LinkStatus.PAID


def test_only_gateways_that_call_their_api_on_a_webhook_say_so():
    calling = {name for name, cls in GATEWAYS.items() if cls.webhook_calls_api}
    assert calling == {"phonepe", "phonepe_v1"}
