"""Compressed responses, content-hashed static files and their caching, the access-log switch."""

from __future__ import annotations

import gzip
import logging
import re

import brotli
from flask import url_for

from tests.conftest import make_app


def test_pages_are_compressed_with_brotli_or_gzip_as_the_client_accepts(client, build, lab):
    link = build.link(lab)
    plain = client.get(f"/pay/{link.token}", headers={"Accept-Encoding": ""})
    assert "Content-Encoding" not in plain.headers
    assert "Accept-Encoding" in plain.headers["Vary"]
    html = plain.get_data()
    br = client.get(f"/pay/{link.token}", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert br.headers["Content-Encoding"] == "br" and "Accept-Encoding" in br.headers["Vary"]
    assert brotli.decompress(br.get_data()) == html
    gz = client.get(f"/pay/{link.token}", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz.get_data()) == html
    assert int(gz.headers["Content-Length"]) == len(gz.get_data()) < len(html)


def test_tiny_and_already_compressed_bodies_are_left_alone(client, build, lab):
    link = build.link(lab)
    png = client.get(f"/pay/{link.token}/qr.png", headers={"Accept-Encoding": "br, gzip"})
    assert png.status_code == 200 and "Content-Encoding" not in png.headers
    tiny = client.get(f"/pay/{link.token}/status.json", headers={"Accept-Encoding": "br"})
    assert tiny.status_code == 200 and len(tiny.get_data()) < 512
    assert "Content-Encoding" not in tiny.headers


def test_static_urls_carry_the_content_hash_and_are_cached_for_a_year(app, client, build, lab):
    with app.test_request_context():
        css = url_for("static", filename="pay.css")
    assert re.fullmatch(r"/static/pay\.[0-9a-f]{12}\.css", css)
    link = build.link(lab)
    assert css in client.get(f"/pay/{link.token}").get_data(as_text=True)
    hashed = client.get(css, headers={"Accept-Encoding": ""})
    assert hashed.status_code == 200
    assert hashed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    plain = client.get("/static/pay.css", headers={"Accept-Encoding": ""})
    assert plain.status_code == 200 and plain.get_data() == hashed.get_data()
    assert plain.headers["Cache-Control"] == "public, max-age=300"
    packed = client.get(css, headers={"Accept-Encoding": "br"})
    assert packed.headers["Content-Encoding"] == "br"
    assert brotli.decompress(packed.get_data()) == hashed.get_data()
    assert packed.headers["ETag"] != hashed.headers["ETag"]
    stale = css.replace(css.split(".")[-2], "0" * 12)
    assert client.get(stale).status_code == 404


def test_the_app_access_line_can_be_switched_off(tmp_path, monkeypatch, migrated_sqlite, caplog):
    caplog.set_level(logging.INFO, logger="portal.access")
    monkeypatch.setenv("PORTAL_ACCESS_LOG", "off")
    quiet = make_app(tmp_path, monkeypatch, f"sqlite:///{migrated_sqlite}")
    quiet.test_client().get("/login")
    assert not [r for r in caplog.records if r.name == "portal.access"]
