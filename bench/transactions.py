"""Benchmark: server time of /transactions on PostgreSQL for a lab with 1,000,000 payments.

Makes the throw-away database `portal_bench_tx` on PORTAL_TEST_POSTGRES_URL's server (default:
the local one), migrates it with the portal's Alembic, seeds one lab with INSERT ... SELECT
generate_series (one link per payment, two payments per timestamp, 3% USD, a tenth failed),
then renders pages with the app's test client, signed in as staff: the first page, the page
10,000 rows deep (its cursor computed directly), and a few filtered pages. Prints the median of
several runs, and the plans of the page queries. A measurement, not a test: nothing here asserts
a speed. Not part of `make test`.

    .venv/bin/python bench/transactions.py [--payments 1000000] [--repeat 9] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

SERVER = os.environ.get("PORTAL_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DATABASE = "portal_bench_tx"
PASSWORD = "bench password 123"
END = "2026-11-26 12:00:00"  # the newest payment; two payments share each timestamp

CUSTOMERS = """
INSERT INTO customers (lab_id, name, phone, email, created_at, updated_at)
SELECT :lab,
       (ARRAY['Asha','Ravi','Priya','Arjun','Meera','Vikram','Sunita','Rahul','Anita','Karan'])
         [1 + i % 10] || ' ' ||
       (ARRAY['Rao','Kumar','Sharma','Iyer','Patel','Singh','Nair','Gupta','Das','Reddy',
              'Menon','Joshi'])[1 + (i / 10) % 12],
       '+9198' || lpad(i::text, 8, '0'), 'patient' || i || '@example.com', now(), now()
FROM generate_series(1, :n) AS i
"""

# One link per payment; the columns below are every NOT NULL one without a server default.
LINKS = """
INSERT INTO online_payments (id, lab_id, token, amount, currency, amount_paid, bill_reference,
    description, customer_id, gateway, status, expires_at, allow_partial, metadata,
    needs_attention, created_at, updated_at)
SELECT i, :lab, md5('a' || i) || md5('b' || i), 10000 + (i::bigint * 7919) % 500000,
       CASE WHEN i % 33 = 0 THEN 'USD' ELSE 'INR' END,
       CASE WHEN i % 100 < 80 OR i % 100 >= 95 THEN 10000 + (i::bigint * 7919) % 500000 ELSE 0 END,
       'BILL-' || i, '', :first_customer + i % :customers,
       CASE WHEN i % 50 = 0 THEN 'counter' WHEN i % 10 = 1 THEN 'stripe' ELSE 'razorpay' END,
       CASE WHEN i % 100 < 80 OR i % 100 >= 95 THEN 'paid' ELSE 'expired' END,
       c + interval '3 days', false, '{}', false, c, c
FROM (SELECT i, CAST(:end AS timestamp) - ((:n - i) / 2) * interval '37 seconds' AS c
      FROM generate_series(1, :n) AS i) AS s
"""

PAYMENTS = """
INSERT INTO payments (lab_id, online_payment_id, reference, amount, currency, gateway, status,
    gateway_transaction_id, method, amount_refunded, save_method_consent, created_at,
    updated_at)
SELECT :lab, i, 'pay_' || lpad(to_hex(i), 24, '0'), amount,
       CASE WHEN i % 33 = 0 THEN 'USD' ELSE 'INR' END,
       CASE WHEN i % 50 = 0 THEN 'counter' WHEN i % 10 = 1 THEN 'stripe' ELSE 'razorpay' END,
       status,
       CASE WHEN status <> 'pending' THEN 'txn_' || substr(md5(i::text), 1, 14) END,
       'card',
       CASE status WHEN 'partially_refunded' THEN amount / 2 WHEN 'refunded' THEN amount
                   ELSE 0 END,
       false, c, c
