"""Outgoing webhooks on PostgreSQL: two workers drain the outbox to a real receiver, every event
once, and the events of each link in order."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from sqlalchemy import select

from portal.models import DeliveryStatus, WebhookDelivery
from portal.services import links as link_service
from portal.services import outhooks
from portal.worker import runner
from tests.fakes.lab_receiver import LabReceiver, verify

LINKS = 30


def test_two_workers_deliver_each_event_once_in_order_per_link(pg_app, pg_build, pg_db,
                                                                pg_session_factory):
    pg_app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
    lab = pg_build.lab("hooks", name="Hooks Diagnostics")
    with LabReceiver() as receiver:
        secret = outhooks.create_endpoint(pg_db, pg_app.config, lab,
                                          f"{receiver.url}/hook").secret
        pg_db.commit()
        made = [pg_build.link(lab, bill_reference=f"B-{n}") for n in range(LINKS)]
        for link in made[::2]:  # half of them cancelled: a second event behind the first
            link_service.cancel_link(pg_db, link, user_id=None)
        pg_db.commit()

        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait(timeout=10)
                deadline = time.monotonic() + 120
                idle = 0
                while idle < 3:  # a chained delivery is queued by the other worker's commit
                    idle = 0 if runner.run_once(pg_app, pg_session_factory) else idle + 1
                    time.sleep(0.05 * idle)
                    assert time.monotonic() < deadline, "not drained in 120 s"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)
        assert errors == []
        received = receiver.requests_to("POST", "/hook")

    assert all(verify(r.headers["Portal-Signature"], r.body, secret) for r in received)
    events = [json.loads(r.body) for r in received]
    assert Counter(e["id"] for e in events).most_common(1)[0][1] == 1  # each once
    assert len(events) == LINKS + LINKS // 2
    for link in made:
        types = [e["type"] for e in events if e["data"]["id"] == link.id]
        assert types == (["link.created", "link.cancelled"] if link in made[::2]
                         else ["link.created"])
    statuses = set(pg_db.scalars(select(WebhookDelivery.status)))
    assert statuses == {DeliveryStatus.SUCCEEDED}
