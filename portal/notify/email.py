"""Email over SMTP, configured by one URL (`PORTAL_SMTP_URL`).

- `smtp://host:25`: plain SMTP (a local relay);
- `smtp://user:pass@host:587?starttls=1`: STARTTLS, refused if the server does not offer it;
- `smtps://user:pass@host:465`: TLS from the first byte.
User and password are percent-encoded (`%40` for `@`); `?timeout=SECONDS` (default 20).
Certificates are verified against the system's CAs (`SSL_CERT_FILE` is honoured).
"""

from __future__ import annotations

import functools
import os
import secrets
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from email import errors
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from urllib.parse import parse_qs, unquote, urlsplit

from ..models import utcnow
from . import DeliveryError, PermanentError

TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # "plain" | "starttls" | "tls"
    username: str | None = None
    password: str | None = None
    timeout: float = 20.0

    def __repr__(self) -> str:  # never the password
        return (f"SmtpSettings({self.security}://{self.host}:{self.port}, "
                f"user={self.username!r})")


def parse_smtp_url(url: str) -> SmtpSettings:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise PermanentError("PORTAL_SMTP_URL must start with smtp:// or smtps://")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "timeout"}
    if unknown:
        raise PermanentError(f"PORTAL_SMTP_URL has unknown options: {', '.join(sorted(unknown))}")
    starttls = query.get("starttls", "0").lower() in TRUE
    if parts.scheme == "smtps" and starttls:
        raise PermanentError("smtps:// is TLS already: drop ?starttls")
    if not parts.hostname:
        raise PermanentError("PORTAL_SMTP_URL has no host")
    security = "tls" if parts.scheme == "smtps" else "starttls" if starttls else "plain"
    try:
        port = parts.port or {"tls": 465, "starttls": 587, "plain": 25}[security]
        timeout = float(query.get("timeout", "20"))
    except ValueError:
        raise PermanentError("PORTAL_SMTP_URL has a bad port or timeout") from None
    return SmtpSettings(host=parts.hostname, port=port, security=security,
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password else None,
                        timeout=timeout)


# Bodies in quoted-printable, as the email package's default policy writes UTF-8 text.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


@functools.lru_cache(maxsize=8)
def _sender(mail_from: str) -> Address:
    try:
        return Address(addr_spec=mail_from)
    except (ValueError, IndexError, errors.MessageError) as exc:
        raise PermanentError(f"PORTAL_MAIL_FROM is not an email address: {exc}") from None


def build_email(*, mail_from: str, sender_name: str, to: str, to_name: str, subject: str,
                text: str, html: str, message_id: str) -> Message:
    """multipart/alternative: plain text first, then HTML (clients show the last they can).

    Built with the email package's classic MIME classes: its default policy parses and
    refolds every header it is given, which cost more CPU than the rest of sending an email.
    Addresses beyond ASCII still take that policy, as before (smtplib sends them as SMTPUTF8).
    """
    address = _sender(mail_from)
    if any(c in to for c in "\r\n"):
        raise PermanentError("the recipient address spans lines")
    if not (address.addr_spec.isascii() and to.isascii()):
        return _build_international(address, sender_name=sender_name, to=to, to_name=to_name,
                                    subject=subject, text=text, html=html,
                                    message_id=message_id)
    # Our own boundary: the email package's compiles a regex per message to prove its random
    # one absent from the text; "==" can never occur in quoted-printable parts.
    message = MIMEMultipart("alternative", boundary=f"=={secrets.token_hex(12)}==")
    message["From"] = formataddr((_one_line(sender_name), address.addr_spec), charset="utf-8")
    message["To"] = formataddr((_one_line(to_name), to), charset="utf-8") if to_name else to
    subject = _one_line(subject)
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
    _stamp(message, address, message_id)
    message.attach(MIMEText(_lines(text), "plain", _UTF8_QP))
    message.attach(MIMEText(_lines(html), "html", _UTF8_QP))
    return message


def _stamp(message: Message, address: Address, message_id: str) -> None:
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = f"<{message_id}@{address.domain or 'localhost'}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies


def _one_line(value: str) -> str:
    """A header value on one line: a CR or LF in a name must not start a header of its own."""
    return " ".join(value.splitlines()) if "\r" in value or "\n" in value else value


def _lines(body: str) -> str:
    """Ends with a newline, as the email package's default policy writes a text part."""
    return body if body.endswith("\n") else body + "\n"


def _build_international(address: Address, *, sender_name: str, to: str, to_name: str,
                         subject: str, text: str, html: str, message_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((_one_line(sender_name), address.addr_spec))
    message["To"] = formataddr((_one_line(to_name), to)) if to_name else to
    message["Subject"] = _one_line(subject)
    _stamp(message, address, message_id)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return ssl.create_default_context()  # loading the CAs takes ~30 ms: once per process


def tls_context() -> ssl.SSLContext:
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


# One open SMTP connection per worker thread and server, reused across jobs: the TCP, EHLO,
# STARTTLS and AUTH exchange cost more than sending a notification itself.
REUSE_IDLE_SECONDS = 30.0
REUSE_MAX_MESSAGES = 100
_open = threading.local()


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    url: str
    last_used: float
    sent: int = 0


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    context = tls_context() if settings.security != "plain" else None
    if settings.security == "tls":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port,
                                              timeout=settings.timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        smtp.ehlo()
        if settings.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise DeliveryError("the SMTP server does not offer STARTTLS")
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.username:
            smtp.login(settings.username, settings.password or "")
    except BaseException:
        _quietly_close(smtp)
        raise
    return smtp


def _quietly_close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def close_connections() -> None:
    """Ends this thread's open SMTP connection (a worker stopping)."""
    held: _Connection | None = getattr(_open, "connection", None)
    _open.connection = None
    if held is not None:
        _quietly_close(held.smtp)


def _reusable(smtp_url: str) -> _Connection | None:
    held: _Connection | None = getattr(_open, "connection", None)
    if held is None:
        return None
    if (held.url != smtp_url or held.sent >= REUSE_MAX_MESSAGES
            or time.monotonic() - held.last_used > REUSE_IDLE_SECONDS):
        close_connections()
        return None
    return held


def send_email(smtp_url: str, message: Message) -> None:
    settings = parse_smtp_url(smtp_url)
    try:
        held = _reusable(smtp_url)
        if held is not None:
            try:
                held.smtp.send_message(message)
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                close_connections()  # the server ended it while idle: once more, afresh
                held = None
        if held is None:
            _open.connection = held = _Connection(_connect(settings), smtp_url,
                                                  time.monotonic())
            held.smtp.send_message(message)
        held.sent += 1
        held.last_used = time.monotonic()
    except smtplib.SMTPRecipientsRefused as exc:
        codes = ", ".join(f"{code} {_text(reply)}" for code, reply in exc.recipients.values())
        raise PermanentError(f"the SMTP server refused the recipient: {codes}") from None
    except smtplib.SMTPResponseException as exc:
        close_connections()
        error = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
        if exc.smtp_code >= 500 and isinstance(exc, smtplib.SMTPDataError):
            raise PermanentError(error) from None  # the message itself is refused
        raise DeliveryError(error) from None
    except (OSError, smtplib.SMTPException) as exc:
        close_connections()
        raise DeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from None
    except DeliveryError:
        close_connections()
        raise


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