FROM (SELECT i, 10000 + (i::bigint * 7919) % 500000 AS amount,
             CAST(:end AS timestamp) - ((:n - i) / 2) * interval '37 seconds' AS c,
             CASE WHEN i % 100 < 80 THEN 'succeeded' WHEN i % 100 < 90 THEN 'failed'
                  WHEN i % 100 < 95 THEN 'pending' WHEN i % 100 < 98 THEN 'partially_refunded'
                  ELSE 'refunded' END AS status
      FROM generate_series(1, :n) AS i) AS s
"""


def run_on_server(statement: str) -> None:
    engine = create_engine(SERVER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def seed(url: str, count: int) -> int:
    """The lab and a staff user through the ORM; its history in three INSERT ... SELECTs."""
    from sqlalchemy.orm import Session

    from portal.models import Lab, Role, User
    from portal.services.auth import hash_password

    engine = create_engine(url)
    with Session(engine) as session:
        lab = Lab(slug="bench", name="Bench Diagnostics", currency="INR",
                  timezone="Asia/Kolkata", default_gateway="razorpay")
        session.add(lab)
        session.flush()
        session.add(User(lab_id=lab.id, email="staff@bench.test", role=Role.STAFF,
                         password_hash=hash_password(PASSWORD)))
        session.commit()
        lab_id = lab.id
    customers = max(count // 4, 1)
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(CUSTOMERS), {"lab": lab_id, "n": customers})
        first = conn.execute(text("SELECT min(id) FROM customers")).scalar()
        conn.execute(text(LINKS), {"lab": lab_id, "n": count, "end": END,
                                   "first_customer": first, "customers": customers})
        conn.execute(text("SELECT setval('online_payments_id_seq', :n)"), {"n": count})
        conn.execute(text(PAYMENTS), {"lab": lab_id, "n": count, "end": END})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    print(f"seeded {count:,} payments, {count:,} links, {customers:,} patients "
          f"in {time.perf_counter() - began:.0f} s (with every index in place)")
    engine.dispose()
    return lab_id


def sign_in(client) -> None:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"csrf_token": token, "email": "staff@bench.test",
                                           "password": PASSWORD})
    assert response.status_code == 302, "sign-in failed"


def median_ms(client, url: str, repeat: int, rows: int) -> float:
    client.get(url)  # warm: templates compiled, pages cached
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - began)
        assert response.status_code == 200, response.status_code
    found = len(re.findall(r'<a href="/transactions/\d+"><code>', response.get_data(as_text=True)))
    assert found == rows, f"{url}: {found} rows, expected {rows}"
    return statistics.median(samples) * 1000


def service_ms(app, lab_id: int, repeat: int, f, cursor) -> tuple[float, float | None]:
    """The page query, and on a first page the totals query, without HTTP or templates."""
    from portal.models import Lab
    from portal.services.transactions import currency_totals, list_transactions

    page, totals = [], []
    with app.app_context():
        session = app.extensions["portal_db"].session_factory()
        lab = session.get(Lab, lab_id)
        for _ in range(repeat + 1):
            began = time.perf_counter()
            list_transactions(session, lab, f, cursor)
            page.append(time.perf_counter() - began)
            if cursor is None:
                began = time.perf_counter()
                currency_totals(session, lab, f)
                totals.append(time.perf_counter() - began)
        session.close()
    return (statistics.median(page[1:]) * 1000,
            statistics.median(totals[1:]) * 1000 if totals else None)


def explain(app, lab_id: int, f, cursor) -> str:
    """EXPLAIN ANALYZE of the page query exactly as the service sends it."""
    from sqlalchemy import event

    from portal.models import Lab
    from portal.services.transactions import list_transactions

    engine = app.extensions["portal_db"].engine
    sent = []

    def grab(conn, cursor_, statement, parameters, context, executemany):
        if "LIMIT" in statement:
            sent.append((statement, parameters))

    with app.app_context():
        session = app.extensions["portal_db"].session_factory()
        lab = session.get(Lab, lab_id)
        event.listen(engine, "before_cursor_execute", grab)
        list_transactions(session, lab, f, cursor)
        event.remove(engine, "before_cursor_execute", grab)
        statement, parameters = sent[-1]
        rows = session.connection().exec_driver_sql(
            "EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
        plan = "\n".join(row[0] for row in rows)
        session.close()
    return plan


def cursor_at(conn, lab_id: int, depth: int, status: str | None = None):
    """The cursor after row `depth`, computed here once: the app never counts or offsets."""
    from datetime import UTC

    from portal.services.transactions import Cursor

    created_at, row_id = conn.execute(text(
        "SELECT created_at, id FROM payments WHERE lab_id = :lab "
        "AND (CAST(:status AS varchar) IS NULL OR status = :status) "
        "ORDER BY created_at DESC, id DESC OFFSET :skip LIMIT 1"),
        {"lab": lab_id, "skip": depth - 1, "status": status}).one()
    return Cursor(created_at.replace(tzinfo=UTC), row_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="use the kept, seeded database")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="portal-bench-")
    url = make_url(SERVER).set(database=DATABASE).render_as_string(hide_password=False)
    os.environ.update(PORTAL_INSTANCE_PATH=folder, PORTAL_SECRET_KEY="bench",
                      PORTAL_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
                      PORTAL_DATABASE_URL=url)
    import logging

    logging.disable(logging.WARNING)
    from portal import create_app
    from portal.migrate import upgrade
    from portal.models import PaymentStatus
    from portal.services.transactions import TransactionFilter

    if not args.reuse:
        run_on_server(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        run_on_server(f'CREATE DATABASE "{DATABASE}"')
    try:
        engine = create_engine(url)
        if not args.reuse:
            upgrade(engine)
            seed(url, args.payments)
        with engine.connect() as conn:
            lab_id = conn.execute(text("SELECT id FROM labs WHERE slug = 'bench'")).scalar()
            total = conn.execute(text("SELECT count(*) FROM payments")).scalar()
            deep = cursor_at(conn, lab_id, args.depth)
            deep_failed = cursor_at(conn, lab_id, args.depth, "failed")
        engine.dispose()
        app = create_app()
        client = app.test_client()
        sign_in(client)
        every, failed = TransactionFilter(), TransactionFilter(status=PaymentStatus.FAILED)
        cases = [
            ("first page", "/transactions", every, None, 25),
            (f"{args.depth:,} rows deep", f"/transactions?cursor={deep.encode()}",
             every, deep, 25),
            ("failed, first page", "/transactions?status=failed", failed, None, 25),
            (f"failed, {args.depth:,} rows deep",
             f"/transactions?status=failed&cursor={deep_failed.encode()}", failed,
             deep_failed, 25),
            ("USD, first page", "/transactions?currency=USD",
             TransactionFilter(currency="USD"), None, 25),
            ("search bill 'BILL-4242' (111 hits)", "/transactions?q=BILL-4242",
             TransactionFilter(query="BILL-4242"), None, 25),
            ("search mobile '98000 04242'", "/transactions?q=98000+04242",
             TransactionFilter(query="98000 04242"), None, 4),
            ("search name 'meera iy' (8k hits)", "/transactions?q=meera+iy",
             TransactionFilter(query="meera iy"), None, 25),
        ]
        print(f"PostgreSQL, one lab with {total:,} payments; median of {args.repeat} renders "
              "(test client, signed in as staff)")
        for label, path, f, cursor, rows in cases:
            ms = median_ms(client, path, args.repeat, rows)
            page_ms, totals_ms = service_ms(app, lab_id, args.repeat, f, cursor)
            parts = f"page query {page_ms:.1f} ms" + (
                f", totals {totals_ms:.1f} ms" if totals_ms is not None else ", no totals")
            print(f"  {label:34} {ms:8.1f} ms   ({parts})")
        for label, f, cursor in [("first page", every, None),
                                 (f"{args.depth:,} rows deep", every, deep),
                                 (f"failed, {args.depth:,} rows deep", failed, deep_failed)]:
            print(f"\nplan of the page query, {label}:")
            print(explain(app, lab_id, f, cursor))
        app.extensions["portal_db"].engine.dispose()
    finally:
        if not args.keep:
            run_on_server(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
