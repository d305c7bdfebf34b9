"""Two web nodes and two workers behind nginx, on one PostgreSQL and one Redis: patients pay,
the gateway posts its signed webhooks (duplicates to both nodes too), one web node is stopped
with SIGTERM halfway, and still every payment is recorded once and no link is paid twice.

The scenario runs once per module (`run`); each test checks one promise about what it left.
A summary of what nginx and the clients saw is printed and written to reports/topology.txt.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from gateways import sandbox as wire
from portal import create_app
from portal.models import (
    SETTLED_PAYMENT_STATES,
    ExchangeKind,
    Job,
    LinkStatus,
    OnlinePayment,
    OutboxStatus,
    Payment,
    PaymentGatewayTransaction,
    PaymentStatus,
    StaffSession,
)
from tests.conftest import csrf_from, pg_server_url, postgres_available
from tests.deploy.nginx_site import NGINX
from tests.topology.cluster import Cluster, NginxLog, make_cluster

LINKS = 40             # patients, one link each
PATIENTS_AT_ONCE = 6
RATE_LIMIT = 60        # PORTAL_API_RATE_LIMIT: requests per minute per API key
SUMMARY = Path(__file__).resolve().parents[2] / "reports" / "topology.txt"
REDIS_URL = "redis://127.0.0.1:6379/2"  # this test's database on the shared Redis
WEBHOOK_SECRET = "whsec_topology_" + secrets.token_hex(8)
STAFF_EMAIL, STAFF_PASSWORD = "desk@example.com", "topology desk password"


def _require(available: bool, reason: str) -> None:
    if not available:
        if "CI" in os.environ:  # a CI run that skipped this would prove nothing
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)


def redis_command(*words: str) -> bytes:
    """One command to this test's Redis database, spoken in RESP (no client library needed)."""
    def encode(*parts: str) -> bytes:
        return f"*{len(parts)}\r\n".encode() + b"".join(
            f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)

    with socket.create_connection(("127.0.0.1", 6379), timeout=3) as conn:
        conn.sendall(encode("SELECT", REDIS_URL.rsplit("/", 1)[1]) + encode(*words))
        answer = b""
        while answer.count(b"\r\n") < 2:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n")[1]


def _redis_answers() -> bool:
    try:
        return redis_command("PING") == b"+PONG"
    except OSError:
        return False


