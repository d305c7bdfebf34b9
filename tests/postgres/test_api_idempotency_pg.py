"""Idempotency keys on PostgreSQL, where a taken key is found by INSERT ... ON CONFLICT."""

import threading

from sqlalchemy import func, select

from portal.models import IdempotencyKey, OnlinePayment
from tests.api_helpers import make_api_key
from tests.conftest import Builder, FreshReadSession

BODY = {"amount": 123450, "currency": "INR", "bill_reference": "B-PG-1",
        "customer": {"name": "Asha Rao", "phone": "+919876543210"}}


def test_replay_mismatch_and_a_race_for_one_key_on_postgres(pg_app):
    session = FreshReadSession(pg_app.extensions["portal_db"].engine, expire_on_commit=False)
    try:
        lab = Builder(pg_app, session).lab("idem-pg")
        key = make_api_key(session, lab)

        def post(idem, body=BODY):
            return pg_app.test_client().post(
                "/payments/initiate", json=body,
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})

        first, again = post("pg-1"), post("pg-1")
        assert first.status_code == again.status_code == 201
        assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
        assert post("pg-1", {**BODY, "amount": 1}).json["error"]["code"] == \
            "idempotency_key_reused"

        answers = []
        threads = [threading.Thread(target=lambda: answers.append(post("pg-race")))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        created = [a for a in answers if a.status_code == 201]
        assert len(answers) == 6 and created
        assert all(a.status_code in (201, 409) for a in answers)
        assert len({a.json["id"] for a in created}) == 1  # replays carry the one link
        assert session.scalar(select(func.count()).select_from(OnlinePayment).where(
            OnlinePayment.lab_id == lab.id)) == 2
        assert session.scalar(select(func.count()).select_from(IdempotencyKey).where(
            IdempotencyKey.lab_id == lab.id)) == 2
    finally:
        session.close()
