"""The kept pay page on PostgreSQL: its version check goes straight through psycopg, outside
any transaction, so it must see every committed change and hand its connection back as it
found it."""

from __future__ import annotations

import secrets
import time

from gateways.sandbox import SIGNATURE_HEADER, build_event, sign
from portal.models import PaymentStatus

SECRET = "whsec_test_sandbox"  # what Builder.lab stores as the lab's sandbox secret


def test_a_kept_page_sees_each_committed_change(pg_app, pg_build, pg_db):
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=123450)
    payment = pg_build.payment(link, status=PaymentStatus.PENDING)
    client = pg_app.test_client()
    first = client.get(f"/pay/{link.token}").get_data(as_text=True)
    for _ in range(8):  # past psycopg's prepare threshold (5): the prepared check, too
        assert client.get(f"/pay/{link.token}").get_data(as_text=True) == first
    lab.name = "Acme Labs Renamed"
    pg_db.commit()
    assert "Acme Labs Renamed" in client.get(f"/pay/{link.token}").get_data(as_text=True)

    body = build_event("evt_" + secrets.token_hex(8), True, payment.reference, link.amount,
                       "INR")
    answer = client.post("/payments/webhook/sandbox", data=body,
                         headers={SIGNATURE_HEADER: sign(SECRET, body, int(time.time())),
                                  "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.data
    assert "Pay ₹" not in client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert client.get("/pay/" + "x" * 43).status_code == 404


def test_the_check_leaves_pooled_connections_in_transactions_mode(pg_app, pg_build):
    link = pg_build.link(pg_build.lab())
    client = pg_app.test_client()
    for _ in range(3):
        assert client.get(f"/pay/{link.token}").status_code == 200
    engine = pg_app.extensions["portal_db"].engine
    pooled = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
    try:
        assert pooled and all(c.driver_connection.autocommit is False for c in pooled)
    finally:
        for connection in pooled:
            connection.close()