@dataclass
class Seen:
    """What the clients saw: answers by kind, and every error a person or gateway would see."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    refused_by_stopped_node: int = 0
    answers: Counter = field(default_factory=Counter)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


class Client:
    """A patient's browser, or the gateway: retries what failed, as a person or a gateway does,
    and writes every failure down."""

    def __init__(self, seen: Seen, verify: str, who: str):
        self.seen, self.who = seen, who
        self.verify = verify  # per request: REQUESTS_CA_BUNDLE would beat a Session's
        self.http = requests.Session()

    def call(self, method: str, url: str, *, expect=(200,), tries: int = 4, **kwargs):
        last = ""
        for attempt in range(tries):
            try:
                response = self.http.request(method, url, timeout=30, allow_redirects=False,
                                             verify=self.verify, **kwargs)
            except requests.ConnectionError as exc:
                self.seen.error(f"{self.who}: {method} {_short(url)}: {type(exc).__name__}")
                last = str(exc)[:300]
            else:
                with self.seen.lock:
                    self.seen.answers[response.status_code] += 1
                if response.status_code in expect:
                    return response
                self.seen.error(f"{self.who}: {method} {_short(url)}: "
                                f"HTTP {response.status_code}")
                last = response.text[:300]
            with self.seen.lock:
                self.seen.retries += attempt + 1 < tries
            time.sleep(0.3 * (attempt + 1))
        raise AssertionError(f"{self.who}: {method} {_short(url)} failed {tries} times: {last}")


def _short(url: str) -> str:
    return re.sub(r"/pay/([^/?]{6})[^/?]*", r"/pay/\1...", url.split("?")[0])


def _csrf(response) -> str:
    return html.unescape(csrf_from(response.text))


@dataclass
class Run:
    cluster: Cluster
    database_url: str
    links: list[dict]
    seen: Seen
    rate_limited: dict
    stopped_node: str
    stopped_in: float
    paid_during_stop: int
    log: NginxLog | None = None
    summary: str = ""
    duplicate_event_ids: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


def patient_pays(cluster: Cluster, seen: Seen, link: dict, n: int, on_paid) -> None:
    """Opens the link, presses Pay (twice for some), pays on the sandbox's hosted page; some
    decline first, see the failure and pay again."""
    patient = Client(seen, str(cluster.cert), f"patient {n}")
    url = link["url"]
    outcomes = ["decline", "pay"] if n % 5 == 0 else ["pay"]
    for outcome in outcomes:
        page = patient.call("GET", url)
        token = _csrf(page)
        presses = 2 if n % 5 == 1 else 1  # a double click sends the form twice
        with ThreadPoolExecutor(presses) as pool:
            started = list(pool.map(lambda form: patient.call(
                "POST", url, data=form, expect=(303,)), [{"csrf_token": token}] * presses))
        checkouts = {r.headers["Location"] for r in started}
        assert len(checkouts) == 1, f"a double press made two checkouts: {checkouts}"
        checkout_url = checkouts.pop()
        assert checkout_url.startswith(cluster.base + "/sandbox/checkout/")
        hosted = patient.call("GET", checkout_url)
        choice = patient.call("POST", checkout_url,
                              data={"csrf_token": _csrf(hosted), "outcome": outcome},
                              expect=(303,))
        if n % 5 == 1 and outcome == "pay":  # pressed twice on the hosted page too
            patient.call("POST", checkout_url,
                         data={"csrf_token": _csrf(hosted), "outcome": outcome},
                         expect=(303,))
        patient.call("GET", choice.headers["Location"])  # the return page
        reference = checkout_url.split("/sandbox/checkout/")[1].split("?")[0]
        if outcome == "decline":
            wait_for_status(patient, url, reference, "failed")
        else:
            on_paid(reference, link["amount"])


def wait_for_status(patient: Client, url: str, reference: str, status: str) -> None:
    """What the return page does: asks until the gateway's answer arrived."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        latest = patient.call("GET", url + "/status.json").json()["latest_payment"]
        if latest and latest["reference"] == reference and latest["status"] == status:
            return
        time.sleep(0.5)  # the page's own pace; status.json is rate-limited per link
    raise AssertionError(f"payment {reference} never became {status}")


def gateway_sends_duplicates(cluster: Cluster, seen: Seen, reference: str, amount: int,
                             event_ids: list[str]) -> None:
    """The gateway's own event for the payment, posted at the same moment to both nodes and
    through nginx (a redelivery storm); each copy signed separately."""
    event_id = f"evt_dup_{reference}"
    event_ids.append(event_id)
    body = wire.build_event(event_id, True, reference, amount, "INR")
    targets = [cluster.base] + [cluster.node_url(name) for name in sorted(cluster.nodes)]

    def post(target: str):
        headers = {"Content-Type": "application/json",
                   wire.SIGNATURE_HEADER: wire.sign(WEBHOOK_SECRET, body, int(time.time()))}
        url = target + "/payments/webhook/sandbox"
        if target != cluster.base:
            node = next(name for name in cluster.nodes if cluster.node_url(name) == target)
            if node in cluster.stopping:
                try:  # straight to a node being stopped: it may still answer, or refuse
                    requests.post(url, data=body, headers=headers, timeout=30)
                except requests.ConnectionError:
                    with seen.lock:
                        seen.refused_by_stopped_node += 1
                return
        gateway = Client(seen, str(cluster.cert), "gateway")
        answer = gateway.call("POST", url, data=body, headers=headers)
        assert answer.json()["received"] is True

    with ThreadPoolExecutor(len(targets)) as pool:
        list(pool.map(post, targets))


