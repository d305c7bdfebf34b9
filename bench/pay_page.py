"""Benchmark: server time and weight of the patient's pay page, and webhook handling.

Runs the app in-process on a throw-away SQLite file (or PORTAL_DATABASE_URL if set) and
prints percentiles, each with its ratio to a bare Flask hello-world timed the same way in the
same run. A measurement, not a test: nothing here asserts a speed.

    .venv/bin/python bench/pay_page.py [--requests 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1000  # noqa: E731
    return (f"median {statistics.median(samples) * 1000:.2f} ms, p95 {pick(0.95):.2f} ms, "
            f"p99 {pick(0.99):.2f} ms")


def bare_flask_median(requests: int) -> float:
    """The framework's ceiling on this machine: a hello-world through Flask's test client."""
    from flask import Flask

    bare = Flask("bare")
    bare.add_url_rule("/", "hello", lambda: "Hello")
    client = bare.test_client()
    client.get("/")
    timings = []
    for _ in range(requests):
        start = time.perf_counter()
        client.get("/")
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def ratio(bare: float, samples: list[float]) -> str:
    return f"ratio {bare / statistics.median(samples):.2f} of the bare Flask hello"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="portal-bench-")
    os.environ.setdefault("PORTAL_INSTANCE_PATH", folder)
    os.environ.setdefault("PORTAL_DATABASE_URL", f"sqlite:///{folder}/bench.db")

    import logging

    from gateways import sandbox
    from portal import create_app
    from portal.migrate import upgrade
    from portal.models import Lab, Payment, PaymentStatus, utcnow
    from portal.services.keys import save_credentials
    from portal.services.links import NewLink, create_link
    from portal.tokens import new_reference
    logging.disable(logging.INFO)
    app = create_app()
    db = app.extensions["portal_db"]
    upgrade(db.engine)
    with db.session_factory() as session:
        lab = Lab(slug="bench", name="Bench Diagnostics", currency="INR")
        session.add(lab)
        session.flush()
        save_credentials(session, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "sandbox",
                         {"webhook_secret": "whsec_bench"})
        links = [create_link(session, lab, NewLink(
            patient_name="P", phone="+919876543210", email=None, amount=123450 + i,
            currency="INR", bill_reference=f"B-{i}", description="",
            expires_at=utcnow() + timedelta(days=3)), user_id=None) for i in range(args.requests)]
        payments = [Payment(lab_id=lab.id, online_payment=link, reference=new_reference(),
                            amount=link.amount, currency="INR", gateway="sandbox",
                            status=PaymentStatus.PENDING) for link in links]
        session.add_all(payments)
        session.commit()
        tokens = [link.token for link in links]
        refs = [(p.reference, p.amount) for p in payments]

    client = app.test_client()
    client.get(f"/pay/{tokens[0]}")  # warm up templates
    timings, sizes = [], []
    for token in tokens:
        start = time.perf_counter()
        response = client.get(f"/pay/{token}")
        timings.append(time.perf_counter() - start)
        sizes.append(len(response.data))
    css = len(client.get("/static/pay.css").data)
    bare = bare_flask_median(len(tokens))
    print(f"bare Flask hello: median {bare * 1000:.3f} ms")
    print(f"GET /pay/<token> x{len(tokens)}: {percentiles(timings)}, {ratio(bare, timings)}")
    print(f"  page weight: HTML {statistics.median(sizes) / 1024:.1f} KiB + CSS {css / 1024:.1f} "
          f"KiB, no JavaScript, no third-party request")
    import gzip

    from portal.i18n import LANGUAGES
    for code in LANGUAGES:
        html = app.test_client().get(f"/pay/{tokens[0]}?lang={code}").data
        print(f"  {code:8} HTML {len(html):5} B ({len(gzip.compress(html)):4} B gzipped)"
              f" + CSS {css} B")

    timings = []
    for index, (reference, amount) in enumerate(refs):
        body = sandbox.build_event(f"evt_bench_{index}", True, reference, amount, "INR")
        header = sandbox.sign("whsec_bench", body, int(time.time()))
        start = time.perf_counter()
        response = client.post("/payments/webhook/sandbox", data=body,
                               headers={"Sandbox-Signature": header})
        timings.append(time.perf_counter() - start)
        assert response.status_code == 200, response.data
    print(f"POST /payments/webhook/sandbox (verify, record, apply) x{len(refs)}: "
          f"{percentiles(timings)}, {ratio(bare, timings)}")
    print(f"database: {db.engine.url.get_backend_name()}")


if __name__ == "__main__":
    main()
