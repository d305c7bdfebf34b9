"""A real SMTP server (aiosmtpd) on a free port of 127.0.0.1 that keeps what it receives."""

from __future__ import annotations

import email
import email.policy
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