def check_rate_limit(cluster: Cluster, key: str, link_id: int) -> dict:
    """3x the per-minute limit with one key, alternating between the two nodes directly."""
    answers: dict[str, Counter] = defaultdict(Counter)
    nodes = itertools.cycle(sorted(cluster.nodes))
    started = time.monotonic()

    def one(node: str) -> None:
        response = requests.get(f"{cluster.node_url(node)}/payments/status/{link_id}",
                                headers={"Authorization": f"Bearer {key}"}, timeout=30)
        answers[node][response.status_code] += 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, [next(nodes) for _ in range(3 * RATE_LIMIT)]))
    return {"answers": {node: dict(counts) for node, counts in answers.items()},
            "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    _require(NGINX is not None, "nginx is not installed (make nginx installs it)")
    _require(postgres_available(), "no PostgreSQL server answers for the topology test")
    _require(_redis_answers(), f"no Redis answers at {REDIS_URL}")
    from tests.postgres.conftest import create_database, drop_database, render

    assert redis_command("FLUSHDB") == b"+OK"  # this database is the test's alone
    server = make_url(pg_server_url())
    database = create_database(server)
    folder = tmp_path_factory.mktemp("topology")
    from cryptography.fernet import Fernet

    cluster = make_cluster(folder, render(database), {
        "PORTAL_SECRET_KEY": secrets.token_urlsafe(32),
        "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PORTAL_REDIS_URL": REDIS_URL,
        "PORTAL_API_RATE_LIMIT": str(RATE_LIMIT),
    })
    try:
        yield scenario(cluster, render(database))
    finally:
        cluster.stop()
        drop_database(server, database.database)


def set_up_lab(env: dict[str, str]) -> tuple[str, str]:
    """What an operator types: `portal db upgrade`, `portal lab create`... run in this process
    (each `portal` process would spend seconds starting) with the cluster's settings."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if name.startswith("PORTAL_"):
                patch.setenv(name, value)
        app = create_app()
        try:
            billing, limited = (
                portal(app, "db", "upgrade"),
                portal(app, "lab", "create", "topo", "--name", "Topology Diagnostics",
                       "--currency", "INR"),
                portal(app, "gateway", "set", "topo", "sandbox",
                       stdin=json.dumps({"webhook_secret": WEBHOOK_SECRET})),
                portal(app, "api-key", "create", "topo", "billing").strip(),
                portal(app, "api-key", "create", "topo", "limited").strip(),
            )[3:]
            patch.setenv("PORTAL_USER_PASSWORD", STAFF_PASSWORD)
            portal(app, "user", "create", STAFF_EMAIL, "--lab", "topo", "--role", "staff")
        finally:
            app.extensions["portal_db"].engine.dispose()
    return billing, limited


def portal(app, *args: str, stdin: str | None = None) -> str:
    result = app.test_cli_runner().invoke(args=list(args), input=stdin)
    assert result.exit_code == 0, f"portal {' '.join(args)}: {result.output}"
    return result.stdout


def scenario(cluster: Cluster, database_url: str) -> Run:
    env = cluster.env
    began = time.monotonic()
    billing, limited = set_up_lab(env)
    cluster.start()
    started = time.monotonic()
    seen = Seen()

    # The lab's billing system makes the links, through nginx, with idempotency keys.
    billing_client = Client(seen, str(cluster.cert), "billing")
    links = []
    for n in range(LINKS):
        response = billing_client.call(
            "POST", cluster.base + "/payments/initiate", expect=(201,),
            headers={"Authorization": f"Bearer {billing}", "Idempotency-Key": f"bill-{n}"},
            json={"amount": 10_000 + 137 * n, "currency": "INR",
                  "bill_reference": f"TOPO-{n:03d}", "expires_in": 3600,
                  "customer": {"name": f"Patient {n}", "email": f"patient{n}@example.com"}})
        links.append(response.json())
    rate_limited = check_rate_limit(cluster, limited, links[0]["id"])

    # Patients pay; the gateway posts duplicates; web-1 is stopped when half have paid.
    paid: list[str] = []
    event_ids: list[str] = []
    duplicates = ThreadPoolExecutor(2)
    sent: list = []  # the gateway's futures: a failed assertion there fails the run
    stop_at = LINKS // 2
    stopped = threading.Event()
    stop_lock = threading.Lock()
    timing: dict[str, float] = {}

    def on_paid(reference: str, amount: int) -> None:
        with stop_lock:
            paid.append(reference)
            due = len(paid) == stop_at
        sent.append(duplicates.submit(gateway_sends_duplicates, cluster, seen, reference, amount,
                                      event_ids))
        if due:
            threading.Thread(target=stop_node, daemon=True).start()

    def stop_node() -> None:
        timing["paid_at_stop"] = len(paid)
        cluster.stopping.add("web-1")
        timing["stopped_in"] = cluster.nodes["web-1"].stop()  # SIGTERM: finish, then exit
        stopped.set()

    with ThreadPoolExecutor(PATIENTS_AT_ONCE) as pool:
        futures = [pool.submit(patient_pays, cluster, seen, link, n, on_paid)
                   for n, link in enumerate(links)]
        for future in futures:
            future.result()
    duplicates.shutdown(wait=True)
    for future in sent:
        future.result()
    assert stopped.wait(60), "web-1 did not stop within 60 s"
    wait_settled(database_url)
    timing["setup"], timing["load"] = started - began, time.monotonic() - started
    log = NginxLog.read(cluster.folder / "access.log")
    result = Run(cluster, database_url, links, seen, rate_limited, "web-1",
                 timing["stopped_in"], int(timing["paid_at_stop"]), log,
                 duplicate_event_ids=event_ids, timing=timing)
    result.summary = summarise(result)
    print(result.summary)
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(result.summary + "\n")  # .ci/run prints it
    return result


def wait_settled(database_url: str, timeout: float = 90) -> None:
    """Until the workers have delivered every webhook and every link is paid."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                busy = conn.scalar(select(func.count()).select_from(Job).where(
                    Job.kind == "sandbox.deliver_webhook",
                    Job.status.in_((OutboxStatus.QUEUED, OutboxStatus.RUNNING))))
                open_links = conn.scalar(select(func.count()).select_from(OnlinePayment).where(
                    OnlinePayment.status != LinkStatus.PAID))
            if not busy and not open_links:
                return
            assert time.monotonic() < deadline, \
                f"not settled after {timeout} s: {busy} webhooks queued, {open_links} links open"
            time.sleep(0.5)
    finally:
        engine.dispose()


