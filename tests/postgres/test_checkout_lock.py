"""start_checkout under PostgreSQL row locks: what the link lock does and does not guarantee."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select, text

from gateways.sandbox import SandboxGateway
from portal.models import (
    ExchangeKind,
    OnlinePayment,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
)
from portal.services.checkout import start_checkout
from portal.services.events import lock_link

TIMEOUT = 30


def run_in_thread(app, session_factory, link_id: int, results: dict, key: str,
                  before=None) -> threading.Thread:
    """start_checkout for the link in its own thread, app context and session."""

    def target() -> None:
        try:
            with app.app_context(), session_factory() as session:
                link = session.get(OnlinePayment, link_id)
                session.commit()
                if before is not None:
                    before()
                results[key] = start_checkout(session, app.config, link)
        except BaseException as exc:  # reported by the main thread
            results[key] = exc

    thread = threading.Thread(target=target, name=f"checkout-{key}")
    thread.start()
    return thread


def backends_waiting_on_a_lock(session) -> int:
    return session.scalar(text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"))


def payments_of(session, link_id: int) -> list[Payment]:
    session.expire_all()
    return list(session.scalars(select(Payment).where(Payment.online_payment_id == link_id)
                                .order_by(Payment.id)))


def test_row_lock_serialises_start_checkout(pg_app, pg_build, pg_db, pg_session_factory):
    """While another transaction holds the link's row lock, start_checkout waits for it."""
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=50000)
    results: dict = {}
    with pg_session_factory() as holder, pg_session_factory() as observer:
        lock_link(holder, link.id)  # SELECT ... FOR UPDATE, transaction left open
        thread = run_in_thread(pg_app, pg_session_factory, link.id, results, "first")
        deadline = time.monotonic() + TIMEOUT
        while backends_waiting_on_a_lock(observer) < 1:
            observer.rollback()
            assert time.monotonic() < deadline, "start_checkout never waited for the lock"
            time.sleep(0.02)
        assert thread.is_alive() and "first" not in results
        assert payments_of(observer, link.id) == []
        holder.rollback()
    thread.join(timeout=TIMEOUT)
    assert not thread.is_alive()
    first = results["first"]
    assert not isinstance(first, BaseException), first

    (payment,) = payments_of(pg_db, link.id)
    assert payment.id == first.payment.id
    assert payment.status == PaymentStatus.PENDING
    assert payment.amount == 50000 and payment.checkout_url == first.checkout.redirect_url
    # A second press of Pay, after the first finished, reuses that checkout.
    thread = run_in_thread(pg_app, pg_session_factory, link.id, results, "second")
    thread.join(timeout=TIMEOUT)
    second = results["second"]
    assert not isinstance(second, BaseException), second
    assert second.payment.id == payment.id
    assert second.checkout.redirect_url == payment.checkout_url
    assert [p.id for p in payments_of(pg_db, link.id)] == [payment.id]
    assert pg_db.scalar(select(func.count()).where(
        PaymentGatewayTransaction.kind == ExchangeKind.CHECKOUT_CREATED)) == 1


def test_concurrent_start_checkout_makes_one_payment(pg_app, pg_build, pg_db,
                                                     pg_session_factory, monkeypatch):
    """Two Pay presses at once for one link should end with one Payment, one checkout.

    To make the interleaving certain rather than likely, the first caller's gateway call
    waits (at most a few seconds) for the second caller: exactly the window a real gateway's
    network round trip opens. Without that gate, two threads started by a barrier land in
    the same window every time too (the second is blocked on the lock the first releases).
    """
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=70000)
    original = SandboxGateway.create_checkout
    first_in_gateway = threading.Event()
    let_first_finish = threading.Event()
    calls: list[str] = []
    calls_lock = threading.Lock()

    def create_checkout(self, request):
        with calls_lock:
            calls.append(request.reference)
            first = len(calls) == 1
        if first:
            first_in_gateway.set()
            let_first_finish.wait(timeout=5)
        return original(self, request)

    monkeypatch.setattr(SandboxGateway, "create_checkout", create_checkout)
    results: dict = {}
    a = run_in_thread(pg_app, pg_session_factory, link.id, results, "a")
    assert first_in_gateway.wait(timeout=TIMEOUT)
    b = run_in_thread(pg_app, pg_session_factory, link.id, results, "b")
    b.join(timeout=1)  # a fixed start_checkout may make b wait for a's checkout instead
    let_first_finish.set()
    a.join(timeout=TIMEOUT)
    b.join(timeout=TIMEOUT)
    assert not a.is_alive() and not b.is_alive()
    for key in "ab":
        assert not isinstance(results[key], BaseException), results[key]

    payments = payments_of(pg_db, link.id)
    assert all(p.status == PaymentStatus.PENDING and p.checkout_url for p in payments)
    assert len(payments) == 1, (f"{len(payments)} payments and {len(calls)} gateway "
                                "checkouts for one link")
    assert results["a"].payment.id == results["b"].payment.id
