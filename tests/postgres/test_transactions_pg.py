"""/transactions on PostgreSQL: every page query walks an index (no Seq Scan on payments), and
keyset pages cover a history with many equal timestamps exactly once, in order."""

from __future__ import annotations

import re
from datetime import UTC, date

import pytest
import requests
from sqlalchemy import event, text

from portal.models import Lab, PaymentStatus
from portal.services.transactions import Cursor, TransactionFilter, list_transactions
from tests.conftest import PASSWORD, Builder, csrf_from, make_app
from tests.postgres.conftest import truncate_all

PAYMENTS = 30_000
END = "2026-11-26 12:00:00"

SEED = [
    """INSERT INTO customers (lab_id, name, phone, email, created_at, updated_at)
       SELECT :lab, (ARRAY['Asha','Ravi','Priya','Arjun','Meera'])[1 + i % 5] || ' '
                    || (ARRAY['Rao','Kumar','Iyer','Patel','Nair','Das'])[1 + (i / 5) % 6],
              '+9198' || lpad((:lab * 1000000 + i)::text, 8, '0'),
              'p' || :lab || '-' || i || '@example.com', now(), now()
       FROM generate_series(1, :n / 3) AS i""",
    """INSERT INTO online_payments (lab_id, token, amount, currency, amount_paid,
           bill_reference, description, customer_id, gateway, status, expires_at,
           allow_partial, metadata, needs_attention, created_at, updated_at)
       SELECT :lab, md5(:lab || 'a' || i) || md5(:lab || 'b' || i), 1000 + i % 9000,
              CASE WHEN i % 40 = 0 THEN 'USD' ELSE 'INR' END, 0, 'BILL-' || :lab || '-' || i,
              '', (SELECT min(id) FROM customers WHERE lab_id = :lab) + i % (:n / 3),
              'razorpay', 'created', now(), false, '{}', false, now(), now()
       FROM generate_series(1, :n) AS i""",
    # Five payments per timestamp: ties everywhere, so only the id keeps the order stable.
    """INSERT INTO payments (lab_id, online_payment_id, reference, amount, currency, gateway,
           status, gateway_transaction_id, amount_refunded, save_method_consent,
           created_at, updated_at)
       SELECT :lab, l.id, 'pay_' || :lab || '_' || l.id, l.amount, l.currency,
              CASE WHEN l.id % 25 = 0 THEN 'stripe' ELSE 'razorpay' END,
              CASE WHEN l.id % 10 = 0 THEN 'failed' ELSE 'succeeded' END,
              'txn_' || :lab || '_' || l.id, 0, false, c, c
       FROM (SELECT *, CAST(:end AS timestamp) - (row_number() OVER (ORDER BY id) / 5)
                       * interval '1 minute' AS c
             FROM online_payments WHERE lab_id = :lab) AS l""",
]


@pytest.fixture(scope="module")
def seeded_ids(pg_database, tmp_path_factory) -> tuple[int, int]:
    """Two labs, the first with 30,000 payments, the other with 3,000; statistics fresh.

    Seeded once for the module: the tests here only read payments.
    """
    truncate_all(pg_database)
    with pytest.MonkeyPatch.context() as monkeypatch:
        app = make_app(tmp_path_factory.mktemp("seeded"), monkeypatch, pg_database)
        engine = app.extensions["portal_db"].engine
        session = app.extensions["portal_db"].session_factory()
        try:
            build = Builder(app, session)
            ids = (build.lab("acme", name="Acme Diagnostics").id,
                   build.lab("other", name="Other Labs").id)
            with engine.begin() as conn:
                for lab_id, count in zip(ids, (PAYMENTS, PAYMENTS // 10), strict=True):
                    for statement in SEED:
                        conn.execute(text(statement), {"lab": lab_id, "n": count, "end": END})
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        finally:
            session.close()
            engine.dispose()
    return ids


@pytest.fixture
def pg_app(tmp_path, monkeypatch, pg_database, seeded_ids):
    """The app on the seeded database, which (unlike tests/postgres/conftest.py's) it keeps."""
    app = make_app(tmp_path, monkeypatch, pg_database)
    yield app
    app.extensions["portal_db"].engine.dispose()


@pytest.fixture
def seeded(pg_db, seeded_ids):
    lab_id, other_id = seeded_ids
    return pg_db.get(Lab, lab_id), pg_db.get(Lab, other_id)


def page_plan(pg_app, pg_db, lab, f, cursor=None) -> str:
    """EXPLAIN of the page query exactly as the service sends it (same SQL, same values)."""
    engine = pg_app.extensions["portal_db"].engine
    sent = []

    def grab(conn, cursor_, statement, parameters, context, executemany):
        if re.search(r"\bFROM payments\b", statement) and "LIMIT" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        list_transactions(pg_db, lab, f, cursor)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = sent[-1]
    with engine.connect() as conn:
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement,
                                                                  parameters))
    pg_db.rollback()
    return plan


def row_at(pg_db, lab, n: int) -> Cursor:
    created_at, row_id = pg_db.execute(text(
        "SELECT created_at, id FROM payments WHERE lab_id = :lab "
        "ORDER BY created_at DESC, id DESC OFFSET :skip LIMIT 1"),
        {"lab": lab.id, "skip": n - 1}).one()
    pg_db.rollback()
    return Cursor(created_at.replace(tzinfo=UTC), row_id)


