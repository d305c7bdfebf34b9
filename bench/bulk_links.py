"""Benchmark: links in bulk, 1,000 and 10,000 rows, on SQLite and PostgreSQL.

Through the app's test client, signed in as staff, as the page does it: POST /links/bulk with
the CSV (read and check every row, keep them), POST .../create (links.create_links, one
transaction), GET .../result.csv. Also POST /payments/batch with 1,000 items.
Each wall time is also given as a count of bare Flask hello requests timed right after it
(the machine's speed at that moment), and with the CPU seconds of the app's process.
A measurement, not a test: nothing here asserts a speed.

    .venv/bin/python bench/bulk_links.py [--rows 1000 10000] [--backends sqlite postgresql]
        [--busy]

--busy: a lab with reminders 24 and 2 hours before expiry and a webhook endpoint wanting
link.created, every row sent by SMS (each link also makes a message, three jobs, an event).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import SERVER, run_on_server  # noqa: E402
from bench.pay_page import bare_flask_median  # noqa: E402

DATABASE = "portal_bench_bulk"
PASSWORD = "bench password 123"
HEADER = "name,phone,email,amount,currency,bill_reference,expiry,language,description,send\n"



def rows_csv(n: int, start: int, send: str = "") -> bytes:
    lines = [HEADER] + [f"Patient {i},+9198{i:08d},,\"1,250.50\",,B-{i},,,,{send}\n"
                        for i in range(start, start + n)]
    return "".join(lines).encode()


def make_app(url: str, folder: str):
    os.environ["PORTAL_DATABASE_URL"] = url
    os.environ["PORTAL_INSTANCE_PATH"] = folder
    os.environ.setdefault("PORTAL_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    os.environ.setdefault("PORTAL_ARGON2_PROFILE", "cheap-for-tests")
    import logging

    from portal import create_app
    from portal.extensions import make_engine
    from portal.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    app = create_app({"PORTAL_API_RATE_LIMIT": 100_000})
    logging.getLogger("portal.access").setLevel(logging.WARNING)
    return app


def seed(app, busy: bool = False):
    from sqlalchemy.orm import Session

    from portal.models import Lab, Role, User
    from portal.services.api_keys import create_api_key
    from portal.services.auth import hash_password
    from portal.services.keys import save_credentials

    with Session(app.extensions["portal_db"].engine) as session:
        lab = Lab(slug="bench", name="Bench Diagnostics", currency="INR",
                  reminder_hours_before=[24, 2] if busy else [])
        session.add(lab)
        session.flush()
        if busy:
            from portal.models import WebhookEndpoint
            from portal.services.keys import encrypt

            session.add(WebhookEndpoint(
                lab_id=lab.id, url="https://lis.example/hooks", description="", enabled=True,
                event_types=["link.created"], secret_encrypted=encrypt(
                    app.config["PORTAL_ENCRYPTION_KEYS"], {"secret": "bench"})))
        save_credentials(session, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "sandbox",
                         {"webhook_secret": "whsec_bench"})
        session.add(User(lab_id=lab.id, email="staff@bench.test", role=Role.STAFF,
                         password_hash=hash_password(PASSWORD)))
        key = create_api_key(session, lab.id, "bench", actor_id=None, ip=None).key
        session.commit()
    return key


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', page).group(1)


def timed(call):
    """The response, and the wall and CPU seconds of this process (SQLite runs in it; on a
    shared machine the CPU time is the steadier figure)."""
    began, cpu = time.perf_counter(), time.process_time()
    response = call()
    return response, (time.perf_counter() - began, time.process_time() - cpu)


def run(backend: str, url: str, folder: str, sizes: list[int], busy: bool = False) -> None:
    import io

    app = make_app(url, folder)
    key = seed(app, busy)
    label = f"{backend} busy" if busy else backend
    client = app.test_client()
    token = csrf(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"csrf_token": token, "email": "staff@bench.test",
                                       "password": PASSWORD}).status_code == 302
    start = 1
    for n in sizes:
        token = csrf(client.get("/links/bulk").get_data(as_text=True))
        data = rows_csv(n, start, "sms" if busy else "")
        start += n
        checked, check_s = timed(lambda d=data, t=token: client.post(
            "/links/bulk", data={"csrf_token": t, "file": (io.BytesIO(d), "b.csv")},
            content_type="multipart/form-data"))
        assert checked.status_code == 303, checked.status_code
        review = checked.headers["Location"]
        token = csrf(client.get(review).get_data(as_text=True))
        created, create_s = timed(lambda r=review, t=token: client.post(
            f"{r}/create", data={"csrf_token": t}))
        assert created.status_code == 303, created.get_data(as_text=True)[:500]
        result, result_s = timed(lambda r=review: client.get(f"{r}/result.csv"))
        assert result.get_data(as_text=True).count("\n") == n + 1
        bare = bare_flask_median(500)  # the machine's speed right after, shared as it is
        wall = check_s[0] + create_s[0] + result_s[0]
        cpu = check_s[1] + create_s[1] + result_s[1]
        print(f"{label:15} {n:>6,} rows: wall check {check_s[0]:6.2f} s, create "
              f"{create_s[0]:6.2f} s, result file {result_s[0]:5.2f} s; total {wall:6.2f} s "
              f"({wall / n * 1000:.2f} ms a row, {wall / bare:,.0f} bare hellos of "
              f"{bare * 1000:.3f} ms); CPU of the app process {cpu:6.2f} s "
              f"(create {create_s[1]:.2f} s, {cpu / n * 1000:.2f} ms a row)")
    items = [{"amount": 125050, "currency": "INR", "bill_reference": f"API-{i}",
              "customer": {"name": f"Patient {i}", "phone": f"+9197{i:08d}"}}
             for i in range(1000)]
    answer, batch_s = timed(lambda: client.post("/payments/batch", json={"items": items},
                                                headers={"Authorization": f"Bearer {key}"}))
    assert answer.status_code == 201, answer.get_data(as_text=True)[:500]
    bare = bare_flask_median(500)
    print(f"{label:15} POST /payments/batch 1,000 items: wall {batch_s[0]:.2f} s "
          f"({batch_s[0] / bare:,.0f} bare hellos), CPU {batch_s[1]:.2f} s")
    app.extensions["portal_db"].engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--busy", action="store_true")
    args = parser.parse_args()
    for backend in args.backends:
        folder = tempfile.mkdtemp(prefix="portal-bench-bulk-")
        if backend == "sqlite":
            run(backend, f"sqlite:///{folder}/bench.db", folder, args.rows, args.busy)
            continue
        run_on_server(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        run_on_server(f"CREATE DATABASE {DATABASE}")
        try:
            url = make_url(SERVER).set(database=DATABASE).render_as_string(hide_password=False)
            run(backend, url, folder, args.rows, args.busy)
        finally:
            run_on_server(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
