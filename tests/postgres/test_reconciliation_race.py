"""A late webhook and a status poll for the same payment, at once: one transition, once."""

from __future__ import annotations

import secrets
import threading
from collections import Counter

import requests
from sqlalchemy import select

from gateways.sandbox import build_event
from portal.models import (
    ExchangeKind,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    SandboxCharge,
)
from portal.services.checkout import fetch_and_apply
from tests.postgres.test_webhooks_concurrency import TIMEOUT, fresh, headers_for

ROUNDS = 10


def test_late_webhook_racing_a_poll_gives_one_transition(pg_app, pg_build, pg_db,
                                                         pg_session_factory, live_server):
    lab = pg_build.lab()
    cases = []
    for _ in range(ROUNDS):
        link = pg_build.link(lab, amount=123450)
        payment = pg_build.payment(link, status=PaymentStatus.PENDING)
        # The patient paid at the sandbox; its webhook is late and arrives as the poll runs.
        event_id = "evt_" + secrets.token_hex(8)
        pg_db.add(SandboxCharge(reference=payment.reference, status="succeeded",
                                amount=link.amount, currency="INR", event_id=event_id))
        pg_db.commit()
        cases.append((link.id, payment.id, payment.reference, event_id))

    both_applied = 0
    for link_id, payment_id, reference, event_id in cases:
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        body = build_event(event_id, True, reference, 123450, "INR")

        def poll(payment_id=payment_id, barrier=barrier, errors=errors) -> None:
            try:
                with pg_app.app_context(), pg_session_factory() as session:
                    barrier.wait(timeout=TIMEOUT)
                    fetch_and_apply(session, pg_app.config, payment_id)
            except BaseException as exc:
                errors.append(exc)

        def webhook(body=body, barrier=barrier, errors=errors) -> None:
            try:
                barrier.wait(timeout=TIMEOUT)
                response = requests.post(f"{live_server}/payments/webhook/sandbox", data=body,
                                         headers=headers_for(body), timeout=TIMEOUT)
                assert response.status_code == 200, response.text
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=poll), threading.Thread(target=webhook)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT * 2)
        assert errors == []

        link = fresh(pg_db, OnlinePayment, link_id)
        payment = fresh(pg_db, Payment, payment_id)
        assert (link.status, link.amount_paid) == (LinkStatus.PAID, 123450)
        assert payment.status == PaymentStatus.SUCCEEDED and payment.next_check_at is None
        assert link.needs_attention is False
        outcomes = Counter(pg_db.scalars(select(PaymentGatewayTransaction.outcome).where(
            PaymentGatewayTransaction.payment_id == payment_id)))
        assert outcomes["payment succeeded; link paid"] == 1, outcomes
        # The loser, if it got as far as applying, changed nothing.
        assert set(outcomes) <= {"payment succeeded; link paid",
                                 "no change: the payment had already succeeded"}
        kinds = set(pg_db.scalars(select(PaymentGatewayTransaction.kind).where(
            PaymentGatewayTransaction.payment_id == payment_id)))
        assert ExchangeKind.WEBHOOK_RECEIVED in kinds
        both_applied += sum(outcomes.values()) == 2
    # In some rounds at least, the poll and the webhook both reached apply_gateway_event.
    assert both_applied >= 1
