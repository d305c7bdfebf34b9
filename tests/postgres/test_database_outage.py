"""A database outage: the app reaches PostgreSQL through a TCP proxy the test cuts and restores,
so the shared cluster the other tests use keeps running."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest
from sqlalchemy.engine import make_url

from tests.api_helpers import make_api_key
from tests.conftest import Builder, FreshReadSession, make_app, sign_in
from tests.postgres.conftest import render, truncate_all
from tests.web.helpers import post_event, start_payment


class Proxy:
    """A TCP forwarder to PostgreSQL; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.up = True
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()  # as a database that is down: the connection ends at once
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        self.up = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self):
        self.up = True

    def close(self):
        self.cut()
        self.listener.close()


@pytest.fixture
def proxied(tmp_path, monkeypatch, pg_database):
    """The app on the module's database, reached only through a proxy the test controls."""
    truncate_all(pg_database)
    url = make_url(pg_database)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    app = make_app(tmp_path, monkeypatch, render(url.set(host="127.0.0.1", port=proxy.port)))
    session = FreshReadSession(app.extensions["portal_db"].engine, expire_on_commit=False)
    yield app, proxy, Builder(app, session), session
    session.close()
    proxy.close()
    app.extensions["portal_db"].engine.dispose()


def database_lines(caplog) -> list[str]:
    return [r.getMessage().split(":")[0] for r in caplog.records
            if r.name == "portal.database"]


def test_outage_answers_503_logs_once_each_way_and_recovers(proxied, caplog):
    app, proxy, build, session = proxied
    lab = build.lab("acme", name="Acme Diagnostics")
    link = build.link(lab)
    key = make_api_key(session, lab)
    staff = build.user(lab, "staff@acme.test")
    client = app.test_client()
    reference = start_payment(client, link)
    desk = app.test_client()
    assert sign_in(desk, staff.email).status_code == 302
    session.close()  # the test's own connection goes through the proxy too

    caplog.set_level(logging.INFO)
    proxy.cut()
    for _ in range(3):
        hook = post_event(client, reference, event_id="evt_outage")
        assert hook.status_code == 503 and hook.headers["Retry-After"] == "30"
        assert hook.json["error"]["code"] == "unavailable"
        page = client.get(f"/pay/{link.token}")
        assert page.status_code == 503 and page.headers["Retry-After"] == "60"
        assert "Please try again in a minute" in page.get_data(as_text=True)
        api = client.get(f"/payments/status/{link.id}", headers={"Authorization": f"Bearer {key}"})
        assert api.status_code == 503 and api.json["error"]["code"] == "unavailable"
        assert "Retry-After" in api.headers
        # A signed-in page: the user cannot be loaded, and the 503 page does not try to.
        links = desk.get("/links")
        assert links.status_code == 503
        assert "Please try again in a minute" in links.get_data(as_text=True)
    assert database_lines(caplog) == ["database unavailable"]
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    assert tracebacks == []  # the outage is one line, not a traceback per request

    proxy.restore()
    hook = post_event(client, reference, event_id="evt_outage")  # the gateway's retry
    assert hook.status_code == 200 and hook.json == {"received": True, "duplicate": False}
    assert client.get(f"/pay/{link.token}").status_code == 200
    api = client.get(f"/payments/status/{link.id}", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 200 and api.json["status"] == "paid"
    assert desk.get("/links").status_code == 200  # still signed in
    assert database_lines(caplog) == ["database unavailable", "database is back"]
    assert json.loads(hook.get_data())["received"] is True


def test_idle_connections_across_a_restart_are_replaced_without_a_failed_request(
        proxied, monkeypatch):
    from portal import extensions

    app, proxy, build, session = proxied
    link = build.link(build.lab("acme", name="Acme Diagnostics"))
    session.close()
    client = app.test_client()
    assert client.get(f"/pay/{link.token}").status_code == 200
    proxy.cut()  # the database restarts while the pool sits idle: its connections are dead
    proxy.restore()
    monkeypatch.setattr(extensions, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert client.get(f"/pay/{link.token}").status_code == 200
    monkeypatch.setattr(extensions, "PING_AFTER_IDLE_SECONDS", 3600.0)
    proxy.cut()
    proxy.restore()  # a connection used a moment ago is not pinged: the request meets the
    assert client.get(f"/pay/{link.token}").status_code == 503  # dead one, and the pool renews
    assert client.get(f"/pay/{link.token}").status_code == 200
