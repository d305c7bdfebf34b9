"""Benchmark: server time of /transactions for a lab with 1,000,000 payments, and the CSV
export of all of them (time, and the process's peak memory before and after streaming it).

`--db sqlite` seeds a SQLite file (/tmp/portal_bench_tx.db) with the same history row by row.

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

from bench import SERVER, run_on_server  # noqa: E402

DATABASE = "portal_bench_tx"
SQLITE_FILE = "/tmp/portal_bench_tx.db"
STAMP = "%Y-%m-%d %H:%M:%S.%f"
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



def bench_lab(engine) -> int:
    """The lab and its staff user, through the ORM; returns the lab's id."""
    from sqlalchemy.orm import Session

    from portal.models import Lab, Role, User
    from portal.services.auth import hash_password

    with Session(engine) as session:
        lab = Lab(slug="bench", name="Bench Diagnostics", currency="INR",
                  timezone="Asia/Kolkata", default_gateway="razorpay")
        session.add(lab)
        session.flush()
        session.add(User(lab_id=lab.id, email="staff@bench.test", role=Role.STAFF,
                         password_hash=hash_password(PASSWORD)))
        session.commit()
        return lab.id


def seed(url: str, count: int) -> int:
    """The lab and a staff user through the ORM; its history in three INSERT ... SELECTs."""
    from portal.totals_ddl import rebuild as rebuild_totals

    engine = create_engine(url)
    lab_id = bench_lab(engine)
    customers = max(count // 4, 1)
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text(CUSTOMERS), {"lab": lab_id, "n": customers})
        first = conn.execute(text("SELECT min(id) FROM customers")).scalar()
        conn.execute(text(LINKS), {"lab": lab_id, "n": count, "end": END,
                                   "first_customer": first, "customers": customers})
        conn.execute(text("SELECT setval('online_payments_id_seq', :n)"), {"n": count})
        # The kept totals in one aggregate afterwards: the row trigger's million upserts of
        # the same few rows, in one transaction, walk ever longer version chains (~30 min).
        conn.execute(text("ALTER TABLE payments DISABLE TRIGGER payments_totals_insert_delete"))
        conn.execute(text(PAYMENTS), {"lab": lab_id, "n": count, "end": END})
        conn.execute(text("ALTER TABLE payments ENABLE TRIGGER payments_totals_insert_delete"))
        conn.execute(text(rebuild_totals()))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    print(f"seeded {count:,} payments, {count:,} links, {customers:,} patients "
          f"in {time.perf_counter() - began:.0f} s (with every index in place)")
    engine.dispose()
    return lab_id


