"""Behind nginx: the client's address and scheme come from X-Forwarded-* only when configured."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from portal.config import load_settings
from portal.models import LoginThrottle, StaffSession
from tests.conftest import make_app, sign_in

PROXY = {"REMOTE_ADDR": "127.0.0.1"}  # nginx on the same machine


@pytest.fixture(params=[0, 1], ids=["no-proxy", "one-proxy"])
def app(request, tmp_path, monkeypatch, migrated_sqlite):
    path = tmp_path / "portal.db"
    shutil.copy(migrated_sqlite, path)
    monkeypatch.setenv("PORTAL_TRUSTED_PROXIES", str(request.param))
    app = make_app(tmp_path, monkeypatch, f"sqlite:///{path}")
    yield app
    app.extensions["portal_db"].engine.dispose()


def recorded_ips(db) -> list[str | None]:
    return list(db.scalars(select(StaffSession.ip)))


def test_the_session_records_the_address_nginx_saw_only_when_a_proxy_is_trusted(app, db,
                                                                              staff):
    client = app.test_client()
    # The client forged a first X-Forwarded-For; nginx appended the address it really saw.
    forwarded = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "pay.example-lab.com"}
    response = sign_in(client, staff.email, headers=forwarded, environ_base=PROXY)
    assert response.status_code == 302, "the form's CSRF check refused the proxied sign-in"
    if app.config["PORTAL_TRUSTED_PROXIES"]:
        assert recorded_ips(db) == ["203.0.113.7"]
    else:
        assert recorded_ips(db) == ["127.0.0.1"]  # headers anyone can send are not believed


def test_the_scheme_and_host_come_from_the_proxy_when_trusted(app):
    seen = {}

    @app.get("/_probe")
    def probe():
        from flask import request
        seen.update(remote=request.remote_addr, secure=request.is_secure, host=request.host)
        return "ok"

    app.test_client().get("/_probe", environ_base=PROXY, headers={
        "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "pay.example-lab.com"})
    if app.config["PORTAL_TRUSTED_PROXIES"]:
        assert seen == {"remote": "203.0.113.7", "secure": True, "host": "pay.example-lab.com"}
    else:
        assert seen == {"remote": "127.0.0.1", "secure": False, "host": "localhost"}


def test_failed_sign_ins_are_counted_per_client_address_behind_the_proxy(app, db, staff):
    client = app.test_client()
    for address in ("203.0.113.7", "203.0.113.8"):
        sign_in(client, staff.email, "wrong password", environ_base=PROXY,
                headers={"X-Forwarded-For": address})
    keys = set(db.scalars(select(LoginThrottle.key)))
    ip_keys = {key for key in keys if key.startswith("ip:")}
    if app.config["PORTAL_TRUSTED_PROXIES"]:
        assert ip_keys == {"ip:203.0.113.7", "ip:203.0.113.8"}
    else:
        assert ip_keys == {"ip:127.0.0.1"}


@pytest.mark.parametrize("value", ["-1", "two", "6", "1.5"])
def test_a_wrong_proxy_count_stops_the_start(tmp_path, value):
    with pytest.raises(ValueError, match="PORTAL_TRUSTED_PROXIES"):
        load_settings(str(tmp_path), {"PORTAL_TRUSTED_PROXIES": value,
                                      "PORTAL_SECRET_KEY": "x", "PORTAL_ENCRYPTION_KEYS": "y"})
