"""Rate limits shared through Redis across apps, the in-process default, and a Redis outage."""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import time

import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from portal.models import LoginThrottle
from tests.api_helpers import make_api_key
from tests.conftest import Builder, FreshReadSession, csrf_from, make_app

SHARED_REDIS_URL = "redis://127.0.0.1:6379/1"  # this suite's database on the machine's Redis
DEAD_REDIS_URL = "redis://127.0.0.1:18201/1"  # nothing listens there


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """The machine's Redis (database 1), else a private redis-server for this module."""
    if _answers(SHARED_REDIS_URL):
        yield SHARED_REDIS_URL
        return
    server_binary = shutil.which("redis-server")
    if server_binary is None:
        pytest.fail("No Redis on 127.0.0.1:6379 and no redis-server to start one "
                    "(apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([server_binary, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/1"
    try:
        deadline = time.monotonic() + 10
        while not _answers(url):
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def redis_prefix(redis_url):
    prefix = f"ops-test-{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


class Nodes:
    """Two apps (two 'nodes') on one database file, each with its own limiter."""

    def __init__(self, tmp_path, monkeypatch, migrated_sqlite):
        self.tmp_path, self.monkeypatch = tmp_path, monkeypatch
        self.path = tmp_path / "portal.db"
        shutil.copy(migrated_sqlite, self.path)
        self.apps = []
        self.session = None

    def start(self, **overrides):
        self.apps = [make_app(self.tmp_path / name, self.monkeypatch,
                              f"sqlite:///{self.path}", **overrides)
                     for name in ("node-a", "node-b")]
        self.session = FreshReadSession(self.apps[0].extensions["portal_db"].engine,
                                        expire_on_commit=False)
        self.build = Builder(self.apps[0], self.session)
        return [app.test_client() for app in self.apps]

    def close(self):
        if self.session is not None:
            self.session.close()
        for app in self.apps:
            app.extensions["portal_db"].engine.dispose()


@pytest.fixture
def nodes(tmp_path, monkeypatch, migrated_sqlite):
    made = Nodes(tmp_path, monkeypatch, migrated_sqlite)
    yield made
    made.close()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def statuses(client, count: int, key: str) -> list[int]:
    return [client.get("/payments/status/999999", headers=auth(key)).status_code
            for _ in range(count)]


def fallbacks() -> float:
    return REGISTRY.get_sample_value("portal_ratelimit_fallbacks_total",
                                     {"backend": "redis"}) or 0.0


def test_an_api_keys_limit_holds_across_two_apps_on_one_redis(nodes, redis_url, redis_prefix):
    node_a, node_b = nodes.start(PORTAL_REDIS_URL=redis_url, PORTAL_REDIS_PREFIX=redis_prefix,
                                 PORTAL_API_RATE_LIMIT=4)
    lab = nodes.build.lab("acme")
    key = make_api_key(nodes.session, lab)
    assert statuses(node_a, 2, key) == [404, 404]
    assert statuses(node_b, 2, key) == [404, 404]
    refused = node_a.get("/payments/status/999999", headers=auth(key))
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert node_b.get("/payments/status/999999", headers=auth(key)).status_code == 429
    other = make_api_key(nodes.session, lab, "Billing")  # another key counts on its own
    assert statuses(node_b, 1, other) == [404]
    stored = redis.Redis.from_url(redis_url)
    assert list(stored.scan_iter(f"{redis_prefix}:ratelimit*")), "counts are kept in Redis"
    stored.close()


def test_without_redis_each_process_limits_on_its_own(nodes):
    node_a, node_b = nodes.start(PORTAL_API_RATE_LIMIT=3)
    key = make_api_key(nodes.session, nodes.build.lab("acme"))
    assert statuses(node_a, 4, key) == [404, 404, 404, 429]
    assert statuses(node_b, 4, key) == [404, 404, 404, 429]


def test_redis_down_falls_back_to_local_limits_with_one_warning(nodes, caplog):
    node_a, node_b = nodes.start(PORTAL_REDIS_URL=DEAD_REDIS_URL, PORTAL_API_RATE_LIMIT=3)
    key = make_api_key(nodes.session, nodes.build.lab("acme"))
    before = fallbacks()
    with caplog.at_level(logging.WARNING, logger="portal.ratelimits"):
        # Never a 500 and never unlimited: each process still holds its own count.
        assert statuses(node_a, 4, key) == [404, 404, 404, 429]
        assert statuses(node_b, 2, key) == [404, 404]
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 2  # one per process (app) for the whole outage, not per request
    assert fallbacks() == before + 2  # counted each time Redis was tried and failed


def test_redis_back_after_an_outage_is_used_again(nodes, redis_url, redis_prefix, monkeypatch):
    import portal.ratelimits as ratelimits

    (node_a,) = nodes.start(PORTAL_REDIS_URL=redis_url, PORTAL_REDIS_PREFIX=redis_prefix,
                            PORTAL_API_RATE_LIMIT=50)[:1]
    key = make_api_key(nodes.session, nodes.build.lab("acme"))
    assert statuses(node_a, 1, key) == [404]
    limits = nodes.apps[0].extensions["portal_limits"]
    shared_storage = limits.shared.storage
    real = shared_storage.acquire_sliding_window_entry

    def refused(*args, **kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(shared_storage, "acquire_sliding_window_entry", refused)
    assert statuses(node_a, 1, key) == [404]
    assert limits.shared is not None and limits._limiter() is limits.local
    monkeypatch.setattr(shared_storage, "acquire_sliding_window_entry", real)
    monkeypatch.setattr(ratelimits, "RETRY_REDIS_AFTER", 0.0)
    limits._down_until = 1.0  # the retry delay is over
    assert statuses(node_a, 1, key) == [404]
    assert limits._limiter() is limits.shared


def test_patient_status_polling_is_limited_per_link(nodes, redis_url, redis_prefix):
    node_a, node_b = nodes.start(PORTAL_REDIS_URL=redis_url, PORTAL_REDIS_PREFIX=redis_prefix,
                                 PORTAL_PATIENT_RATE_LIMIT=3)
    lab = nodes.build.lab("acme")
    link, other = nodes.build.link(lab), nodes.build.link(lab)
    answers = [client.get(f"/pay/{link.token}/status.json")
               for client in (node_a, node_b, node_a, node_b)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].json["error"]["code"] == "too_many_requests"
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert node_a.get(f"/pay/{other.token}/status.json").status_code == 200
    assert node_a.get(f"/pay/{link.token}").status_code == 200  # the page itself is not limited


def test_starting_checkout_too_often_gets_a_patient_page_in_their_language(nodes):
    (client,) = nodes.start(PORTAL_PATIENT_RATE_LIMIT=1)[:1]
    link = nodes.build.link(nodes.build.lab("acme"), language="es")
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    first = client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert first.status_code == 303
    second = client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    html = second.get_data(as_text=True)
    assert "Demasiados intentos" in html and 'lang="es"' in html


def test_sign_in_floods_are_refused_before_the_password_check(nodes, redis_url, redis_prefix):
    node_a, node_b = nodes.start(PORTAL_REDIS_URL=redis_url, PORTAL_REDIS_PREFIX=redis_prefix,
                                 PORTAL_LOGIN_RATE_LIMIT=2)

    def attempt(client):
        token = csrf_from(client.get("/login").get_data(as_text=True))
        return client.post("/login", data={"csrf_token": token, "email": "x@acme.test",
                                           "password": "wrong password"}).status_code

    assert [attempt(node_a), attempt(node_b), attempt(node_a)] == [401, 401, 429]
    token = csrf_from(node_b.get("/login").get_data(as_text=True))
    refused = node_b.post("/login", data={"csrf_token": token, "email": "x@acme.test",
                                          "password": "wrong password"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "Please wait a minute, then try again." in refused.get_data(as_text=True)
    # The refused attempt never reached the database's lockout count.
    failures = nodes.session.scalar(select(func.max(LoginThrottle.failures)))
    assert failures == 2


def test_the_in_process_limit_starts_no_thread_per_request(monkeypatch):
    """limits' MemoryStorage started an expiry thread on each hit 10 ms after the last."""
    import threading

    from portal.ratelimits import Limits

    limits = Limits(None, api=3, login=30, patient=60)
    assert limits.take("api", "key-1") == 0  # the counters are made on first need
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread))
    waits = []
    for _ in range(3):
        time.sleep(0.03)  # past the old storage's 10 ms timer: it would start another
        waits.append(limits.take("api", "key-1"))
    assert waits[:2] == [0, 0] and 1 <= waits[2] <= 60
    assert started == []


def test_the_in_process_window_slides(monkeypatch):
    """The previous minute's hits count for the part of it still inside the last 60 s."""
    import portal.ratelimits as ratelimits

    clock = [6000.0]  # the start of a minute window
    monkeypatch.setattr(ratelimits.time, "time", lambda: clock[0])
    limits = ratelimits.Limits(None, api=4, login=30, patient=60)
    assert [limits.take("api", "k") for _ in range(4)] == [0, 0, 0, 0]
    assert limits.take("api", "k") > 0
    assert limits.take("api", "other") == 0  # each key counts on its own
    clock[0] = 6090.0  # half through the next window: 4 x 0.5 = 2 still count
    assert [limits.take("api", "k") > 0 for _ in range(3)] == [False, False, True]
    clock[0] = 6200.0  # two windows on: nothing counts
    assert limits.take("api", "k") == 0
    limits.reset()