@pytest.mark.parametrize("name,f,depth,index", [
    ("first page", TransactionFilter(), None, "ix_payments_lab_created"),
    ("deep page", TransactionFilter(), 20_000, "ix_payments_lab_created"),
    ("failed", TransactionFilter(status=PaymentStatus.FAILED), None,
     "ix_payments_lab_status_created"),
    ("failed, deep", TransactionFilter(status=PaymentStatus.FAILED), 20_000,
     "ix_payments_lab_status_created"),
    ("stripe", TransactionFilter(gateway="stripe"), None, "ix_payments_lab_gateway_created"),
    ("USD", TransactionFilter(currency="USD"), None, "ix_payments_lab_currency_created"),
    ("one day", TransactionFilter(date_from=date(2026, 11, 20), date_to=date(2026, 11, 20)),
     None, "ix_payments_lab_created"),
])
def test_page_queries_walk_an_index(pg_app, pg_db, seeded, name, f, depth, index):
    lab, _other = seeded
    cursor = row_at(pg_db, lab, depth) if depth else None
    plan = page_plan(pg_app, pg_db, lab, f, cursor)
    assert "Seq Scan on payments" not in plan, plan
    # The page's ids come straight off the index in order: a Limit over it, no sort between.
    assert re.search(rf"->  Limit .*\n\s+->  Index (Only )?Scan Backward using {index} "
                     "on payments", plan), plan
    if depth:  # the index seeks straight to the cursor, rather than filtering up to it
        assert re.search(r"Index Cond: \(.*\(ROW\(created_at, id\) < ROW\(", plan), plan


@pytest.mark.parametrize("q,found", [
    ("meera iyer", 999), ("P1-77@", 3), ("p1-77@example.com", 3), ("bill-1-1234", 11),
    ("txn_1_4242", 1), ("pay_1_4242", 1), ("+919801000042", 3), ("98010 00042", 3),
])
def test_search_is_indexed_lookups(pg_app, pg_db, seeded, q, found):
    lab, _other = seeded
    plan = page_plan(pg_app, pg_db, lab, TransactionFilter(query=q))
    for table in ("payments", "online_payments", "customers"):
        assert f"Seq Scan on {table}" not in plan, plan
    for index in ("ix_customers_lab_name_lower", "ix_customers_lab_email_lower",
                  "ix_online_payments_lab_bill_lower", "ix_payments_lab_gateway_txn",
                  "uq_payments_reference"):
        assert index in plan, plan
    assert ("ix_customers_lab_phone" in plan) == (q[0] in "+9"), plan  # phones only
    rows = list_transactions(pg_db, lab, TransactionFilter(query=q), limit=1000).rows
    assert len(rows) == found


def test_keyset_walk_covers_every_row_once_in_order(pg_db, seeded):
    lab, _other = seeded
    expected = [row_id for (row_id,) in pg_db.execute(text(
        "SELECT id FROM payments WHERE lab_id = :lab AND status = 'failed' "
        "ORDER BY created_at DESC, id DESC"), {"lab": lab.id})]
    pg_db.rollback()
    f = TransactionFilter(status=PaymentStatus.FAILED)
    seen, cursor, pages = [], None, 0
    while True:
        page = list_transactions(pg_db, lab, f, cursor, limit=100)
        seen += [r.id for r in page.rows]
        pages += 1
        if not page.next_cursor:
            break
        cursor = Cursor.decode(page.next_cursor)
    assert seen == expected and len(expected) == PAYMENTS // 10 and pages == 30
    assert all(r.lab_id == lab.id for r in page.rows)
    # And back: Previous from the last page gives the page before it, row for row.
    back = list_transactions(pg_db, lab, f, Cursor.decode(page.prev_cursor), limit=100)
    assert [r.id for r in back.rows] == expected[-200:-100]


def test_deep_page_over_http(pg_build, pg_db, seeded, live_server):
    lab, _other = seeded
    staff = pg_build.user(lab, "staff@acme.test")
    http = requests.Session()
    token = csrf_from(http.get(f"{live_server}/login").text)
    http.post(f"{live_server}/login", data={"csrf_token": token, "email": staff.email,
                                            "password": PASSWORD})
    cursor = row_at(pg_db, lab, 10_000)
    html = http.get(f"{live_server}/transactions", params={"cursor": cursor.encode()}).text
    shown = [int(i) for i in re.findall(r'<a href="/transactions/(\d+)">', html)]
    expected = [row_id for (row_id,) in pg_db.execute(text(
        "SELECT id FROM payments WHERE lab_id = :lab ORDER BY created_at DESC, id DESC "
        "OFFSET 10000 LIMIT 25"), {"lab": lab.id})]
    pg_db.rollback()
    assert shown == expected and len(shown) == 25


def test_kept_totals_equal_reading_every_payment(pg_db, seeded, monkeypatch):
    """The triggers followed the bulk INSERT ... SELECT of the seed too."""
    from portal.services import transactions

    lab, other = seeded
    for which in (lab, other):
        for f in (TransactionFilter(), TransactionFilter(status=PaymentStatus.FAILED),
                  TransactionFilter(gateway="stripe"), TransactionFilter(currency="USD")):
            kept = transactions.currency_totals(pg_db, which, f)
            with monkeypatch.context() as m:
                m.setattr(transactions, "_kept_totals", lambda *_: None)
                assert transactions.currency_totals(pg_db, which, f) == kept
        assert sum(t.count for t in transactions.currency_totals(
            pg_db, which, TransactionFilter())) > 0
