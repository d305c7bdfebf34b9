"""Benchmark: the portal under gunicorn, exactly as `portal serve` starts it, driven by wrk.

In the same run a bare Flask hello-world runs under gunicorn with the same worker settings
(read from `portal serve`'s own defaults), so every figure is printed with its ratio to the
framework's ceiling on this (shared) machine. On SQLite (a throw-away file) and PostgreSQL (a
throw-away database on PORTAL_TEST_POSTGRES_URL's server). A measurement, not a test.

    .venv/bin/python bench/http_bench.py [--db sqlite postgres] [--seconds 8] [--only pay ...]

Cases: `pay` (GET /pay/<token> over 200 links), `webhook` (signed sandbox events, each one
distinct, for distinct pending payments: verify, dedupe, apply, commit), `initiate`
(POST /payments/initiate with an API key; the bench raises the API rate limit), `floor` (the
same webhooks and initiates answered by bench/floor.py: only their SQL, the least any
implementation does, under the same gunicorn settings).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess  # nosec B404  # the servers and wrk under measurement
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench import throwaway_portal  # noqa: E402

BIN = Path(sys.executable).parent
LUA = Path(__file__).resolve().parent / "lua"
WEBHOOK_SECRET = "whsec_bench"  # nosec B105  # a throw-away bench lab's secret
CONNECTIONS, THREADS = 16, 2
PORT = 18100  # fixed ports: 18100 (portal), 18101 (bare hello), 18102 (floor)



def serve_defaults() -> dict[str, int]:
    """`portal serve`'s own worker settings, so the bare hello runs with the same ones."""
    from portal.cli import serve

    return {p.name: p.default() if callable(p.default) else p.default
            for p in serve.params if p.name in ("workers", "threads")}


def seed(env: dict[str, str], links: int, pending: int) -> dict:
    """A lab with the sandbox gateway, `links` open links, `pending` links each with a
    pending payment (for the webhooks), and an API key."""
    os.environ.update(env)
    import logging

    logging.disable(logging.WARNING)
    from portal import create_app
    from portal.migrate import upgrade
    from portal.models import Lab, LinkStatus, OnlinePayment, Payment, PaymentStatus, utcnow
    from portal.services.api_keys import create_api_key
    from portal.services.keys import save_credentials
    from portal.services.links import NewLink, create_link
    from portal.tokens import new_reference, new_token

    app = create_app()
    db = app.extensions["portal_db"]
    upgrade(db.engine)
    with app.app_context(), db.session_factory() as session:
        lab = Lab(slug="bench", name="Bench Diagnostics", currency="INR",
                  default_gateway="sandbox")
        session.add(lab)
        session.flush()
        save_credentials(session, app.config["PORTAL_ENCRYPTION_KEYS"], lab, "sandbox",
                         {"webhook_secret": WEBHOOK_SECRET})
        expires = utcnow() + timedelta(days=3)
        shown = [create_link(session, lab, NewLink(
            patient_name=f"Patient {i}", phone="+919876543210", email=None,
            amount=123450 + i, currency="INR", bill_reference=f"B-{i}",
            description="Blood panel", expires_at=expires), user_id=None)
            for i in range(links)]
        key = create_api_key(session, lab.id, "bench", actor_id=None, ip=None).key
        session.commit()
        tokens = [link.token for link in shown]
        payments = []
        for start in range(0, pending, 2000):
            batch = [OnlinePayment(lab_id=lab.id, token=new_token(), amount=5000 + i,
                                   currency="INR", bill_reference=f"W-{i}", gateway="sandbox",
                                   status=LinkStatus.CREATED, expires_at=expires)
                     for i in range(start, min(pending, start + 2000))]
            session.add_all(batch)
            rows = [Payment(lab_id=lab.id, online_payment=link, reference=new_reference(),
                            amount=link.amount, currency="INR", gateway="sandbox",
                            status=PaymentStatus.PENDING) for link in batch]
            session.add_all(rows)
            session.commit()
            payments += [(p.reference, p.amount) for p in rows]
    settle(db.engine)
    db.engine.dispose()
    return {"tokens": tokens, "payments": payments, "api_key": key}


def settle(engine) -> None:
    """The seed's own aftermath done before measuring: statistics, dead rows, its WAL and
    dirty pages written out. Otherwise autovacuum, the checkpointer and the kernel's writeback
    did it during the first case (the pay page), which then measured anything from 0.18 to
    0.36 of the hello."""
    # Straight through the driver: SQLAlchemy's begin (SQLite's BEGIN IMMEDIATE here) would
    # put these inside a transaction, where neither VACUUM nor a checkpoint may run.
    connection = engine.raw_connection()
    try:
        driver = connection.driver_connection
        if engine.dialect.name == "postgresql":
            driver.autocommit = True
            statements = ("VACUUM ANALYZE", "CHECKPOINT")
        else:  # the portal's SQLite connections are in the driver's autocommit already
            statements = ("ANALYZE", "PRAGMA wal_checkpoint(TRUNCATE)")
        cursor = driver.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()
    finally:
        connection.invalidate()  # not back into the pool in autocommit
    os.sync()  # and the kernel's writeback of it, which otherwise ran during the first case


