"""Two desks charging one patient's saved card for one bill at once, on PostgreSQL: one charge."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text

import gateways
from gateways.base import Capability, EventStatus, GatewayEvent
from gateways.sandbox import SandboxGateway
from portal.models import Customer, CustomerPaymentProfile, OnlinePayment, Payment
from portal.services import customers
from portal.services.events import lock_link
from portal.services.profiles import ProfileError

TIMEOUT = 30


class SlowVault(SandboxGateway):
    """Keeps cards; each charge waits for the test to let the gateway answer."""

    capabilities = SandboxGateway.capabilities | {Capability.SAVED_METHODS}
    calls: list = []
    answer_now = threading.Event()

    def charge_saved_method(self, charge):
        type(self).calls.append(charge.reference)
        assert type(self).answer_now.wait(TIMEOUT)
        return GatewayEvent(dedupe_id=f"vault_{charge.reference}", type="charge",
                            reference=charge.reference, status=EventStatus.SUCCEEDED,
                            amount=charge.amount, currency=charge.currency,
                            transaction_id=f"vault_txn_{charge.reference}")


def backends_waiting_on_a_lock(session_factory) -> int:
    """From a transaction of its own: pg_stat_activity is a snapshot per transaction."""
    with session_factory() as session:
        return session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"))


def test_racing_charges_make_one(pg_app, pg_build, pg_db, pg_session_factory, monkeypatch):
    monkeypatch.setattr(SlowVault, "calls", [])
    monkeypatch.setattr(SlowVault, "answer_now", threading.Event())
    monkeypatch.setitem(gateways.GATEWAYS, "sandbox", SlowVault)
    lab = pg_build.lab()
    link = pg_build.link(lab, amount=70000)
    profile = CustomerPaymentProfile(lab_id=lab.id, customer_id=link.customer_id,
                                     gateway="sandbox", gateway_customer_id="cust_1",
                                     token="card_tok_1", brand="visa", last4="4242")
    pg_db.add(profile)
    pg_db.commit()
    results: dict = {}

    def desk(key: str) -> threading.Thread:
        def target() -> None:
            try:
                with pg_app.app_context(), pg_session_factory() as session:
                    results[key] = customers.charge_saved_method(
                        session, pg_app.config, session.get(Customer, link.customer_id),
                        session.get(CustomerPaymentProfile, profile.id),
                        session.get(OnlinePayment, link.id), user_id=None)
            except BaseException as exc:  # reported by the main thread
                results[key] = exc
        thread = threading.Thread(target=target, name=f"desk-{key}")
        thread.start()
        return thread

    lock_link(pg_db, link.id)  # both desks queue behind this lock, then race for it
    threads = [desk("a"), desk("b")]
    deadline = time.monotonic() + TIMEOUT
    while backends_waiting_on_a_lock(pg_session_factory) < 2:
        assert time.monotonic() < deadline, f"the desks never waited for the lock: {results}"
        time.sleep(0.02)
    pg_db.commit()

    # Both desks are through once each has either reached the gateway or been refused.
    while len(SlowVault.calls) + sum(isinstance(r, Exception) for r in results.values()) < 2:
        assert time.monotonic() < deadline, results
        time.sleep(0.02)
    SlowVault.answer_now.set()  # the gateway answers the one charge it got
    for thread in threads:
        thread.join(TIMEOUT)

    assert len(SlowVault.calls) == 1
    refused = [r for r in results.values() if isinstance(r, ProfileError)]
    assert len(refused) == 1 and "already in progress" in str(refused[0])
    pg_db.expire_all()
    assert pg_db.scalar(select(func.count(Payment.id))) == 1
    assert pg_db.get(OnlinePayment, link.id).amount_paid == 70000


@pytest.mark.parametrize("query, expected", [("ASHA", ["Asha Rao"]), ("5%", []),
                                             ("98765 43210", ["Asha Rao"])])
def test_search_on_postgresql(pg_build, pg_db, query, expected):
    lab = pg_build.lab()
    pg_build.link(lab, patient_name="Asha Rao", phone="+919876543210")
    pg_build.link(lab, patient_name="Ravi 5 Kumar", phone="+919812345678",
                  email="ravi@example.com")
    found, _ = customers.search_customers(pg_db, lab.id, query=query)
    assert [c.name for c in found] == expected