def summarise(run: Run) -> str:
    log, seen = run.log, run.seen
    assert log is not None
    errors = Counter(re.sub(r"patient \d+", "patient", e) for e in seen.errors)
    lines = [
        "topology: nginx (TLS) -> web-1, web-2 (portal serve, 2 processes each); "
        "2 portal workers; PostgreSQL; Redis",
        f"  {len(run.links)} links paid by {PATIENTS_AT_ONCE} patients at a time; "
        f"web-1 got SIGTERM after {run.paid_during_stop} payments and exited in "
        f"{run.stopped_in:.1f} s",
        "  requests served (nginx log): "
        + ", ".join(f"{node} {count}" for node, count in sorted(log.served_by.items())),
        f"  nginx retried on the other node: {len(log.retried)}"
        + "".join(f"\n    {line}" for line in log.retried[:10]),
        "  answers through nginx by status: "
        + ", ".join(f"{status} x{n}" for status, n in sorted(log.statuses.items())),
        f"  errors seen by clients: {len(seen.errors)}"
        + "".join(f"\n    {what} x{n}" for what, n in errors.most_common(10)),
        f"  client retries: {seen.retries}; webhook copies posted straight to web-1 and "
        f"refused while it stopped: {seen.refused_by_stopped_node}",
        f"  set-up {run.timing['setup']:.0f} s (migrations, CLI, start), traffic and settling "
        f"{run.timing['load']:.0f} s",
        f"  rate limit {RATE_LIMIT}/min, {3 * RATE_LIMIT} requests with one key over both "
        f"nodes in {run.rate_limited['seconds']:.1f} s: {run.rate_limited['answers']}",
    ]
    return "\n".join(lines)


