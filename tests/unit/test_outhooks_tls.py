"""An https delivery connects to the checked address but speaks TLS to the URL's host name:
SNI and certificate checks use the name, so pinning the address weakens nothing."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portal.services.outhooks import Target, post


def self_signed(tmp_path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_receiver(tmp_path):
    """An https receiver on 127.0.0.1 for `lis.acme.test`, recording the SNI and Host it got."""
    cert, key = self_signed(tmp_path, "lis.acme.test")
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
