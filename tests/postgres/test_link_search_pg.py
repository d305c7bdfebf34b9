"""/links?q= on PostgreSQL: a phone or a bill reference is an index lookup, a name reads only
the lab's links; never a Seq Scan of online_payments."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event, text

from portal.models import Lab
from portal.services.links import list_links
from tests.conftest import Builder

LINKS = 20_000

SEED = """
INSERT INTO online_payments (lab_id, token, amount, currency, amount_paid, bill_reference,
    description, patient_name, patient_phone, gateway, status, expires_at, allow_partial,
    metadata, needs_attention, created_at, updated_at)
SELECT :lab, md5(:lab || 'a' || i) || md5(:lab || 'b' || i), 1000, 'INR', 0,
       'BILL-' || :lab || '-' || i, '',
       (ARRAY['Asha','Ravi','Priya','Arjun','Meera'])[1 + i % 5] || ' '
           || (ARRAY['Rao','Kumar','Iyer','Patel','Nair','Das'])[1 + (i / 5) % 6],
       '+9198' || lpad((:lab * 1000000 + i % 5000)::text, 8, '0'),
       'sandbox', 'created', now() + interval '1 day', false, '{}', false, now(), now()
FROM generate_series(1, :n) AS i
"""


@pytest.fixture
def labs(pg_app, pg_db):
    build = Builder(pg_app, pg_db)
    lab, other = build.lab("searchlab"), build.lab("otherlab")
    for one in (lab, other):
        pg_db.execute(text(SEED), {"lab": one.id, "n": LINKS})
    pg_db.execute(text("ANALYZE online_payments"))
    pg_db.commit()
    return lab, other


def plan_and_rows(pg_app, pg_db, lab: Lab, q: str, **kwargs):
    engine = pg_app.extensions["portal_db"].engine
    sent = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "FROM online_payments" in statement and "LIMIT" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        rows, _next = list_links(pg_db, lab.id, query=q, country="IN", **kwargs)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = sent[-1]
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    pg_db.rollback()
    return plan, rows


@pytest.mark.parametrize("q,index", [
    ("098010 00042", "ix_online_payments_lab_patient_phone"),
    ("+919801000042", "ix_online_payments_lab_patient_phone"),
    ("bill-1-1234", "ix_online_payments_lab_bill_lower"),
])
def test_a_phone_or_a_bill_is_an_index_lookup(pg_app, pg_db, labs, q, index):
    lab, other = labs
    plan, rows = plan_and_rows(pg_app, pg_db, lab, q)
    assert "Seq Scan on online_payments" not in plan, plan
    assert index in plan, plan
    assert rows and all(link.lab_id == lab.id for link in rows)


def test_a_name_reads_only_the_labs_links(pg_app, pg_db, labs):
    lab, _other = labs
    plan, rows = plan_and_rows(pg_app, pg_db, lab, "meera iyer")
    assert "Seq Scan on online_payments" not in plan, plan
    assert re.search(r"Index Cond: \(lab_id = ", plan), plan
    assert len(rows) == 25 and all(r.patient_name == "Meera Iyer" for r in rows)
    assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True)


def test_wildcards_are_taken_literally(pg_app, pg_db, labs):
    lab, _other = labs
    _plan, rows = plan_and_rows(pg_app, pg_db, lab, "%")
    assert rows == []
