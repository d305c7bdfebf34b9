"""Webhooks over real HTTP against PostgreSQL, fired at once: money is counted exactly once."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from gateways.sandbox import SIGNATURE_HEADER, build_event, sign
from portal.models import (
    ExchangeKind,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
)

SECRET = "whsec_test_sandbox"  # what Builder.lab stores as the lab's sandbox secret
TIMEOUT = 30


def post_all_at_once(url: str, requests_to_send: list[tuple[bytes, dict]]) -> list:
    """POSTs every (body, headers) from its own thread, all released by one barrier."""
    barrier = threading.Barrier(len(requests_to_send))

    def fire(body: bytes, headers: dict) -> requests.Response:
        with requests.Session() as http:
            barrier.wait(timeout=TIMEOUT)
            return http.post(url, data=body, headers=headers, timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=len(requests_to_send)) as pool:
        futures = [pool.submit(fire, body, headers) for body, headers in requests_to_send]
        return [f.result(timeout=TIMEOUT * 2) for f in futures]


def headers_for(body: bytes, secret: str = SECRET) -> dict:
    return {SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            "Content-Type": "application/json"}


def fresh(session, model, id_):
    session.expire_all()
    return session.get(model, id_)


def test_twenty_identical_webhooks_concurrently(pg_build, pg_db, live_server):
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=123450)
    payment = pg_build.payment(link, status=PaymentStatus.PENDING)
    event_id = "evt_" + secrets.token_hex(8)
    body = build_event(event_id, True, payment.reference, link.amount, "INR")
    headers = headers_for(body)

    responses = post_all_at_once(f"{live_server}/payments/webhook/sandbox",
                                 [(body, headers)] * 20)

    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
    answers = [r.json() for r in responses]
    assert all(a["received"] is True for a in answers)
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 19

    payments = pg_db.scalars(select(Payment).where(Payment.online_payment_id == link.id)
                             .execution_options(populate_existing=True)).all()
    assert [(p.id, p.status) for p in payments] == [(payment.id, PaymentStatus.SUCCEEDED)]
    assert payments[0].gateway_transaction_id == f"sbx_{event_id}"
    link = fresh(pg_db, OnlinePayment, link.id)
    assert link.status == LinkStatus.PAID
    assert link.amount_paid == link.amount == 123450
    assert link.needs_attention is False
    exchanges = pg_db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.event_id == event_id)).all()
    assert len(exchanges) == 1
    (exchange,) = exchanges
    assert exchange.kind == ExchangeKind.WEBHOOK_RECEIVED
    assert exchange.gateway == "sandbox"
    assert exchange.signature_valid is True
    assert exchange.payment_id == payment.id
    assert exchange.online_payment_id == link.id
    assert exchange.outcome == "payment succeeded; link paid"
    assert exchange.success is True
    # The 19 duplicates are kept for the webhook inbox, under no event id.
    duplicates = pg_db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.event_id.is_(None))).all()
    assert len(duplicates) == 19
    assert {(d.payload["duplicate_of"], d.payment_id, d.signature_valid) for d in duplicates} \
        == {(event_id, payment.id, True)}


def test_distinct_events_for_same_payment_race(pg_build, pg_db, live_server):
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=99900)
    payment = pg_build.payment(link, status=PaymentStatus.PENDING)
    event_ids = [f"evt_{i}_{secrets.token_hex(6)}" for i in range(10)]
    sends = []
    for event_id in event_ids:
        body = build_event(event_id, True, payment.reference, link.amount, "INR")
        sends.append((body, headers_for(body)))

    responses = post_all_at_once(f"{live_server}/payments/webhook/sandbox", sends)

    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    assert [r.json()["duplicate"] for r in responses] == [False] * 10

    payment = fresh(pg_db, Payment, payment.id)
    assert payment.status == PaymentStatus.SUCCEEDED
    link = fresh(pg_db, OnlinePayment, link.id)
    assert link.status == LinkStatus.PAID
    assert link.amount_paid == link.amount == 99900
    assert link.needs_attention is False
    exchanges = pg_db.scalars(select(PaymentGatewayTransaction)
                              .order_by(PaymentGatewayTransaction.id)).all()
    assert sorted(e.event_id for e in exchanges) == sorted(event_ids)
    assert all(e.kind == ExchangeKind.WEBHOOK_RECEIVED and e.payment_id == payment.id
               and e.success for e in exchanges)
    outcomes = sorted(e.outcome for e in exchanges)
    assert outcomes == (["no change: the payment had already succeeded"] * 9
                        + ["payment succeeded; link paid"])
    (winner,) = [e for e in exchanges if e.outcome == "payment succeeded; link paid"]
    assert payment.gateway_transaction_id == f"sbx_{winner.event_id}"


def test_bad_signature_changes_nothing(pg_build, pg_db, live_server):
    lab = pg_build.lab()
    link = pg_build.link(lab)
    payment = pg_build.payment(link, status=PaymentStatus.PENDING)
    body = build_event("evt_" + secrets.token_hex(8), True, payment.reference, link.amount,
                       "INR")

    forged = requests.post(f"{live_server}/payments/webhook/sandbox", data=body,
                           headers=headers_for(body, secret="whsec_not_the_labs"),
                           timeout=TIMEOUT)
    unsigned = requests.post(f"{live_server}/payments/webhook/sandbox", data=body,
                             headers={"Content-Type": "application/json"}, timeout=TIMEOUT)

    for response in (forged, unsigned):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_signature"
    assert pg_db.scalar(select(func.count()).select_from(PaymentGatewayTransaction)) == 0
    assert fresh(pg_db, Payment, payment.id).status == PaymentStatus.PENDING
    link = fresh(pg_db, OnlinePayment, link.id)
    assert (link.status, link.amount_paid) == (LinkStatus.CREATED, 0)

    # The same body, properly signed, still goes through: the rejects burned no event id.
    good = requests.post(f"{live_server}/payments/webhook/sandbox", data=body,
                         headers=headers_for(body), timeout=TIMEOUT)
    assert good.status_code == 200
    assert good.json() == {"received": True, "duplicate": False}
    assert fresh(pg_db, Payment, payment.id).status == PaymentStatus.SUCCEEDED