def wait_for(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def start(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT,  # nosec B603
                               stdout=log.open("ab"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    wait_for(port, process)
    return process


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wrk(port: int, script: str, seconds: float, env: dict[str, str],
        again: bool = True) -> tuple[float, str]:
    """req/s, and the non-2xx/3xx and socket-error counts wrk saw.

    wrk keeps its connections for the whole run, and the kernel hands them to gunicorn's
    processes unevenly, now and then all of them to one process, which (one GIL, two threads)
    then uses one core of two and the run measures half the machine, the hello's as much as
    the portal's. A run in which one process holds more than half the connections is run
    again, twice at most, unless `again` is False (webhooks: a second run would resend applied
    events); the notes say when it stayed so. Behind nginx, which opens a connection per
    request, this does not happen.
    """
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency",
            "-s", str(LUA / script), f"http://127.0.0.1:{port}"]
    for _attempt in range(3):
        run = subprocess.Popen(argv, env={**os.environ, **env},  # nosec B603
                               stdout=subprocess.PIPE, text=True)
        busiest = busiest_process(port, after=seconds / 2) if seconds >= 2 else None
        out = run.communicate()[0]
        if run.returncode:
            raise SystemExit(f"wrk failed ({run.returncode})")
        lopsided = busiest is not None and busiest > CONNECTIONS // 2
        if not lopsided or not again:
            break
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    notes = [line.strip() for line in out.splitlines()
             if "Non-2xx" in line or "Socket errors" in line]
    if lopsided:
        notes.append(f"one process held {busiest} of {CONNECTIONS} connections")
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    return rate, (f"p50 {p50.group(1)}" if p50 else "") + ("; " + "; ".join(notes)
                                                           if notes else "")


def busiest_process(port: int, after: float) -> int | None:
    """The most established connections to `port` that one process holds, `after` seconds
    from now (None without iproute2's ss, or when it shows no owners)."""
    time.sleep(after)
    try:
        out = subprocess.run(  # nosec B603 B607
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
            capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    held: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        held[pid] = held.get(pid, 0) + 1
    return max(held.values(), default=None)


def start_bare(app: str, port: int, settings: dict[str, int], env: dict[str, str],
               log: Path) -> subprocess.Popen:
    """A bench app under gunicorn with `portal serve`'s worker settings."""
    return start([str(BIN / "gunicorn"), "-k", "gthread", "-w", str(settings["workers"]),
                  "--threads", str(settings["threads"]), "-b", f"127.0.0.1:{port}",
                  "--keep-alive", "5", "--worker-tmp-dir", "/dev/shm", app], env, port, log)


def start_hello(folder: Path, settings: dict[str, int]) -> subprocess.Popen:
    (folder / "hello.txt").write_text("/\n")
    return start_bare("bench.hello:app", PORT + 1, settings, {}, folder / "hello.log")


def start_floor(folder: Path, settings: dict[str, int], env: dict[str, str]) -> subprocess.Popen:
    return start_bare("bench.floor:app", PORT + 2, settings,
                      {**env, "BENCH_WEBHOOK_SECRET": WEBHOOK_SECRET}, folder / "floor.log")


def hello_rate(folder: Path, seconds: float) -> float:
    """The bare hello, measured right before each case: the machine is shared, so its load
    moves, and a ratio is only fair between two figures taken moments apart."""
    env = {"BENCH_PATHS": str(folder / "hello.txt")}
    wrk(PORT + 1, "paths.lua", 1, env)  # a fresh server's first second is slower: not counted
    return wrk(PORT + 1, "paths.lua", seconds, env)[0]


def webhook_lines(payments: list[tuple[str, int]], count: int) -> str:
    from gateways import sandbox

    now = int(time.time())
    lines = []
    for index, (reference, amount) in enumerate(payments[:count]):
        body = sandbox.build_event(f"evt_{secrets.token_hex(8)}_{index}", True, reference,
                                   amount, "INR").decode()
        header = sandbox.sign(WEBHOOK_SECRET, body.encode(), now)
        lines.append(f"/payments/webhook/sandbox\tSandbox-Signature: {header}\t{body}")
    return "\n".join(lines) + "\n"


def initiate_lines(key: str, count: int) -> str:
    lines = []
    for index in range(count):
        body = json.dumps({"amount": 250000 + index, "currency": "INR",
                           "bill_reference": f"API-{index}", "description": "Lipid profile",
                           "customer": {"name": f"Patient {index}", "phone": "+919876543210"}})
        lines.append(f"/payments/initiate\tAuthorization: Bearer {key}\t{body}")
    return "\n".join(lines) + "\n"


def run(database: str, cases: list[str], seconds: float, pending: int) -> None:
    with throwaway_portal(database) as (folder, base):
        env = {**base, "PORTAL_BASE_URL": f"http://127.0.0.1:{PORT}",
               "PORTAL_API_RATE_LIMIT": "100000000"}
        settings = serve_defaults()
        data = seed(env, 200, pending * (("webhook" in cases) + ("floor" in cases)))
        floor_payments = data["payments"][pending:] if "webhook" in cases else data["payments"]
        (folder / "pay.txt").write_text("".join(f"/pay/{t}\n" for t in data["tokens"]))
        portal = start([str(BIN / "portal"), "serve", "--host", "127.0.0.1", "--port",
                        str(PORT)], env, PORT, folder / "portal.log")
        hello = start_hello(folder, settings)
        floor = start_floor(folder, settings, env) if "floor" in cases else None
        results = []
        try:
            hello_rate(folder, 2)  # warm up
            for case in cases:
                results.append(("bare Flask hello, same settings, just before", hello_rate(
                    folder, seconds), ""))
                if case == "pay":
                    wrk(PORT, "paths.lua", 2, {"BENCH_PATHS": str(folder / "pay.txt")})
                    results.append(("GET /pay/<token> (200 links)", *wrk(
                        PORT, "paths.lua", seconds, {"BENCH_PATHS": str(folder / "pay.txt")})))
                elif case == "webhook":
                    (folder / "hooks.txt").write_text(webhook_lines(data["payments"], pending))
                    rate, notes = wrk(PORT, "posts.lua", seconds,
                                      {"BENCH_POSTS": str(folder / "hooks.txt")}, again=False)
                    sent = rate * seconds
                    results.append(("POST /payments/webhook/sandbox (distinct events)", rate,
                                    notes + ("" if sent <= pending else
                                             f"; list ran out: {sent - pending:.0f} repeats")))
                elif case == "initiate":
                    (folder / "api.txt").write_text(initiate_lines(data["api_key"], 50000))
                    results.append(("POST /payments/initiate (API key)", *wrk(
                        PORT, "posts.lua", seconds, {"BENCH_POSTS": str(folder / "api.txt")})))
                elif case == "floor":
                    (folder / "floor-hooks.txt").write_text(webhook_lines(floor_payments, pending))
                    results.append(("floor: the webhook's SQL alone (bench/floor.py)", *wrk(
                        PORT + 2, "posts.lua", seconds,
                        {"BENCH_POSTS": str(folder / "floor-hooks.txt")}, again=False)))
                    (folder / "floor-api.txt").write_text(initiate_lines(data["api_key"], 50000))
                    results.append(("bare Flask hello, same settings, just before",
                                    hello_rate(folder, seconds), ""))
                    results.append(("floor: the initiate's SQL alone", *wrk(
                        PORT + 2, "posts.lua", seconds,
                        {"BENCH_POSTS": str(folder / "floor-api.txt")})))
        finally:
            stop(portal)
            stop(hello)
            if floor is not None:
                stop(floor)
        print(f"\n{database}: portal serve (gunicorn gthread, {settings['workers']} workers x "
              f"{settings['threads']} threads), wrk -t{THREADS} -c{CONNECTIONS} -d{seconds:g}s, "
              f"{os.cpu_count()} CPUs shared with other users")
        for label, rate, notes in results:
            if label.startswith("bare"):
                hello_now = rate
                print(f"  {label:48} {rate:8.0f} req/s")
            else:
                print(f"  {label:48} {rate:8.0f} req/s  ratio {rate / hello_now:.3f}  ({notes})")
        log = (folder / "portal.log").read_text(errors="replace")
        errors = [line for line in log.splitlines() if " ERROR " in line]
        if errors:
            print(f"  server log has {len(errors)} ERROR lines, first: {errors[0][:200]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"],
                        choices=["sqlite", "postgres"])
    parser.add_argument("--only", nargs="+", default=["pay", "webhook", "initiate", "floor"],
                        choices=["pay", "webhook", "initiate", "floor"])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--pending", type=int, default=6000,
                        help="pending payments made for the webhook case (one event each)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    for database in args.db:
        run(database, args.only, args.seconds, args.pending)


if __name__ == "__main__":
    main()
