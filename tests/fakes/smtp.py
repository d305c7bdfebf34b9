"""A real SMTP server (aiosmtpd) on a free port of 127.0.0.1 that keeps what it receives."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None
    peer: object = None  # the client's (host, port): one per SMTP connection


class Recorder:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse: set[str] = set()  # recipients answered with 550

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if session.auth_data else None
        self.received.append(Received(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), login=login,
            peer=session.peer,
            message=email.message_from_bytes(envelope.original_content,
                                              policy=email.policy.default)))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; returns (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class SmtpServer:
    """`with SmtpServer() as smtp:`; `smtp.port`, `smtp.received`.

    `tls="starttls"` offers STARTTLS and requires it (and AUTH only after it);
    `tls="implicit"` speaks TLS from the first byte (smtps); `users` turns AUTH on.
    """

    def __init__(self, *, tls: str | None = None, cert: tuple[Path, Path] | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.recorder = Recorder()
        self.port = free_port()
        kwargs: dict = {}
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*map(str, cert))
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        if users:
            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = users.get(auth_data.login.decode()) == auth_data.password.decode()
                return AuthResult(success=ok, handled=False, auth_data=auth_data)
            # smtps is TLS already, but aiosmtpd does not know it: AUTH is offered, not required
            kwargs.update(authenticator=authenticate, auth_required=tls != "implicit",
                          auth_require_tls=tls is not None and tls != "implicit")
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port,
                                     ssl_context=context if tls == "implicit" else None,
                                     **kwargs)

    @property
    def received(self) -> list[Received]:
        return self.recorder.received

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
