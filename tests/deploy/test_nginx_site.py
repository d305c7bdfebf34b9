"""deploy/nginx/portal.conf: valid for `nginx -t`, and behaving as docs/production.md says when
it runs in front of a local backend that echoes what it received."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
from werkzeug.wrappers import Response

from tests.deploy.nginx_site import (
    NGINX,
    ROOT,
    main_config,
    nginx_command,
    render_site,
)
from tests.fakes.certs import self_signed_certificate
from tests.fakes.server import FakeServer

HTTP_PORT, HTTPS_PORT = 18381, 18344  # this file's fixed ports (the range 18300-18399)

pytestmark = pytest.mark.skipif(NGINX is None and "CI" not in os.environ,
                                reason="nginx is not installed (make nginx installs it)")


class EchoBackend(FakeServer):
    """Stands for a `portal serve` node: answers with the headers it was sent."""

    def handle(self, request):
        body = json.dumps({"path": request.path, "headers": dict(request.headers)})
        return Response(body, content_type="application/json",
                        headers={"Strict-Transport-Security": "max-age=1"})


@pytest.fixture
def site(tmp_path) -> tuple[Path, Path]:
    cert, key = self_signed_certificate(tmp_path)
    backend_ports = ("127.0.0.1:1", "127.0.0.1:2")  # replaced by the running test
    path = render_site(tmp_path, nodes=backend_ports, https_port=HTTPS_PORT,
                       http_port=HTTP_PORT, cert=cert, key=key)
    return path, cert


def test_the_site_passes_nginx_t_with_its_placeholders_filled(tmp_path, site):
    config = main_config(tmp_path, site[0])
    result = subprocess.run(nginx_command(tmp_path, config, "-t"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_a_broken_site_fails_nginx_t(tmp_path, site):
    """The check above can fail: a typo in a directive is reported."""
    site[0].write_text(site[0].read_text().replace("proxy_read_timeout", "proxy_read_timeuot"))
    config = main_config(tmp_path, site[0])
    result = subprocess.run(nginx_command(tmp_path, config, "-t"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0 and "proxy_read_timeuot" in result.stderr


HASHED = "pay.0123456789abcdef.css"


@pytest.fixture
def running(tmp_path):
    """nginx with the site in front of an echoing backend; yields (https base, backend, log).

    The checkout's static/ plus a file with a content-hashed name, as a build would make."""
    app_root = tmp_path / "app"
    (app_root / "static").mkdir(parents=True)
    for css in (ROOT / "static").glob("*.css"):
        (app_root / "static" / css.name).write_bytes(css.read_bytes())
    (app_root / "static" / HASHED).write_bytes((ROOT / "static" / "pay.css").read_bytes())
    backend = EchoBackend().start()
    node = backend.url.removeprefix("http://")
    cert, key = self_signed_certificate(tmp_path)
    site = render_site(tmp_path, nodes=(node, node), https_port=HTTPS_PORT,
                       http_port=HTTP_PORT, cert=cert, key=key, app_root=app_root)
    config = main_config(tmp_path, site)
    process = subprocess.Popen(nginx_command(tmp_path, config, "-g", "daemon off;"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"http://127.0.0.1:{HTTP_PORT}/", timeout=1,
                             allow_redirects=False)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "nginx did not start in 10 s"
                time.sleep(0.1)
        yield f"https://127.0.0.1:{HTTPS_PORT}", cert, backend, tmp_path / "access.log"
    finally:
        process.terminate()
        process.wait(timeout=10)
        backend.stop()


def test_plain_http_is_redirected_to_https(running):
    response = requests.get(f"http://127.0.0.1:{HTTP_PORT}/pay/abc?lang=hi",
                            allow_redirects=False, timeout=5)
    assert response.status_code == 301
    assert response.headers["Location"] == "https://127.0.0.1/pay/abc?lang=hi"


def test_the_backend_gets_the_forwarded_headers_and_one_hsts_header_goes_out(running):
    base, cert, _backend, _log = running
    response = requests.get(f"{base}/links", verify=cert, timeout=5,
                            headers={"X-Forwarded-For": "198.51.100.9"})  # forged by a client
    sent = response.json()["headers"]
    assert sent["X-Forwarded-For"] == "198.51.100.9, 127.0.0.1"  # ProxyFix takes the last one
    assert sent["X-Forwarded-Proto"] == "https"
    assert sent["X-Forwarded-Host"] == "127.0.0.1"
    assert len(sent["X-Request-Id"]) == 32
    assert response.raw.headers.getlist("Strict-Transport-Security") == ["max-age=31536000"]


def test_static_files_come_from_the_checkout_with_caching(running):
    base, cert, backend, _log = running
    css = (ROOT / "static" / "pay.css").read_bytes()
    response = requests.get(base + "/static/pay.css", verify=cert, timeout=5)
    assert response.status_code == 200 and response.content == css
    assert response.headers["Cache-Control"] == "max-age=3600"  # its content may change
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    response = requests.get(f"{base}/static/{HASHED}", verify=cert, timeout=5)
    assert response.status_code == 200 and response.content == css
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    compressed = requests.get(base + "/static/pay.css", verify=cert, timeout=5,
                              headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["Content-Encoding"] == "gzip" and compressed.content == css
    assert backend.requests == []  # nginx served them all, not the portal
    # A name not on disk goes to the portal, whose answer decides the caching.
    missing = "/static/pay.fedcba9876543210.css"
    response = requests.get(base + missing, verify=cert, timeout=5)
    assert response.json()["path"] == missing
    assert "Cache-Control" not in response.headers


def test_the_access_log_keeps_no_link_token(running):
    base, cert, _backend, log = running
    token = "Zq3xY7" + "k" * 37
    requests.get(f"{base}/pay/{token}/receipt?lang=hi", verify=cert, timeout=5)
    deadline = time.monotonic() + 5  # nginx writes the line once the answer has gone out
    while '"GET /pay/Zq3xY7.../receipt"' not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert token not in log.read_text() and "lang=hi" not in log.read_text()
