"""Refund requests racing on one payment (threads, own sessions): never more than was paid."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import select

from portal.models import Payment, PaymentStatus, Refund, RefundStatus, Role
from portal.services.refunds import (
    RefundNotAllowed,
    approve_refund,
    new_refund_key,
    request_refund,
)
from tests.web.test_refunds_ui import paid_payment, refunded_at_gateway

TIMEOUT = 30
THREADS = 8


def race(app, session_factory, calls) -> list[object]:
    """Runs each call(session) in its own thread and session, all released at once."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int, call) -> None:
        try:
            with app.app_context(), session_factory() as session:
                barrier.wait(timeout=TIMEOUT)
                results[i] = call(session)
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, call), name=f"refund-{i}")
               for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive(), "a refund request hung"
    return results


def outcomes(results) -> Counter:
    unexpected = [r for r in results if isinstance(r, BaseException)
                  and not isinstance(r, RefundNotAllowed)]
    assert not unexpected, unexpected
    return Counter("refused" if isinstance(r, RefundNotAllowed) else r.status.value
                   for r in results)


def refunds_of(session, payment_id: int) -> list[Refund]:
    session.expire_all()
    return list(session.scalars(select(Refund).where(Refund.payment_id == payment_id)))


def test_racing_refunds_never_over_refund(pg_app, pg_build, pg_db, pg_session_factory,
                                          live_server):
    lab = pg_build.lab()
    for _round in range(3):
        payment = paid_payment(pg_build, pg_db, lab, amount=100000)
        # Eight requests of 30% each: three fit, five must be refused before the gateway.
        results = race(pg_app, pg_session_factory, [
            lambda s, p=payment.id: request_refund(s, pg_app.config, p, 30000, "Billing error")
            for _ in range(THREADS)])
        assert outcomes(results) == {"succeeded": 3, "refused": 5}
        assert {str(r) for r in results if isinstance(r, RefundNotAllowed)} == {
            "The refund is more than what remains refundable."}

        refunds = refunds_of(pg_db, payment.id)
        assert len(refunds) == 3  # no refund row beyond what fits, and none failed
        assert sum(r.amount for r in refunds if r.status != RefundStatus.FAILED) <= 100000
        row = pg_db.get(Payment, payment.id, populate_existing=True)
        assert (row.status, row.amount_refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 90000)
        assert refunded_at_gateway(pg_db, payment) == 90000


def test_racing_requests_held_for_approval_still_count(pg_app, pg_build, pg_db,
                                                       pg_session_factory):
    """Held refunds are not sent, yet they reserve the amount: the race is the same."""
    lab = pg_build.lab(refund_approval_threshold=0)
    payment = paid_payment(pg_build, pg_db, lab, amount=100000)
    results = race(pg_app, pg_session_factory, [
        lambda s: request_refund(s, pg_app.config, payment.id, 45000) for _ in range(THREADS)])
    assert outcomes(results) == {"awaiting_approval": 2, "refused": 6}
    assert sum(r.amount for r in refunds_of(pg_db, payment.id)) == 90000


def test_the_same_form_sent_at_once_makes_one_refund(pg_app, pg_build, pg_db,
                                                     pg_session_factory, live_server):
    lab = pg_build.lab()
    payment = paid_payment(pg_build, pg_db, lab, amount=100000)
    key = new_refund_key()
    results = race(pg_app, pg_session_factory, [
        lambda s: request_refund(s, pg_app.config, payment.id, 10000, key=key)
        for _ in range(4)])
    # One made it; the others got that refund back (still at the gateway, or done).
    assert "refused" not in outcomes(results)
    (refund,) = refunds_of(pg_db, payment.id)
    assert refund.reference == key and {r.id for r in results} == {refund.id}
    assert refund.status == RefundStatus.SUCCEEDED
    assert refunded_at_gateway(pg_db, payment) == 10000


def test_two_admins_approving_at_once_send_one_refund(pg_app, pg_build, pg_db,
                                                      pg_session_factory, live_server):
    lab = pg_build.lab(refund_approval_threshold=0)
    requester = pg_build.user(lab, role=Role.ADMIN)
    approvers = [pg_build.user(lab, role=Role.ADMIN) for _ in range(2)]
    payment = paid_payment(pg_build, pg_db, lab, amount=100000)
    with pg_session_factory() as session:
        held = request_refund(session, pg_app.config, payment.id, 70000,
                              user_id=requester.id)
    results = race(pg_app, pg_session_factory, [
        lambda s, u=user.id: approve_refund(s, pg_app.config, lab.id, held.id, user_id=u)
        for user in approvers])
    assert outcomes(results) == {"succeeded": 1, "refused": 1}
    (refund,) = refunds_of(pg_db, payment.id)
    assert refund.status == RefundStatus.SUCCEEDED
    assert refunded_at_gateway(pg_db, payment) == 70000
