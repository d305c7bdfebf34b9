"""An https delivery connects to the checked address but speaks TLS to the URL's host name:
SNI and certificate checks use the name, so pinning the address weakens nothing."""

from __future__ import annotations

import http.server
import ssl
import threading

import pytest

from portal.services.outhooks import Target, post
from tests.fakes.certs import self_signed_certificate


@pytest.fixture
def tls_receiver(tmp_path):
    """An https receiver on 127.0.0.1 for `lis.acme.test`, recording the SNI and Host it got."""
    cert, key = self_signed_certificate(tmp_path, names=["lis.acme.test"], address=None,
                                        files=("lis.acme.test.crt", "lis.acme.test.key"))
    seen: dict = {"sni": [], "host": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen["host"].append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert, seen
    server.shutdown()
    server.server_close()


def target(port: int, host: str = "lis.acme.test") -> Target:
    return Target("https", host, port, "/hook", f"{host}:{port}", ("127.0.0.1",))


def test_tls_to_the_pinned_address_with_the_urls_name(tls_receiver):
    port, cert, seen = tls_receiver
    answer = post(target(port), b"{}", {}, ca_file=cert)
    assert answer.status_code == 200 and answer.error is None
    assert seen["sni"] == ["lis.acme.test"] and seen["host"] == [f"lis.acme.test:{port}"]


def test_an_untrusted_or_mismatched_certificate_is_a_failed_attempt(tls_receiver, tmp_path):
    port, cert, seen = tls_receiver
    untrusted = post(target(port), b"{}", {})  # the system's CAs only
    assert untrusted.status_code is None and untrusted.error.startswith("TLS error")
    other = post(target(port, "other.acme.test"), b"{}", {}, ca_file=cert)
    assert other.status_code is None and other.error.startswith("TLS error")
    assert seen["host"] == []  # nothing was sent