@pytest.fixture
def db(run):
    engine = create_engine(run.database_url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def test_every_link_was_paid_exactly_once(run, db):
    links = db.execute(select(OnlinePayment.id, OnlinePayment.status, OnlinePayment.amount,
                              OnlinePayment.amount_paid, OnlinePayment.needs_attention)).all()
    assert len(links) == LINKS
    assert {row.status for row in links} == {LinkStatus.PAID}
    settled = Counter(db.scalars(select(Payment.online_payment_id).where(
        Payment.status.in_(SETTLED_PAYMENT_STATES))))
    assert [link.id for link in links if settled[link.id] != 1] == []
    assert [link.id for link in links if link.amount_paid != link.amount] == []
    assert [link.id for link in links if link.needs_attention] == []  # never "paid twice"


def test_amount_paid_is_the_sum_of_each_links_payments(run, db):
    sums = dict(db.execute(select(Payment.online_payment_id, func.sum(Payment.amount))
                           .where(Payment.status.in_(SETTLED_PAYMENT_STATES))
                           .group_by(Payment.online_payment_id)).all())
    paid = dict(db.execute(select(OnlinePayment.id, OnlinePayment.amount_paid)).all())
    assert paid == sums


def test_each_declined_attempt_stays_failed_beside_the_payment_that_succeeded(run, db):
    statuses = Counter(db.scalars(select(Payment.status)))
    declined = len([n for n in range(LINKS) if n % 5 == 0])
    assert statuses == {PaymentStatus.SUCCEEDED: LINKS, PaymentStatus.FAILED: declined}


def test_every_webhook_event_is_recorded_once_however_often_it_came(run, db):
    rows = db.execute(select(PaymentGatewayTransaction.event_id,
                             PaymentGatewayTransaction.outcome).where(
        PaymentGatewayTransaction.kind == ExchangeKind.WEBHOOK_RECEIVED)).all()
    applied = Counter(event for event, _outcome in rows if event is not None)
    assert [event for event, times in applied.items() if times != 1] == []
    # the sandbox's own events (delivered by the workers) and the gateway's duplicates
    declined = len([n for n in range(LINKS) if n % 5 == 0])
    assert set(applied) >= set(run.duplicate_event_ids)
    assert len(applied) == LINKS + declined + len(run.duplicate_event_ids)
    # every later copy is in the inbox as a duplicate that changed nothing
    copies = [outcome for event, outcome in rows if event is None]
    assert copies and all(outcome.startswith("duplicate of evt_") for outcome in copies)
    dead = db.scalar(select(func.count()).select_from(Job).where(
        Job.status == OutboxStatus.DEAD))
    assert dead == 0


def test_the_stopped_node_finished_its_requests_and_nginx_moved_to_the_other(run):
    log = run.log
    assert run.stopped_in < 35, "web-1 did not stop within gunicorn's graceful timeout"
    assert log.served_by["web-1"] > 0 and log.served_by["web-2"] > log.served_by["web-1"]
    # Through nginx, nobody saw a failure; a stopped node only costs a retry on the other.
    assert run.seen.errors == [], run.summary
    assert [status for status in log.statuses if status.startswith("5")] == [], run.summary


def test_an_api_keys_rate_limit_holds_across_both_nodes(run):
    answers = run.rate_limited["answers"]
    allowed = sum(counts.get(200, 0) for counts in answers.values())
    refused = sum(counts.get(429, 0) for counts in answers.values())
    # In-process limits would allow RATE_LIMIT per gunicorn process: 4x as many here.
    refill = RATE_LIMIT * run.rate_limited["seconds"] / 60
    assert RATE_LIMIT <= allowed <= RATE_LIMIT + refill + 1, run.summary
    assert allowed + refused == 3 * RATE_LIMIT
    assert all(counts.get(429, 0) for counts in answers.values()), "a node never refused"


class FromAddress(HTTPAdapter):
    """Connects from another loopback address, so nginx sees a client that is not itself."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def test_a_staff_session_records_the_address_nginx_saw(run, db):
    """ProxyFix with one trusted proxy: the session keeps the client's address (127.0.0.2),
    neither nginx's (127.0.0.1) nor the X-Forwarded-For the client made up."""
    staff = requests.Session()
    staff.mount("https://", FromAddress("127.0.0.2"))
    forged = {"X-Forwarded-For": "198.51.100.99"}
    verify = str(run.cluster.cert)
    page = staff.get(run.cluster.base + "/login", headers=forged, timeout=10, verify=verify)
    answer = staff.post(run.cluster.base + "/login", headers=forged, timeout=10,
                        allow_redirects=False, verify=verify,
                        data={"csrf_token": _csrf(page), "email": STAFF_EMAIL,
                              "password": STAFF_PASSWORD})
    assert answer.status_code == 302, answer.text
    assert list(db.scalars(select(StaffSession.ip))) == ["127.0.0.2"]