def seed_sqlite(url: str, count: int) -> int:
    """The same history as the PostgreSQL seed, written with executemany on SQLite."""
    import sqlite3
    from datetime import datetime, timedelta
    from hashlib import md5

    engine = create_engine(url)
    lab_id = bench_lab(engine)
    engine.dispose()
    began = time.perf_counter()
    first, last = ["Asha", "Ravi", "Priya", "Arjun", "Meera", "Vikram", "Sunita", "Rahul",
                   "Anita", "Karan"], ["Rao", "Kumar", "Sharma", "Iyer", "Patel", "Singh",
                                       "Nair", "Gupta", "Das", "Reddy", "Menon", "Joshi"]
    customers = max(count // 4, 1)
    end = datetime.fromisoformat(END)
    conn = sqlite3.connect(make_url(url).database)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executemany(
        "INSERT INTO customers (id, lab_id, name, phone, email, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((i, lab_id, f"{first[i % 10]} {last[(i // 10) % 12]}", f"+9198{i:08d}",
          f"patient{i}@example.com", end.strftime(STAMP), end.strftime(STAMP))
         for i in range(1, customers + 1)))
    statuses = ["succeeded"] * 80 + ["failed"] * 10 + ["pending"] * 5 + \
        ["partially_refunded"] * 3 + ["refunded"] * 2

    def rows(start: int, stop: int):
        for i in range(start, stop):
            amount = 10000 + (i * 7919) % 500000
            currency = "USD" if i % 33 == 0 else "INR"
            gateway = "counter" if i % 50 == 0 else "stripe" if i % 10 == 1 else "razorpay"
            moment = end - timedelta(seconds=37 * ((count - i) // 2))
            created = moment.strftime(STAMP)  # as SQLAlchemy stores a DateTime on SQLite
            expires = (moment + timedelta(days=3)).strftime(STAMP)
            paid = i % 100 < 80 or i % 100 >= 95
            status = statuses[i % 100]
            refunded = amount // 2 if status == "partially_refunded" else \
                amount if status == "refunded" else 0
            link = (i, lab_id, md5(f"a{i}".encode()).hexdigest() + md5(f"b{i}".encode())
                    .hexdigest(), amount, currency, amount if paid else 0, f"BILL-{i}", "",
                    1 + i % customers, gateway, "paid" if paid else "expired", expires, 0,
                    "{}", 0, created, created)
            payment = (lab_id, i, f"pay_{i:024x}", amount, currency, gateway, status,
                       None if status == "pending" else "txn_" + md5(str(i).encode())
                       .hexdigest()[:14], "card", refunded, 0, created, created)
            yield link, payment

    for start in range(1, count + 1, 50_000):
        batch = list(rows(start, min(count + 1, start + 50_000)))
        conn.executemany(
            "INSERT INTO online_payments (id, lab_id, token, amount, currency, amount_paid, "
            "bill_reference, description, customer_id, gateway, status, expires_at, "
            "allow_partial, metadata, needs_attention, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (b[0] for b in batch))
        conn.executemany(
            "INSERT INTO payments (lab_id, online_payment_id, reference, amount, currency, "
            "gateway, status, gateway_transaction_id, method, amount_refunded, "
            "save_method_consent, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (b[1] for b in batch))
        conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    print(f"seeded {count:,} payments, {count:,} links, {customers:,} patients "
          f"in {time.perf_counter() - began:.0f} s (with every index in place)")
    return lab_id


def export_figures(client) -> str:
    """Streams the whole CSV export; the process's peak RSS before and after."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    response = client.get("/transactions.csv", buffered=False)
    assert response.status_code == 200 and response.is_streamed
    size = lines = 0
    for chunk in response.response:
        size += len(chunk)
        lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
    response.close()
    elapsed = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (f"CSV export: {lines - 1:,} rows, {size / 1e6:,.0f} MB in {elapsed:.1f} s "
            f"({(lines - 1) / elapsed:,.0f} rows/s); peak RSS {before / 1024:.0f} MiB before, "
            f"{after / 1024:.0f} MiB after streaming it (+{(after - before) / 1024:.0f} MiB)")


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
        "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET :skip"),
        {"lab": lab_id, "skip": depth - 1, "status": status}).one()
    if isinstance(created_at, str):  # SQLite
        from datetime import datetime

        created_at = datetime.fromisoformat(created_at)
    return Cursor(created_at.replace(tzinfo=UTC), row_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="use the kept, seeded database")
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--no-plans", action="store_true")
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="portal-bench-")
    sqlite = args.db == "sqlite"
    url = f"sqlite:///{SQLITE_FILE}" if sqlite else \
        make_url(SERVER).set(database=DATABASE).render_as_string(hide_password=False)
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
        drop(sqlite)
        if not sqlite:
            run_on_server(f'CREATE DATABASE "{DATABASE}"')
    try:
        from portal.extensions import make_engine

        engine = make_engine(url)
        upgrade(engine)  # on a kept database: the newest migrations on the seeded history
        engine.dispose()
        engine = create_engine(url)
        if not args.reuse:
            (seed_sqlite if sqlite else seed)(url, args.payments)
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
        print(f"{'SQLite' if sqlite else 'PostgreSQL'}, one lab with {total:,} payments; "
              f"median of {args.repeat} renders (test client, signed in as staff; "
              f"{os.cpu_count()} CPUs shared with other users)")
        for label, path, f, cursor, rows in cases:
            ms = median_ms(client, path, args.repeat, rows)
            page_ms, totals_ms = service_ms(app, lab_id, args.repeat, f, cursor)
            parts = f"page query {page_ms:.1f} ms" + (
                f", totals {totals_ms:.1f} ms" if totals_ms is not None else ", no totals")
            print(f"  {label:34} {ms:8.1f} ms   ({parts})")
        if not args.no_export:
            print("  " + export_figures(client))
        for label, f, cursor in [] if args.no_plans or sqlite else [("first page", every, None),
                                 (f"{args.depth:,} rows deep", every, deep),
                                 (f"failed, {args.depth:,} rows deep", failed, deep_failed)]:
            print(f"\nplan of the page query, {label}:")
            print(explain(app, lab_id, f, cursor))
        app.extensions["portal_db"].engine.dispose()
    finally:
        if not args.keep:
            drop(sqlite)


def drop(sqlite: bool) -> None:
    if sqlite:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_FILE}{suffix}").unlink(missing_ok=True)
    else:
        run_on_server(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
